package pebblestore

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/promotion-service/promo/pebblestore/pebblestoretest"
	"github.com/promotion-service/promo/promotion"
)

func availBytes(tb testing.TB, dir string) uint64 {
	tb.Helper()
	u, err := vfs.Default.GetDiskUsage(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return u.AvailBytes
}

// smallDiskStore opens a store on a 64 MiB disk with an 8 MiB memory
// budget, so that imports spill early, and commits a first version.
func smallDiskStore(t *testing.T) (*Store, string, []promotion.Record) {
	t.Helper()
	disk := pebblestoretest.SmallDisk(t, 64<<20)
	cfg := testConfig(filepath.Join(disk.Dir, "data"))
	cfg.MemoryBudget = 8 << 20
	s := mustOpen(t, cfg)
	recs := randomRecords(rand.New(rand.NewPCG(5, 5)), 10_000, 1)
	commit(t, s, recs, 2)
	return s, cfg.Dir, recs
}

func checkNoSpace(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("got %v, want an error wrapping ErrDiskFull and ENOSPC", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "needs about") || !strings.Contains(msg, "serving version is unchanged") {
		t.Fatalf("error %q does not say what is needed and that the serving version is kept", msg)
	}
}

// A stream of unknown length that outgrows the disk fails at a spill,
// while the disk still has room (not with the kernel's ENOSPC deep in a
// write), the previous version keeps serving, the spilled rows' space is
// given back, and the next import that fits succeeds.
func TestStreamFailsEarlyWhenDiskWontHold(t *testing.T) {
	s, dir, v1 := smallDiskStore(t)
	before := availBytes(t, dir)
	b, err := s.Begin(context.Background(), "stream", 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(6, 6))
	var addErr error
	var added int
	for added = range 5_000_000 { // 5M rows need ~400 MB: far more than the disk
		r := randomRecords(rng, 1, 2)[0]
		if addErr = b.Add(0, &r, int64(added)); addErr != nil {
			break
		}
	}
	if addErr == nil {
		t.Fatal("5,000,000 rows were added to a 64 MiB disk without an error")
	}
	checkNoSpace(t, addErr)
	free := availBytes(t, dir)
	if free < spaceHeadroom/2 {
		t.Fatalf("failed only once %d bytes were left: not early", free)
	}
	if want := int64(before) / (promotion.RowLen + tableBytesPerRow); int64(added) > want {
		t.Fatalf("failed after %d rows, more than the %d that the free space could hold", added, want)
	}
	b.Abort()
	if v, ok := s.Current(); !ok || v.Version != 1 {
		t.Fatalf("current after the failed import: %+v %v, want version 1", v, ok)
	}
	checkAll(t, s, v1, 1)
	if after := availBytes(t, dir); after+(1<<20) < before {
		t.Fatalf("%d bytes free after the abort, %d before the import: the spill files were not removed", after, before)
	}
	next := randomRecords(rng, 20_000, 3)
	commit(t, s, next, 2)
	cur, _ := s.Current()
	if cur.Version == 1 {
		t.Fatal("the import after the failed one did not become current")
	}
	checkAll(t, s, next, cur.Version)
	t.Logf("failed after %d rows with %d bytes still free (%d before the import)", added, free, before)
}

// ExpectBytes refuses, before any row, an import whose known size cannot
// fit, and accepts one that can.
func TestExpectBytes(t *testing.T) {
	s, _, v1 := smallDiskStore(t)
	b, err := s.Begin(context.Background(), "file", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Abort()
	checkNoSpace(t, b.ExpectBytes(1<<30))
	if err := b.ExpectBytes(1 << 20); err != nil {
		t.Fatalf("a 1 MiB file on a disk with room: %v", err)
	}
	if err := b.ExpectBytes(-1); err != nil {
		t.Fatalf("an unknown size: %v", err)
	}
	checkAll(t, s, v1, 1)
}
