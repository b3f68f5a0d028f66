package pebblestore

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/promotion-service/promo/promotion"
)

var getRows = flag.Int("getrows", 2_000_000, "rows in the version BenchmarkGet reads")

// BenchmarkGet compares a lookup of a random existing id through the
// fast read path and through Pebble's DB.Get (default block cache), and
// a sorted batch of 100 ids (GetSorted) both ways, on a version of
// -getrows rows.
func BenchmarkGet(b *testing.B) {
	cfg := DefaultConfig(b.TempDir())
	cfg.Logger = testConfig("").Logger
	s := mustOpen(b, cfg)
	recs := randomRecords(rand.New(rand.NewPCG(41, 42)), *getRows, 1)
	commit(b, s, recs, 2)
	fast := s.Acquire()
	defer fast.Release()
	if fast.fast == nil || fast.fast.runs.Load() == nil {
		b.Fatal("no fast read path")
	}
	slow := *fast
	slow.fast = nil
	ids := make([]promotion.ID, 1<<16)
	rng := rand.New(rand.NewPCG(43, 44))
	for i := range ids {
		ids[i] = recs[rng.IntN(len(recs))].ID
	}
	for _, bc := range []struct {
		name string
		v    *View
	}{{"fast", fast}, {"pebble", &slow}} {
		b.Run(bc.name, func(b *testing.B) {
			var r promotion.Record
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if ok, err := bc.v.Get(ids[i%len(ids)], &r); !ok || err != nil {
					b.Fatal(ok, err)
				}
				i++
			}
		})
		b.Run(bc.name+"/batch100", func(b *testing.B) {
			batches := make([][]promotion.ID, len(ids)/100)
			for k := range batches {
				batches[k] = slices.Clone(ids[k*100 : (k+1)*100])
				slices.SortFunc(batches[k], func(x, y promotion.ID) int { return bytes.Compare(x[:], y[:]) })
			}
			recs := make([]promotion.Record, 100)
			found := make([]bool, 100)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := bc.v.GetSorted(batches[i%len(batches)], recs, found); err != nil || !found[0] {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/id")
		})
	}
}
