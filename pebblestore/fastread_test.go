package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/promotion-service/promo/promotion"
)

// fastConfig makes small blocks, so that a few thousand rows fill many
// blocks with many restart points.
func fastConfig(dir string) Config {
	c := testConfig(dir)
	c.BlockSize = 512
	return c
}

// fastTables returns how many runs and tables version v reads itself, or
// fails when it reads through Pebble.
func fastTables(tb testing.TB, s *Store, v uint64) (runs, tables int) {
	tb.Helper()
	s.mu.Lock()
	fv := s.fast[v]
	s.mu.Unlock()
	if fv == nil || fv.runs.Load() == nil {
		tb.Fatalf("version %d has no fast read path", v)
	}
	for _, r := range *fv.runs.Load() {
		tables += len(r.tables)
	}
	return len(*fv.runs.Load()), tables
}

// checkAgree looks every id up in the current version through the fast
// path and through Pebble, and fails when they differ or when the fast
// path is not in use. It returns how many were found. Under the race
// detector, where Pebble's Get of 300,000 probes takes minutes, it checks
// every 25th id only.
func checkAgree(tb testing.TB, s *Store, ids []promotion.ID) int {
	tb.Helper()
	v := s.Acquire()
	if v == nil {
		tb.Fatal("no current version")
	}
	defer v.Release()
	if v.fast == nil || v.fast.runs.Load() == nil {
		tb.Fatalf("version %d reads through Pebble", v.Version())
	}
	stride := 1
	if raceEnabled {
		stride = 25
	}
	n := 0
	for i := 0; i < len(ids); i += stride {
		id := ids[i]
		var fast, slow promotion.Record
		ok1, err1 := v.Get(id, &fast)
		ok2, err2 := v.getPebble(id, &slow)
		if err1 != nil || err2 != nil || ok1 != ok2 || fast != slow {
			tb.Fatalf("id %x in version %d: fast %v %+v %v, Pebble %v %+v %v", id, v.Version(), ok1, fast, err1, ok2, slow, err2)
		}
		if ok1 {
			n++
		}
	}
	return n
}

// probes returns the ids of recs and ids around them that no version
// holds: before the first, after the last and between neighbours.
func probes(recs ...[]promotion.Record) []promotion.ID {
	var ids []promotion.ID
	for _, rs := range recs {
		for i := range rs {
			ids = append(ids, rs[i].ID)
		}
	}
	slices.SortFunc(ids, func(a, b promotion.ID) int { return bytes.Compare(a[:], b[:]) })
	ids = slices.Compact(ids)
	out := slices.Clone(ids)
	for _, id := range ids {
		id[15]++ // between this key and the next (ids are random)
		out = append(out, id)
	}
	var last promotion.ID
	for i := range last {
		last[i] = 0xff
	}
	return append(out, promotion.ID{}, promotion.ID{0: 1}, last)
}

// The fast path answers what Pebble answers, for every key of a version
// of several tables, for absent ids and for other versions' ids, and after
// a reopen; a dropped version's links go.
func TestFastPathAgreesWithPebble(t *testing.T) {
	dir := t.TempDir()
	cfg := fastConfig(dir)
	s := mustOpen(t, cfg)
	rng := rand.New(rand.NewPCG(21, 22))
	v1 := randomRecords(rng, 150_000, 1)
	commit(t, s, v1, 2)
	if _, tables := fastTables(t, s, 1); tables < 2 {
		t.Fatalf("version 1 has %d tables, want several", tables)
	}
	if n := checkAgree(t, s, probes(v1)); !raceEnabled && n != len(v1) {
		t.Fatalf("found %d of %d", n, len(v1))
	}
	// Version 2 holds part of version 1's ids with other values, and new ones.
	v2 := append(slices.Clone(v1[:5_000]), randomRecords(rng, 5_000, 2)...)
	for i := range v2 {
		v2[i].PriceMicros += 3_000_000
	}
	commit(t, s, v2, 2)
	checkAll(t, s, v2, 2)
	if n := checkAgree(t, s, probes(v1, v2)); !raceEnabled && n != len(v2) {
		t.Fatalf("found %d of %d in version 2", n, len(v2))
	}
	// A third version drops the first (KeepVersions 2): its links go.
	v3 := randomRecords(rng, 3_000, 3)
	commit(t, s, v3, 1)
	waitVersions(t, s, 3, 2)
	if _, err := os.Stat(s.versionTablesDir(1)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the tables of dropped version 1: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	fastTables(t, s, 2)
	if n := checkAgree(t, s, probes(v1, v2, v3)); !raceEnabled && n != len(v3) {
		t.Fatalf("found %d of %d after reopen", n, len(v3))
	}
	if _, err := s.Activate(2); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, v2, 2)
	checkAgree(t, s, probes(v2, v3))
}

// An extended version gets a run per extension, read with the first,
// also after a reopen.
func TestFastPathAfterExtend(t *testing.T) {
	dir := t.TempDir()
	cfg := fastConfig(dir)
	s := mustOpen(t, cfg)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(23, 24))
	first, more, again := randomRecords(rng, 20_000, 1), randomRecords(rng, 10_000, 1), randomRecords(rng, 100, 1)
	commit(t, s, first, 2)
	for _, recs := range [][]promotion.Record{more, again} {
		b, err := s.BeginExtend(ctx, 1, "more slots", 2)
		if err != nil {
			t.Fatal(err)
		}
		addAll(t, b, recs, 2)
		if _, _, err := b.Prepare(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if runs, _ := fastTables(t, s, 1); runs != 3 {
		t.Fatalf("%d runs after two extensions, want 3", runs)
	}
	all := slices.Concat(first, more, again)
	if n := checkAgree(t, s, probes(all)); !raceEnabled && n != len(all) {
		t.Fatalf("found %d of %d", n, len(all))
	}
	// An aborted extension adds no run.
	b, err := s.BeginExtend(ctx, 1, "aborted", 1)
	if err != nil {
		t.Fatal(err)
	}
	addAll(t, b, randomRecords(rng, 10, 1), 1)
	b.Abort()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	if runs, _ := fastTables(t, s, 1); runs != 3 {
		t.Fatalf("%d runs after reopen, want 3", runs)
	}
	if n := checkAgree(t, s, probes(all)); !raceEnabled && n != len(all) {
		t.Fatalf("found %d of %d after reopen", n, len(all))
	}
}

// A version whose fast path went off (its tables would not open) stays
// on Pebble's path for good: an extension links no run for it, its links
// go, and a restart does not open runs that lack the extension's rows.
func TestExtendWithoutFastPath(t *testing.T) {
	dir := t.TempDir()
	cfg := fastConfig(dir)
	s := mustOpen(t, cfg)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(27, 28))
	first, more := randomRecords(rng, 5_000, 1), randomRecords(rng, 5_000, 1)
	commit(t, s, first, 2)
	s.mu.Lock()
	s.fast[1].runs.Store(nil)
	s.mu.Unlock()
	b, err := s.BeginExtend(ctx, 1, "more slots", 2)
	if err != nil {
		t.Fatal(err)
	}
	addAll(t, b, more, 2)
	if _, _, err := b.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.versionTablesDir(1)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the links of a version off the fast path: %v, want none", err)
	}
	all := slices.Concat(first, more)
	findAll(t, s, all)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	s.mu.Lock()
	fv := s.fast[1]
	s.mu.Unlock()
	if fv != nil && fv.runs.Load() != nil {
		t.Fatalf("version 1 has %d fast runs after reopen, want Pebble's path", len(*fv.runs.Load()))
	}
	findAll(t, s, all)
}

// findAll fails unless the current version answers every record of recs.
func findAll(t *testing.T, s *Store, recs []promotion.Record) {
	t.Helper()
	v := s.Acquire()
	defer v.Release()
	var r promotion.Record
	for i := range recs {
		found, err := v.Get(recs[i].ID, &r)
		if err != nil || !found || r != recs[i] {
			t.Fatalf("record %d: found %v, %v, %+v, want %+v", i, found, err, r, recs[i])
		}
	}
}

// A crash between the ingest of an extension and the settling of its run
// keeps the run, as Pebble has its rows; a crash before the ingest drops
// it, as Pebble has not.
func TestFastPathStagedRunAfterCrash(t *testing.T) {
	for _, ingested := range []bool{true, false} {
		dir := t.TempDir()
		cfg := fastConfig(dir)
		s, err := Open(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(25, 26))
		first, more := randomRecords(rng, 5_000, 1), randomRecords(rng, 5_000, 1)
		commit(t, s, first, 2)
		b, err := s.BeginExtend(context.Background(), 1, "crashing", 2)
		if err != nil {
			t.Fatal(err)
		}
		addAll(t, b, more, 2)
		files, _, _, err := b.writeTables(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		stage := s.stageRun(1, files, true)
		if stage == "" {
			t.Fatal("nothing staged")
		}
		if ingested {
			if err := s.db.Ingest(context.Background(), files); err != nil {
				t.Fatal(err)
			}
		}
		crash(t, s)

		s = mustOpen(t, cfg)
		runs, _ := fastTables(t, s, 1)
		want := 1
		if ingested {
			want = 2
		}
		if runs != want {
			t.Fatalf("ingested %v: %d runs after the crash, want %d", ingested, runs, want)
		}
		n := checkAgree(t, s, probes(first, more))
		if want := len(first) + map[bool]int{true: len(more)}[ingested]; !raceEnabled && n != want {
			t.Fatalf("ingested %v: found %d, want %d", ingested, n, want)
		}
		if _, err := os.Stat(stage); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("staged run after recovery: %v", err)
		}
	}
}

// crash stops s as a killed process would: nothing settles.
func crash(t *testing.T, s *Store) {
	t.Helper()
	close(s.stop)
	<-s.done
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
	s.cache.Unref()
	s.lock.Close()
	s.closeFast()
}

// A version whose table cannot be opened reads through Pebble, and
// answers right.
func TestFastPathFallsBackOnABadTable(t *testing.T) {
	dir := t.TempDir()
	cfg := fastConfig(dir)
	s := mustOpen(t, cfg)
	rng := rand.New(rand.NewPCG(27, 28))
	recs := randomRecords(rng, 5_000, 1)
	commit(t, s, recs, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "tables", "v1", "r1", "*.sst"))
	if len(names) == 0 {
		t.Fatal("no linked tables")
	}
	// Replace the link (Pebble's file is the same inode) with a truncated copy.
	data, err := os.ReadFile(names[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(names[0]); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(names[0], data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	if v := s.Acquire(); v.fast != nil && v.fast.runs.Load() != nil {
		t.Fatal("a version with a truncated table reads it")
	} else {
		v.Release()
	}
	checkAll(t, s, recs, 1)
}

// copyTable writes a private copy of a table of a fresh store and returns
// its path and the ids in it.
func copyTable(t *testing.T, n int) (string, []promotion.Record) {
	t.Helper()
	dir := t.TempDir()
	s := mustOpen(t, fastConfig(dir))
	recs := randomRecords(rand.New(rand.NewPCG(29, 30)), n, 1)
	commit(t, s, recs, 1)
	names, _ := filepath.Glob(filepath.Join(dir, "tables", "v1", "r1", "*.sst"))
	if len(names) != 1 {
		t.Fatalf("%d tables, want 1", len(names))
	}
	src, err := os.Open(names[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(t.TempDir(), "copy.sst")
	dst, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return path, recs
}

func tableKey(id promotion.ID) []byte {
	p := versionPrefix(1)
	return append(p[:], id[:]...)
}

// A corrupt or truncated table gives an error, at open or at the lookup
// of a bad block, never a panic or a wrong answer.
func TestCorruptTable(t *testing.T) {
	path, recs := copyTable(t, 3_000)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := openTable(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		val, ok, err := tab.get(tableKey(recs[i].ID))
		var r promotion.Record
		if err == nil && ok {
			err = promotion.DecodeValue(val, &r)
			r.ID = recs[i].ID
		}
		if err != nil || !ok || r != recs[i] {
			t.Fatalf("record %d in the intact table: %v %v %+v", i, ok, err, r)
		}
	}
	tab.unmap()

	// Truncated anywhere: openTable fails.
	for _, n := range []int{0, 1, 52, 53, len(good) / 2, len(good) - 1} {
		if err := os.WriteFile(path, good[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if tab, err := openTable(path); err == nil {
			tab.unmap()
			t.Fatalf("a table truncated to %d of %d bytes opens", n, len(good))
		}
	}
	// A flipped byte in a data block in the middle: the table opens (its
	// index is intact), lookups in that block fail their checksum and the
	// others answer.
	bad := slices.Clone(good)
	bad[len(good)/3] ^= 0x40
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	tab, err = openTable(path)
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for i := range recs {
		_, ok, err := tab.get(tableKey(recs[i].ID))
		switch {
		case errors.Is(err, ErrCorrupt):
			failed++
		case err != nil || !ok:
			t.Fatalf("record %d outside the damaged block: %v %v", i, ok, err)
		}
	}
	if failed == 0 || failed > len(recs)/10 {
		t.Fatalf("%d of %d lookups failed, want those of one block", failed, len(recs))
	}
	tab.unmap()

	// Random damage: errors or right answers only.
	rng := rand.New(rand.NewPCG(31, 32))
	for range 300 {
		bad := slices.Clone(good)
		for range 1 + rng.IntN(4) {
			bad[rng.IntN(len(bad))] = byte(rng.Uint32())
		}
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		tab, err := openTable(path)
		if err != nil {
			continue
		}
		for i := 0; i < len(recs); i += 37 {
			val, ok, err := tab.get(tableKey(recs[i].ID))
			if err != nil || !ok {
				continue
			}
			var r promotion.Record
			if promotion.DecodeValue(val, &r) == nil {
				r.ID = recs[i].ID
				if r != recs[i] {
					t.Fatalf("a damaged table answered %+v for %+v", r, recs[i])
				}
			}
		}
		tab.unmap()
	}
}

// FuzzSeekBlock feeds arbitrary blocks to the data block search: it
// returns an error or an answer, and never reads outside the block.
func FuzzSeekBlock(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0}, []byte("k"))
	f.Add([]byte{0, 33, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0}, make([]byte, keyLen))
	f.Fuzz(func(t *testing.T, b, key []byte) {
		k := make([]byte, keyLen)
		copy(k, key)
		_, _, _ = seekBlock(b, k)
		var dst [keyLen]byte
		_ = lastKey(b, dst[:])
	})
}

// Get through the fast path does not allocate.
func TestFastGetDoesNotAllocate(t *testing.T) {
	s := mustOpen(t, fastConfig(t.TempDir()))
	recs := randomRecords(rand.New(rand.NewPCG(33, 34)), 10_000, 1)
	commit(t, s, recs, 1)
	v := s.Acquire()
	defer v.Release()
	fastTables(t, s, 1)
	var r promotion.Record
	missing := promotion.ID{1, 2, 3}
	allocs := testing.AllocsPerRun(1000, func() {
		if ok, err := v.Get(recs[7].ID, &r); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if ok, err := v.Get(missing, &r); ok || err != nil {
			t.Fatal(ok, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per two Gets", allocs)
	}
}

// Lookups run while versions come and go (KeepVersions 1): every answer
// is right for its version, and a dropped version's mappings are released
// only after its last View.
func TestFastPathConcurrentGetsAndDrops(t *testing.T) {
	cfg := fastConfig(t.TempDir())
	cfg.KeepVersions = 1
	s := mustOpen(t, cfg)
	rng := rand.New(rand.NewPCG(35, 36))
	recs := randomRecords(rng, 4_000, 0)
	commit(t, s, recs, 1)
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for n := 0; !stop.Load() || n < 1000; n++ {
				v := s.Acquire()
				i := r.IntN(len(recs))
				var got promotion.Record
				ok, err := v.Get(recs[i].ID, &got)
				// Version k holds the records with tag k-1.
				want := recs[i]
				want.PriceMicros += int64(v.Version()-1) * 1_000_000
				v.Release()
				if err != nil || !ok || got != want {
					errs <- errors.New("wrong answer during swaps")
					return
				}
			}
		}()
	}
	for k := 1; k <= 6; k++ {
		next := slices.Clone(recs)
		for i := range next {
			next[i].PriceMicros += int64(k) * 1_000_000
		}
		commit(t, s, next, 1)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitVersions(t, s, 7)
	ents, err := os.ReadDir(s.tablesDir)
	if err != nil || len(ents) != 1 || ents[0].Name() != "v7" {
		t.Fatalf("tables directory after the drops: %v %v", ents, err)
	}
}

// A table cut short under its mapping (or a disk error under a mapped
// page: SIGBUS either way) fails the lookups that touch the lost pages
// with an error; the process goes on.
func TestFaultInMappedTableIsAnError(t *testing.T) {
	s := mustOpen(t, fastConfig(t.TempDir()))
	rng := rand.New(rand.NewPCG(29, 30))
	recs := randomRecords(rng, 50_000, 1)
	commit(t, s, recs, 1)
	s.mu.Lock()
	fv := s.fast[1]
	s.mu.Unlock()
	if fv == nil || fv.runs.Load() == nil {
		t.Fatal("version 1 has no fast read path")
	}
	tables, err := filepath.Glob(filepath.Join(fv.dir, "r*", "*.sst"))
	if err != nil || len(tables) == 0 {
		t.Fatalf("tables of version 1: %v %v", tables, err)
	}
	for _, f := range tables {
		if err := os.Truncate(f, 4096); err != nil {
			t.Fatal(err)
		}
	}
	v := s.Acquire()
	defer v.Release()
	var r promotion.Record
	failed := 0
	for i := range recs {
		found, err := v.Get(recs[i].ID, &r)
		switch {
		case err != nil && strings.Contains(err.Error(), "fault reading a mapped table"):
			failed++
		case err != nil:
			t.Fatalf("record %d: %v, want a fault error", i, err)
		case found && r != recs[i]:
			t.Fatalf("record %d: %+v, want %+v", i, r, recs[i])
		}
	}
	if failed < len(recs)/2 {
		t.Fatalf("%d of %d lookups failed with the tables cut to 4 KiB, want most", failed, len(recs))
	}
}
