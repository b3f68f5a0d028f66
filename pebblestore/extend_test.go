package pebblestore

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
)

// A read node that gains slots adds their rows to the versions it keeps:
// the active one (while it serves) and a prepared one. An aborted
// extension leaves the version as it was; the rows and the count survive
// a reopen.
func TestExtendAddsRowsToAVersion(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, testConfig(dir))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	first, more := randomRecords(rng, 20_000, 1), randomRecords(rng, 10_000, 1)
	commit(t, s, first, 2)
	if _, err := s.BeginExtend(ctx, 9, "x", 1); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("extend an unknown version: %v", err)
	}
	// An aborted extension changes nothing, and the store is free again.
	b, err := s.BeginExtend(ctx, 1, "more slots", 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.BeginExtend(ctx, 1, "again", 1); !errors.Is(err, ErrBusy) {
		t.Fatalf("second extension while one is open: %v", err)
	}
	addAll(t, b, more, 2)
	b.Abort()
	checkAll(t, s, first, 1)
	if _, _, ok := get(t, s, more[0].ID); ok {
		t.Fatal("a row of an aborted extension is visible")
	}
	// A committed one adds its rows to the serving version.
	b, err = s.BeginExtend(ctx, 1, "more slots", 2)
	if err != nil {
		t.Fatal(err)
	}
	addAll(t, b, more, 2)
	if rows, _, err := b.Prepare(ctx); err != nil || rows != int64(len(more)) {
		t.Fatalf("extend: %d rows, %v", rows, err)
	}
	checkAll(t, s, first, 1)
	checkAll(t, s, more, 1)
	if cur, _ := s.Current(); cur.Version != 1 || cur.Rows != int64(len(first)+len(more)) {
		t.Fatalf("current after the extension: %+v", cur)
	}
	// Extending a prepared version does not activate it.
	b, err = s.BeginVersion(ctx, 2, "next", 1)
	if err != nil {
		t.Fatal(err)
	}
	next := randomRecords(rng, 5_000, 2)
	addAll(t, b, next[:2_500], 1)
	if _, _, err := b.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	b, err = s.BeginExtend(ctx, 2, "more of next", 1)
	if err != nil {
		t.Fatal(err)
	}
	addAll(t, b, next[2_500:], 1)
	if _, _, err := b.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if cur, _ := s.Current(); cur.Version != 1 {
		t.Fatalf("extending version 2 activated it: current %d", cur.Version)
	}
	if _, err := s.Activate(2); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, next, 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, testConfig(dir))
	checkAll(t, s, next, 2)
	if cur, _ := s.Current(); cur.Rows != int64(len(next)) {
		t.Fatalf("rows after reopen: %d, want %d", cur.Rows, len(next))
	}
}
