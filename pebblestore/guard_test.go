package pebblestore

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/promotion-service/promo/promotion"
)

// commitHeld writes recs as a new version and expects the guard to hold
// it.
func commitHeld(tb testing.TB, s *Store, recs []promotion.Record) (uint64, error) {
	tb.Helper()
	b, err := s.Begin(context.Background(), "test", 1)
	if err != nil {
		tb.Fatal(err)
	}
	addAll(tb, b, recs, 1)
	_, _, err = b.Commit(context.Background())
	return b.Version(), err
}

// A version with fewer rows than MinRowsRatio times the serving one's is
// committed but not activated, is listed held, survives a restart as held,
// and serves only once activated on purpose, at the next epoch.
func TestGuardHoldsASmallVersion(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MinRowsRatio = 0.5
	cfg.KeepVersions = 3
	s := mustOpen(t, cfg)
	rng := rand.New(rand.NewPCG(31, 32))
	full := randomRecords(rng, 1000, 1)
	commit(t, s, full, 1) // the first version is never held
	if cur, _ := s.Current(); cur.Version != 1 || cur.Epoch != 1 {
		t.Fatalf("current %+v, want version 1 at epoch 1", cur)
	}
	v, err := commitHeld(t, s, randomRecords(rng, 300, 2))
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "300 rows") || !strings.Contains(err.Error(), "1000 rows") {
		t.Fatalf("commit of 30%%: %v, want ErrHeld naming 300 and 1000 rows", err)
	}
	checkAll(t, s, full, 1)
	vs := s.Versions()
	if len(vs) != 2 || vs[0].Version != v || vs[0].State != StateHeld || vs[0].HeldReason == "" || vs[0].Rows != 300 || vs[1].State != StateActive {
		t.Fatalf("versions %+v, want %d held above 1 active", vs, v)
	}
	// 50% or more passes.
	half := randomRecords(rng, 500, 3)
	commit(t, s, half, 1)
	checkAll(t, s, half, 3)
	if cur, _ := s.Current(); cur.Epoch != 2 {
		t.Fatalf("epoch %d after the second activation, want 2", cur.Epoch)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	var held VersionInfo
	for _, vi := range s.Versions() {
		if vi.Version == v {
			held = vi
		}
	}
	if held.State != StateHeld {
		t.Fatalf("after a restart, version %d is %q, want held", v, held.State)
	}
	vi, err := s.Activate(v)
	if err != nil {
		t.Fatal(err)
	}
	if vi.State != StateActive || vi.Epoch != 3 {
		t.Fatalf("activated %+v, want active at epoch 3", vi)
	}
	if _, ver, ok := get(t, s, half[0].ID); ok || ver != v {
		t.Fatalf("after activating the held version: found %v in version %d, want not found in %d", ok, ver, v)
	}
	if av := s.Acquire(); av.Epoch() != 3 || string(av.EpochText()) != "3" {
		t.Fatalf("view epoch %d %q, want 3", av.Epoch(), av.EpochText())
	} else {
		av.Release()
	}
}

func TestGuardOff(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MinRowsRatio = 0
	s := mustOpen(t, cfg)
	rng := rand.New(rand.NewPCG(33, 34))
	commit(t, s, randomRecords(rng, 1000, 1), 1)
	small := randomRecords(rng, 10, 2)
	commit(t, s, small, 1)
	checkAll(t, s, small, 2)
}

// The epoch counts activations, persists, and rises on a rollback, so that
// the rolled-back-to version is newer than the one rolled back from.
func TestEpochCountsActivations(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.KeepVersions = 3
	s := mustOpen(t, cfg)
	rng := rand.New(rand.NewPCG(35, 36))
	commit(t, s, randomRecords(rng, 100, 1), 1)
	commit(t, s, randomRecords(rng, 100, 2), 1)
	if _, err := s.Activate(1); err != nil {
		t.Fatal(err)
	}
	if e := s.Epoch(); e != 3 {
		t.Fatalf("epoch %d after two imports and a rollback, want 3", e)
	}
	// Activating what serves changes nothing.
	if _, err := s.ActivateEpoch(1, 3); err != nil || s.Epoch() != 3 {
		t.Fatalf("re-activation: %v, epoch %d", err, s.Epoch())
	}
	// A read node follows the cluster's epoch, the same version included.
	if _, err := s.ActivateEpoch(1, 7); err != nil {
		t.Fatal(err)
	}
	if cur, _ := s.Current(); cur.Version != 1 || cur.Epoch != 7 {
		t.Fatalf("current %+v, want version 1 at epoch 7", cur)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	if cur, _ := s.Current(); cur.Version != 1 || cur.Epoch != 7 || s.Epoch() != 7 {
		t.Fatalf("after a restart: current %+v, want version 1 at epoch 7", cur)
	}
}

// A version about to be activated (a rollback pulled again) is not dropped
// by retention, even when it is the oldest.
func TestRetentionKeepsPending(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.KeepVersions = 1
	s := mustOpen(t, cfg)
	rng := rand.New(rand.NewPCG(37, 38))
	s.SetPending(1)
	commit(t, s, randomRecords(rng, 100, 1), 1)
	commit(t, s, randomRecords(rng, 100, 2), 1)
	commit(t, s, randomRecords(rng, 100, 3), 1)
	waitVersions(t, s, 3, 1)
	s.SetPending()
	s.triggerRetain()
	waitVersions(t, s, 3)
}
