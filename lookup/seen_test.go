package lookup_test

import (
	"context"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
)

func TestStampOrder(t *testing.T) {
	f := func(a, b lookup.Stamp, less bool) {
		t.Helper()
		if got := a.Less(b); got != less {
			t.Fatalf("%v.Less(%v) = %v, want %v", a, b, got, less)
		}
	}
	f(lookup.Stamp{Epoch: 1, Version: 1}, lookup.Stamp{Epoch: 2, Version: 2}, true)
	// A rollback: a higher epoch's lower version is newer.
	f(lookup.Stamp{Epoch: 2, Version: 2}, lookup.Stamp{Epoch: 3, Version: 1}, true)
	f(lookup.Stamp{Epoch: 3, Version: 1}, lookup.Stamp{Epoch: 2, Version: 2}, false)
	// Within an epoch, versions never go back.
	f(lookup.Stamp{Epoch: 3, Version: 1}, lookup.Stamp{Epoch: 3, Version: 2}, true)
	f(lookup.Stamp{Epoch: 3, Version: 2}, lookup.Stamp{Epoch: 3, Version: 2}, false)
	if s := lookup.ParseStamp([]byte("12"), []byte("7")); s != (lookup.Stamp{Epoch: 7, Version: 12}) {
		t.Fatalf("ParseStamp = %v", s)
	}
	if s := lookup.ParseStamp([]byte("1x"), nil); !s.IsZero() {
		t.Fatalf("ParseStamp of a malformed version = %v, want zero", s)
	}
}

func TestSeenFollowsRollbacksAndRefusesRegressions(t *testing.T) {
	var s lookup.Seen
	if !s.Load().IsZero() || s.Behind(lookup.Stamp{}) {
		t.Fatal("a new Seen has seen something")
	}
	steps := []struct {
		stamp  lookup.Stamp
		behind bool
		raised bool
	}{
		{lookup.Stamp{Epoch: 1, Version: 1}, false, true},
		{lookup.Stamp{Epoch: 2, Version: 2}, false, true},
		{lookup.Stamp{Epoch: 1, Version: 1}, true, false}, // a replica not switched yet
		{lookup.Stamp{Epoch: 3, Version: 1}, false, true}, // the rollback
		{lookup.Stamp{Epoch: 2, Version: 2}, true, false}, // the version rolled back from
		{lookup.Stamp{Epoch: 3, Version: 1}, false, false},
	}
	for i, st := range steps {
		if got := s.Behind(st.stamp); got != st.behind {
			t.Fatalf("step %d: Behind(%v) = %v, want %v", i, st.stamp, got, st.behind)
		}
		if got := s.Raise(st.stamp); got != st.raised {
			t.Fatalf("step %d: Raise(%v) = %v, want %v", i, st.stamp, got, st.raised)
		}
	}
	if got := s.Load(); got != (lookup.Stamp{Epoch: 3, Version: 1}) {
		t.Fatalf("Load = %v", got)
	}
}

func TestSeenConcurrentRaiseKeepsTheNewest(t *testing.T) {
	var s lookup.Seen
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range uint64(1000) {
				s.Raise(lookup.Stamp{Epoch: e, Version: uint64(g)})
			}
		}()
	}
	wg.Wait()
	if got := s.Load(); got != (lookup.Stamp{Epoch: 999, Version: 7}) {
		t.Fatalf("Load = %v, want v7@e999", got)
	}
}

type stampGate struct{ min lookup.Stamp }

func (g stampGate) Holds(promotion.ID) bool                        { return true }
func (g stampGate) Misdirected(*fasthttp.RequestCtx, promotion.ID) {}
func (g stampGate) Min() lookup.Stamp                              { return g.min }

// After a rollback, answers carry the epoch of the rollback with the older
// version, and a node still on the version rolled back from is behind.
func TestLookupEpochAfterRollback(t *testing.T) {
	s, recs := mustStore(t, 10)
	path := "/promotions/" + recs[3].ID.String()
	b, err := s.Begin(context.Background(), "second", 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		if err := b.Add(0, &recs[i], int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := b.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	get := func(gate lookup.Gate) (int, string, string) {
		t.Helper()
		ctx := request(path)
		lookup.NewCluster(lookup.VersionsOf(s.Acquire), gate, nil).HandlePath(ctx)
		return ctx.Response.StatusCode(), string(ctx.Response.Header.Peek(lookup.VersionHeader)), string(ctx.Response.Header.Peek(lookup.EpochHeader))
	}
	if code, v, e := get(stampGate{lookup.Stamp{Epoch: 2, Version: 2}}); code != 200 || v != "2" || e != "2" {
		t.Fatalf("before the rollback: %d v%s e%s, want 200 v2 e2", code, v, e)
	}
	// The cluster rolled back to 1 at epoch 3; this node still serves 2.
	if code, v, e := get(stampGate{lookup.Stamp{Epoch: 3, Version: 1}}); code != 503 || v != "2" || e != "2" {
		t.Fatalf("behind a rollback: %d v%s e%s, want 503 naming v2 e2", code, v, e)
	}
	if _, err := s.Activate(1); err != nil {
		t.Fatal(err)
	}
	if code, v, e := get(stampGate{lookup.Stamp{Epoch: 3, Version: 1}}); code != 200 || v != "1" || e != "3" {
		t.Fatalf("after the rollback: %d v%s e%s, want 200 v1 e3", code, v, e)
	}
}

// Raise with a stamp that does not move allocates nothing: every answer
// of the client and the proxy raises the floor.
func TestSeenRaiseAllocatesOnlyWhenItMoves(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	var s lookup.Seen
	s.Raise(lookup.Stamp{Epoch: 2, Version: 5})
	same, older := lookup.Stamp{Epoch: 2, Version: 5}, lookup.Stamp{Epoch: 1, Version: 9}
	if n := testing.AllocsPerRun(100, func() {
		if s.Raise(same) || s.Raise(older) {
			t.Fatal("raised by a stamp not newer")
		}
	}); n != 0 {
		t.Fatalf("Raise of a stamp not newer: %v allocs", n)
	}
	if !s.Raise(lookup.Stamp{Epoch: 2, Version: 6}) || s.Load() != (lookup.Stamp{Epoch: 2, Version: 6}) {
		t.Fatalf("not raised to v6@e2: %v", s.Load())
	}
}
