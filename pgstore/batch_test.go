package pgstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// goroutineDump returns the stacks of every goroutine, for a failure
// message.
func goroutineDump() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// goroutines counts the goroutines but those of pgx's background readers.
// pgconn starts one on a connection whose write is slow (a loaded machine)
// and, once stopped, it stays parked in its read until the connection is
// next used or closed: it belongs to the pool's idle connection, not to a
// batch.
func goroutines() int {
	n := 0
	for _, g := range strings.Split(goroutineDump(), "\n\n") {
		if strings.TrimSpace(g) != "" && !strings.Contains(g, "bgreader.(*BGReader).bgRead") {
			n++
		}
	}
	return n
}

// TestBatchEndReleasesEverything ends batches every way one can end and
// checks that each leaves no goroutine behind, no connection acquired,
// and that the batch (and its bloom filter) can be collected once its
// owner drops it.
func TestBatchEndReleasesEverything(t *testing.T) {
	s := mustOpen(t, testConfig(localsvctest.Database(t)))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 8))

	// Each case begins a batch, ends it and returns a weak pointer to it,
	// so that nothing on the test's stack keeps it alive.
	cases := []struct {
		name string
		run  func(t *testing.T) weak.Pointer[Batch]
	}{
		{"abort after rows", func(t *testing.T) weak.Pointer[Batch] {
			b := mustBegin(t, s, 2)
			addAll(t, b, randomRecords(rng, 2000), 2)
			b.Abort()
			return weak.Make(b)
		}},
		{"abort during concurrent adds", func(t *testing.T) weak.Pointer[Batch] {
			b := mustBegin(t, s, 4)
			abortDuringAdds(t, b, 4)
			return weak.Make(b)
		}},
		{"commit fails", func(t *testing.T) weak.Pointer[Batch] {
			b := mustBegin(t, s, 2)
			addAll(t, b, randomRecords(rng, 2000), 2)
			// The version vanishes under the import, as if an operator
			// removed it: the final transaction finds nothing to commit.
			if _, err := s.pool.Exec(ctx, "DELETE FROM datasets WHERE version = $1", b.Version()); err != nil {
				t.Fatal(err)
			}
			if _, _, err := b.Commit(ctx); err == nil || !strings.Contains(err.Error(), "no longer building") {
				t.Fatalf("Commit of a removed version: %v", err)
			}
			return weak.Make(b)
		}},
		{"commit cancelled", func(t *testing.T) weak.Pointer[Batch] {
			b := mustBegin(t, s, 2)
			addAll(t, b, randomRecords(rng, 2000), 2)
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			if _, _, err := b.Commit(cctx); err == nil || !strings.Contains(err.Error(), context.Canceled.Error()) {
				t.Fatalf("Commit with a cancelled context: %v, want it cancelled", err)
			}
			return weak.Make(b)
		}},
		{"copy fails", func(t *testing.T) weak.Pointer[Batch] {
			b := mustBegin(t, s, 1)
			addAll(t, b, randomRecords(rng, 2000), 1)
			killCopy(t, s, b.parts[3].table)
			// The failure reaches Add, as it would reach the CSV reader.
			var err error
			for i := 0; err == nil && i < 1_000_000; i++ {
				err = b.Add(0, &randomRecords(rng, 1)[0], int64(3000+i))
			}
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), b.parts[3].table) {
				t.Fatalf("Add after the COPY into %s died: %v", b.parts[3].table, err)
			}
			b.Abort()
			return weak.Make(b)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := goroutines()
			wb := c.run(t)
			assertReleased(t, s, base, 0)
			localsvctest.SucceedsSoon(t, 10*time.Second, func() error {
				runtime.GC()
				if wb.Value() != nil {
					return errors.New("the ended batch is still reachable")
				}
				return nil
			})
		})
	}
	t.Run("begin fails", func(t *testing.T) {
		base := goroutines()
		// Leave Begin connections for the import lock and 3 of the 16
		// partitions: it fails opening the fourth, with 3 COPYs running.
		held := holdConns(t, s, int(s.pool.Config().MaxConns)-1-3)
		bctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		b, err := s.Begin(bctx, "begin fails", 2)
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), context.DeadlineExceeded.Error()) {
			t.Fatalf("Begin without connections: %v, %v; want ErrUnavailable after the deadline", b, err)
		}
		assertReleased(t, s, base, len(held))
		var versions, tables int
		err = s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM datasets),
			(SELECT count(*) FROM pg_tables WHERE tablename LIKE 'promo_v%')`).Scan(&versions, &tables)
		if err != nil {
			t.Fatal(err)
		}
		if versions != 0 || tables != 0 {
			t.Fatalf("the failed Begin left %d datasets rows and %d tables", versions, tables)
		}
	})
}

func mustBegin(t *testing.T, s *Store, workers int) *Batch {
	t.Helper()
	b, err := s.Begin(context.Background(), t.Name(), workers)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertReleased waits until no more goroutines run than base and only
// held connections of the pool are acquired.
func assertReleased(t *testing.T, s *Store, base, held int) {
	t.Helper()
	localsvctest.SucceedsSoon(t, 10*time.Second, func() error {
		if n := s.pool.Stat().AcquiredConns(); int(n) != held {
			return fmt.Errorf("%d connections still acquired, want %d", n, held)
		}
		if n := goroutines(); n > base {
			return fmt.Errorf("%d goroutines, %d before the batch:\n%s", n, base, goroutineDump())
		}
		return nil
	})
}

// holdConns acquires n connections of s's pool until the test ends.
func holdConns(t *testing.T, s *Store, n int) []*pgxpool.Conn {
	t.Helper()
	conns := make([]*pgxpool.Conn, 0, n)
	for range n {
		c, err := s.pool.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Release()
		}
	})
	return conns
}

// killCopy terminates the backend running the COPY into table, once it
// runs.
func killCopy(t *testing.T, s *Store, table string) {
	t.Helper()
	localsvctest.SucceedsSoon(t, 10*time.Second, func() error {
		var n int
		err := s.pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE query LIKE 'COPY ' || $1::text || ' %'`, table).Scan(&n)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%d backends copy into %s", n, table)
		}
		return nil
	})
}

// abortDuringAdds aborts b while workers goroutines add rows to it, and
// checks that every worker's Add then returns an error instead of
// blocking or panicking.
func abortDuringAdds(t *testing.T, b *Batch, workers int) {
	t.Helper()
	var added atomic.Int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			defer func() {
				if p := recover(); p != nil {
					errs <- fmt.Errorf("worker %d: Add panicked: %v", w, p)
				}
			}()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			var r promotion.Record
			for line := int64(1); ; line++ {
				r = randomRecords(rng, 1)[0]
				if err := b.Add(w, &r, line); err != nil {
					errs <- err
					return
				}
				added.Add(1)
			}
		})
	}
	// Enough rows that every partition's stream has batches in flight.
	want := int64(4 * b.s.cfg.BatchRows * b.s.cfg.Partitions)
	localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
		if n := added.Load(); n < want {
			return fmt.Errorf("%d rows added, waiting for %d", n, want)
		}
		return nil
	})
	b.Abort()
	stopped := make(chan struct{})
	go func() {
		wg.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatalf("Add still blocked 10s after Abort:\n%s", goroutineDump())
	}
	close(errs)
	n := 0
	for err := range errs {
		if strings.Contains(err.Error(), "panicked") {
			t.Error(err)
		}
		n++
	}
	if n != workers {
		t.Fatalf("%d of %d workers stopped with an error", n, workers)
	}
}

// The ids of one table share a few slots, and so the low bits of their
// hash: the filter must not index its words by those bits, or a table's
// ids crowd a small part of it. 50,000 ids of 1/18 of the slots in a
// 1 MiB filter give about 1e-4 false positives; indexed by the slot's
// bits, 3-7%.
func TestBloomSpreadsTheIdsOfATable(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	ofTable := func() promotion.ID {
		for {
			var id promotion.ID
			binary.LittleEndian.PutUint64(id[:8], rng.Uint64())
			binary.LittleEndian.PutUint64(id[8:], rng.Uint64())
			if ring.Slot(id, ring.DefaultSlots)%18 == 0 {
				return id
			}
		}
	}
	f := newBloom(1 << 20)
	for range 50_000 {
		f.testAndSet(ofTable())
	}
	fp := 0
	for range 50_000 {
		if f.testAndSet(ofTable()) {
			fp++
		}
	}
	if fp > 50 {
		t.Fatalf("%d false positives in 50000 new ids of one table, want at most 50 (0.1%%)", fp)
	}
}

// A COPY that fails while its table's buffers are still filling (a slow
// upload, a server stopping) ends the batch without another row sent to
// that table: Add fails soon after, not when the upload ends. The
// fault drill postgres-stop-import found an import of 100,000 rows, whose
// buffers never filled before Commit, reading its whole upload first.
func TestFailedCopyEndsAddsBeforeItsNextRows(t *testing.T) {
	s := mustOpen(t, testConfig(localsvctest.Database(t)))
	b, err := s.Begin(context.Background(), "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	rng := rand.New(rand.NewPCG(51, 52))
	line := int64(0)
	add := func() error {
		line++
		r := randomRecords(rng, 1)[0]
		return b.Add(0, &r, line)
	}
	for range 100 { // far from a full buffer of any table
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	killCopy(t, s, tableName(b.Version(), 0))
	// A few rows at a time, never enough to fill a table's buffer
	// (BatchRows rows): only the failed COPY can end the batch.
	localsvctest.SucceedsSoon(t, 10*time.Second, func() error {
		for range pendRows {
			if err := add(); err != nil {
				return nil
			}
		}
		if line >= int64(b.s.cfg.BatchRows) {
			t.Fatalf("%d rows added after the COPY failed, and no error", line)
		}
		return errors.New("Add has not failed yet")
	})
}
