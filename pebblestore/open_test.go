package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/promotion-service/promo/pebblestore/pebblestoretest"
	"github.com/promotion-service/promo/promotion"
)

// logLines is a log destination that keeps what it is written.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logLines) count() int { return strings.Count(l.String(), "\n") }

// fullDiskStore returns the config of a store on a small disk that holds
// one version and whose Pebble log still holds the metadata written
// since the last flush, as after any restart: opening it means flushing
// that log. The disk is then filled.
func fullDiskStore(t *testing.T) (Config, *pebblestoretest.Disk, []promotion.Record) {
	t.Helper()
	disk := pebblestoretest.SmallDisk(t, 32<<20)
	cfg := testConfig(filepath.Join(disk.Dir, "data"))
	cfg.MemoryBudget = 8 << 20
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	recs := randomRecords(rand.New(rand.NewPCG(3, 3)), 10_000, 1)
	commit(t, s, recs, 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs, err := filepath.Glob(filepath.Join(cfg.Dir, "pebble", "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no Pebble log to replay in %s: %v", cfg.Dir, err)
	}
	disk.Fill(t)
	return cfg, disk, recs
}

// TestOpenOnFullDisk: a store whose disk is full does not open, says why in
// one line, at once and without Pebble's log flood; once space is freed it
// opens and serves the version it had.
func TestOpenOnFullDisk(t *testing.T) {
	cfg, disk, recs := fullDiskStore(t)
	logs := &logLines{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	type result struct {
		s   *Store
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := Open(context.Background(), cfg)
		done <- result{s, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("Open on a full disk still running after 10s; %d lines logged, the last: %s", logs.count(), lastLine(logs.String()))
	}
	if r.err == nil {
		r.s.Close()
		t.Fatal("Open on a full disk succeeded")
	}
	if !errors.Is(r.err, ErrDiskFull) || strings.Contains(r.err.Error(), "\n") {
		t.Fatalf("Open on a full disk: %q, want one line wrapping ErrDiskFull", r.err)
	}
	if n := logs.count(); n != 0 {
		t.Fatalf("Open on a full disk logged %d lines:\n%s", n, logs)
	}
	t.Logf("Open on a full disk: %v", r.err)

	disk.Free(t)
	s := mustOpen(t, cfg)
	v, ok := s.Current()
	if !ok || v.Version != 1 || v.Rows != int64(len(recs)) {
		t.Fatalf("current version after freeing space: %+v %v", v, ok)
	}
	checkAll(t, s, recs, 1)
}

func lastLine(s string) string {
	s = strings.TrimSuffix(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// TestOpenPebbleGivesUpOnFullDisk: past the free-space check (the disk
// filled after it), Pebble's Open retries the flush of its log forever;
// openPebble gives up on the first ENOSPC with ErrDiskFull, and the retry
// loop stops (its goroutine is parked) instead of flooding the log.
func TestOpenPebbleGivesUpOnFullDisk(t *testing.T) {
	cfg, _, _ := fullDiskStore(t)
	logs := &logLines{}
	opts := &pebble.Options{
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             newPebbleLogger(slog.New(slog.NewTextHandler(logs, nil))),
	}
	opts.EnsureDefaults()
	done := make(chan error, 1)
	go func() {
		db, err := openPebble(context.Background(), filepath.Join(cfg.Dir, "pebble"), opts)
		if err == nil {
			db.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("openPebble on a full disk: %v, want ErrDiskFull wrapping ENOSPC", err)
		}
		t.Logf("openPebble on a full disk: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatalf("openPebble on a full disk still running after 10s; %d lines logged, the last: %s", logs.count(), lastLine(logs.String()))
	}
	// The retry loop is parked in the error callback, holding the
	// database's mutex, so it cannot spin, and it logged no flood.
	deadline := time.Now().Add(10 * time.Second)
	for !parked() {
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine parked by openPebble; %d lines logged, the last: %s", logs.count(), lastLine(logs.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := logs.count(); n > errorsPerSecond {
		t.Fatalf("%d lines logged while giving up:\n%s", n, logs)
	}
}

// parked reports whether a goroutine is blocked for good in openPebble's
// error callback.
func parked() bool {
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "[select (no cases)") && strings.Contains(g, "pebblestore.openPebble.func") {
			return true
		}
	}
	return false
}

// stallFS is a file system whose Lock, the first thing Pebble's Open
// does, blocks until release is closed, like a disk that stopped
// answering. It reports when Lock blocked and when the lock was released.
type stallFS struct {
	vfs.FS
	release  chan struct{}
	stalled  chan struct{}
	unlocked chan struct{}
}

func (f *stallFS) Lock(name string) (io.Closer, error) {
	close(f.stalled)
	<-f.release
	c, err := f.FS.Lock(name)
	if err != nil {
		return nil, err
	}
	return closerFunc(func() error {
		defer close(f.unlocked)
		return c.Close()
	}), nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// TestOpenPebbleHonoursContext: an Open that hangs (a stalled disk) ends
// with ctx; when the disk answers again, the abandoned Open finishes in
// the background, with the cache its caller has already let go of, and
// closes its database.
func TestOpenPebbleHonoursContext(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pebble")
	fs := &stallFS{FS: vfs.Default, release: make(chan struct{}), stalled: make(chan struct{}), unlocked: make(chan struct{})}
	cache := pebble.NewCache(1 << 20)
	opts := &pebble.Options{FS: fs, Cache: cache, FormatMajorVersion: pebble.FormatNewest, Logger: newPebbleLogger(slog.New(slog.DiscardHandler))}
	opts.EnsureDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		db, err := openPebble(ctx, dir, opts)
		if err == nil {
			db.Close()
		}
		cache.Unref() // as Store.Open does
		done <- err
	}()
	waitClosed(t, fs.stalled, "Pebble's Open never reached the stalled disk")
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("openPebble cancelled on a stalled disk: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("openPebble still running 10s after its context ended")
	}
	close(fs.release)
	waitClosed(t, fs.unlocked, "the abandoned Open never closed its database")
	db, err := pebble.Open(dir, &pebble.Options{FormatMajorVersion: pebble.FormatNewest, Logger: newPebbleLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatalf("cannot open the database after the abandoned Open: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func waitClosed(t *testing.T, c <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatal(msg)
	}
}

// TestImportOnFullDiskKeepsVersion: an import that runs out of disk fails,
// and the version that served keeps serving, whole.
func TestImportOnFullDiskKeepsVersion(t *testing.T) {
	disk := pebblestoretest.SmallDisk(t, 32<<20)
	cfg := testConfig(filepath.Join(disk.Dir, "data"))
	cfg.MemoryBudget = 8 << 20
	s := mustOpen(t, cfg)
	rng := rand.New(rand.NewPCG(4, 4))
	v1 := randomRecords(rng, 10_000, 1)
	commit(t, s, v1, 2)
	disk.Fill(t)
	b, err := s.Begin(context.Background(), "full disk", 1)
	if err != nil {
		t.Fatal(err)
	}
	// Spilling rows (Add) or writing the tables (Commit) runs out of space.
	for i, r := range randomRecords(rng, 10_000, 2) {
		if err = b.Add(0, &r, int64(i)); err != nil {
			break
		}
	}
	if err == nil {
		_, _, err = b.Commit(context.Background())
	}
	b.Abort()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("import on a full disk: %v, want ENOSPC", err)
	}
	if v, ok := s.Current(); !ok || v.Version != 1 {
		t.Fatalf("current version after a failed import: %+v %v", v, ok)
	}
	checkAll(t, s, v1, 1)
}
