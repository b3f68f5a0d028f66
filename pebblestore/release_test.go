package pebblestore

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// TestMemoryGoesBackWhenIdle: a finished batch's memory goes back to the
// operating system once no batch has begun for freeDelay, not while
// batches follow each other (a read node's pulls), nor after Close.
func TestMemoryGoesBackWhenIdle(t *testing.T) {
	var freed atomic.Int32
	defer func(d time.Duration, f func()) { freeDelay, freeOSMemory = d, f }(freeDelay, freeOSMemory)
	freeDelay = 500 * time.Millisecond
	freeOSMemory = func() { freed.Add(1) }

	s := mustOpen(t, testConfig(t.TempDir()))
	spare := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.spare)
	}
	rng := rand.New(rand.NewPCG(41, 42))
	// Batches closer together than freeDelay: none frees, and each takes
	// the row blocks the last one left.
	for i := range 3 {
		commit(t, s, randomRecords(rng, 200, int64(i)), 1)
		kept := spare()
		if kept == 0 {
			t.Fatal("a finished batch kept no row blocks for the next")
		}
		b, err := s.Begin(context.Background(), "next", 1)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(b.pool.free); spare() != 0 || n != kept {
			t.Fatalf("a new batch took %d of the %d blocks kept, and %d stay kept", n, kept, spare())
		}
		time.Sleep(2 * freeDelay) // a long batch: still not freed under it
		if n := freed.Load(); n != 0 {
			t.Fatalf("memory handed back %d times while a batch ran", n)
		}
		b.Abort()
	}
	// Idle: freed once.
	deadline := time.Now().Add(20 * freeDelay)
	for freed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(freeDelay / 10)
	}
	if n := freed.Load(); n != 1 || spare() != 0 {
		t.Fatalf("memory handed back %d times after the last batch, want 1; %d blocks still kept", n, spare())
	}
	// A batch finished just before Close: nothing fires after it.
	commit(t, s, randomRecords(rng, 200, 9), 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * freeDelay)
	if n := freed.Load(); n != 1 || spare() != 0 {
		t.Fatalf("memory handed back %d times in all, want 1: a timer outlived Close; %d blocks kept after Close", n, spare())
	}
}
