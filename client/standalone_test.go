package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/standalone/standalonetest"
)

// dataset returns n records whose prices encode tag (same ids for every
// tag) and the CSV of them.
func dataset(n int, tag int64) ([]promotion.Record, string) {
	rng := rand.New(rand.NewPCG(5, 5))
	recs := make([]promotion.Record, n)
	var b strings.Builder
	for i := range recs {
		r := &recs[i]
		for j := range r.ID {
			r.ID[j] = byte(rng.Uint32())
		}
		r.PriceMicros = tag*1_000_000 + int64(i%100)*10_000
		r.Expires = 1_600_000_000 + int64(i)
		b.Write(gen.AppendRow(nil, r, gen.FormatGo))
	}
	return recs, b.String()
}

// want is the Promotion of r as the client returns it.
func want(r *promotion.Record, v uint64) Promotion {
	cents := (r.PriceMicros + 5000) / 10000
	return Promotion{ID: r.ID.String(), Price: float64(cents) / 100, ExpirationDate: time.Unix(r.Expires, 0).UTC(), Version: v}
}

func unknownIDs(n int) []string {
	var ids []string
	for i := range n {
		ids = append(ids, promotion.ID{0xfe, byte(i), byte(i >> 8)}.String())
	}
	return ids
}

// Against a standalone server (404 on /cluster) every request goes to
// the seed.
func TestStandalone(t *testing.T) {
	_, base := standalonetest.Start(t)
	recs, csv := dataset(2500, 3)
	resp, err := http.Post(base+"/process-csv?wait=true", "text/csv", strings.NewReader(csv))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("import: %v %v", err, resp)
	}
	resp.Body.Close()
	c := mustNew(t, Config{Seeds: []string{base}})
	if s := c.Stats(); s.RingVersion != 0 || s.Nodes != 1 {
		t.Fatalf("stats %+v: want a standalone server", s)
	}
	ctx := context.Background()
	var ids []string
	for i := range recs {
		p, err := c.Get(ctx, recs[i].ID.String())
		if w := want(&recs[i], 1); err != nil || p != w {
			t.Fatalf("Get = %+v, %v; want %+v", p, err, w)
		}
		ids = append(ids, recs[i].ID.String())
	}
	for _, id := range unknownIDs(3) {
		if _, err := c.Get(ctx, id); err != ErrNotFound {
			t.Fatalf("unknown id: %v", err)
		}
	}
	// 2,500 ids and 3 unknown ones, in one BatchGet: 3 requests.
	unknown := unknownIDs(3)
	ids = append(ids[:1000], append([]string{unknown[0]}, append(ids[1000:2000], append([]string{unknown[1]}, append(ids[2000:], unknown[2])...)...)...)...)
	found, missing, err := c.BatchGet(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != len(recs) || fmt.Sprint(missing) != fmt.Sprint(unknown) {
		t.Fatalf("BatchGet: %d found, missing %v", len(found), missing)
	}
	for i := range recs {
		if w := want(&recs[i], 1); found[i] != w {
			t.Fatalf("BatchGet found[%d] = %+v, want %+v", i, found[i], w)
		}
	}
	if _, _, err := c.BatchGet(ctx, []string{ids[0], "nope"}); !errors.Is(err, ErrBadID) || !strings.Contains(err.Error(), `"nope" at index 1`) {
		t.Fatalf("BatchGet with a malformed id: %v", err)
	}
}
