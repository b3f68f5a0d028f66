package pebblestore

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/promotion-service/promo/promotion"
)

// GetSorted reads what Get reads, for ids in order with duplicates and
// unknown ones, from its own version only.
func TestGetSorted(t *testing.T) {
	s := mustOpen(t, testConfig(t.TempDir()))
	rng := rand.New(rand.NewPCG(4, 4))
	v1 := randomRecords(rng, 5000, 1)
	commit(t, s, v1, 2)
	v2 := append([]promotion.Record(nil), v1[:4000]...) // v2 lacks the last 1000 ids of v1
	for i := range v2 {
		v2[i].PriceMicros += 7_000_000
	}
	commit(t, s, v2, 2)
	v := s.Acquire()
	defer v.Release()
	var ids []promotion.ID
	for i := 0; i < len(v1); i += 7 {
		ids = append(ids, v1[i].ID, v1[i].ID) // every seventh, twice
	}
	ids = append(ids, promotion.ID{}, promotion.ID{0xff, 0xff}) // unknown
	slices.SortFunc(ids, func(a, b promotion.ID) int { return bytes.Compare(a[:], b[:]) })
	recs := make([]promotion.Record, len(ids))
	found := make([]bool, len(ids))
	if err := v.GetSorted(ids, recs, found); err != nil {
		t.Fatal(err)
	}
	n := 0
	for i, id := range ids {
		var want promotion.Record
		ok, err := v.Get(id, &want)
		if err != nil {
			t.Fatal(err)
		}
		if found[i] != ok || (ok && recs[i] != want) {
			t.Fatalf("ids[%d]: GetSorted %v %+v, Get %v %+v", i, found[i], recs[i], ok, want)
		}
		if ok {
			n++
		}
	}
	if n == 0 || n == len(ids) {
		t.Fatalf("%d of %d found: want some found and some not", n, len(ids))
	}
	if allocs := testing.AllocsPerRun(20, func() { v.GetSorted(ids, recs, found) }); allocs != 0 && !raceEnabled {
		t.Fatalf("%v allocations per GetSorted", allocs)
	}
}
