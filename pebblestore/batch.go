package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/promotion-service/promo/promotion"
)

// ErrEmpty is returned by Commit when no row was added.
var ErrEmpty = errors.New("pebblestore: the dataset has no rows")

// Batch builds one new dataset version. Add may be called concurrently for
// different workers; Commit or Abort ends the batch.
type Batch struct {
	s     *Store
	info  VersionInfo
	dir   string
	pool  *blockPool
	parts []*partition
	ended bool

	prepareOnly bool
	allowEmpty  bool // a read node's shard of a small version may be empty
	extend      bool // adds rows to a complete version (BeginExtend)

	phase     atomic.Pointer[string]
	done      atomic.Int64
	total     atomic.Int64
	sortLimit int64 // rows one goroutine sorts in memory
	space     *spaceGuard
}

// Begin starts version N+1 with rows added by up to workers goroutines.
// source describes the input for the version's metadata. Only one batch is
// open at a time; a second Begin fails with ErrBusy.
func (s *Store) Begin(ctx context.Context, source string, workers int) (*Batch, error) {
	return s.begin(source, workers, 0)
}

// BeginVersion starts a batch for a version number chosen by the caller:
// a read node builds the cluster's version N under the same number. It
// fails with ErrExists when the store already holds that version.
func (s *Store) BeginVersion(ctx context.Context, version uint64, source string, workers int) (*Batch, error) {
	if version == 0 {
		return nil, errors.New("pebblestore: version 0 is not a version")
	}
	b, err := s.begin(source, workers, version)
	if err == nil {
		b.allowEmpty = true
	}
	return b, err
}

func (s *Store) begin(source string, workers int, version uint64) (*Batch, error) {
	if workers < 1 {
		workers = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.building {
		return nil, ErrBusy
	}
	next, err := s.readUint64(metaNext)
	if err != nil {
		return nil, err
	}
	for v := range s.versions {
		next = max(next, v+1) // includes a version whose removal failed
	}
	next = max(next, 1)
	if version != 0 {
		if _, ok := s.versions[version]; ok {
			return nil, fmt.Errorf("%w: %d", ErrExists, version)
		}
		next = version
	}
	info := VersionInfo{Version: next, State: StateBuilding, Source: source, CreatedAt: time.Now().UTC()}
	dir := filepath.Join(s.tmpDir, fmt.Sprintf("v%d", next))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create import directory: %w", err)
	}
	// Record the version before any of its rows exist, so that a crash
	// from here on is cleaned up by the next Open.
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(metaNext, binary.BigEndian.AppendUint64(nil, next+1), nil); err != nil {
		return nil, err
	}
	if err := s.putVersionsIn(b, &info); err != nil {
		return nil, err
	}
	if err := b.Commit(syncWrite); err != nil {
		return nil, fmt.Errorf("cannot record new version: %w", err)
	}
	s.versions[next] = &info
	s.building = true

	budget := s.cfg.MemoryBudget
	pool := s.newPool()
	bt := &Batch{
		s:         s,
		info:      info,
		dir:       dir,
		pool:      pool,
		sortLimit: sortLimit(budget, s.cfg.Workers),
		space:     &spaceGuard{dir: dir},
	}
	for range workers {
		bt.parts = append(bt.parts, &partition{pool: pool, dir: dir, space: bt.space})
	}
	phase := "parsing"
	bt.phase.Store(&phase)
	return bt, nil
}

// sortLimit is how many rows one of workers goroutines sorts in memory:
// together they use a third of the budget, the other two thirds being
// the row blocks. A sort holds its rows three times (the rows, the radix
// sort's scratch and the next bucket's rows, read ahead), each with an
// eighth of slack.
func sortLimit(budget int64, workers int) int64 {
	return max(budget/3/int64(workers)/(3*rowSize+3*rowSize/8), blockRecs)
}

// Version returns the version the batch builds.
func (b *Batch) Version() uint64 { return b.info.Version }

// Add adds a row from worker (0 to workers-1). Rows of one worker must be
// added by one goroutine at a time. seq orders duplicates: of rows with the
// same ID, the one with the largest seq is kept.
func (b *Batch) Add(worker int, r *promotion.Record, seq int64) error {
	x := promotion.Row{Record: *r, Seq: uint64(seq)}
	return b.parts[worker].add(&x)
}

// Progress reports the phase of the batch and, while it sorts and writes,
// how many of the rows are done.
func (b *Batch) Progress() (phase string, done, total int64) {
	return *b.phase.Load(), b.done.Load(), b.total.Load()
}

func (b *Batch) setPhase(p string) { b.phase.Store(&p) }

// Commit sorts the rows, writes them as SSTables, ingests them and makes
// the version current in one durable write. It returns how many distinct
// rows the version holds and how many duplicates were dropped. On error the
// batch is aborted and the previous version keeps serving.
func (b *Batch) Commit(ctx context.Context) (rows, duplicates int64, err error) {
	if b.ended {
		return 0, 0, errors.New("pebblestore: batch already ended")
	}
	defer func() {
		if err != nil {
			b.Abort()
		}
	}()
	b.setPhase("sorting")
	t0 := time.Now()
	files, rows, duplicates, err := b.writeTables(ctx)
	t1 := time.Now()
	if err != nil {
		return 0, 0, err
	}
	if rows == 0 && !b.allowEmpty {
		return 0, duplicates, ErrEmpty
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	b.setPhase("ingesting")
	// The fast read path keeps links to the tables (fastread.go), made
	// before Pebble takes them and settled once they are in.
	stage := b.s.stageRun(b.info.Version, files, b.extend)
	if err := b.s.useDB(func() error {
		if len(files) == 0 {
			return nil // an empty shard of a cluster version
		}
		return b.s.db.Ingest(ctx, files)
	}); err != nil {
		b.s.unstage(stage)
		return 0, 0, fmt.Errorf("cannot ingest SSTables: %w", err)
	}
	b.s.publishRun(b.info.Version, stage, b.extend)
	t2 := time.Now()
	b.setPhase("activating")
	var held string
	if b.extend {
		err = b.finishExtend(rows)
	} else {
		held, err = b.finish(rows, duplicates, !b.prepareOnly)
	}
	if err != nil {
		return 0, 0, err
	}
	b.s.log.Debug("committed version", "version", b.info.Version, "files", len(files),
		"write_tables", t1.Sub(t0), "ingest", t2.Sub(t1), "activate", time.Since(t2))
	b.ended = true
	b.release()
	if held != "" {
		return rows, duplicates, fmt.Errorf("%w: %s", ErrHeld, held)
	}
	return rows, duplicates, nil
}

// release frees the batch's memory and temporary files. The row blocks are
// kept for the next batch (newPool), and the rest of the batch's garbage
// is collected at once: otherwise the next import would allocate on top
// of it before the collector runs, and the process would peak at twice
// the budget. The blocks go, and the memory goes back to the operating
// system, only when no batch has begun for freeDelay: a read node pulls
// every few seconds, and memory handed back at once would be faulted in
// again, page by page, by the next pull, which on a VM whose free memory
// goes back to the host costs more CPU than filling it. An idle server
// still shrinks to its working set (Go's own scavenger would leave it for
// minutes).
func (b *Batch) release() {
	for _, p := range b.parts {
		p.release()
	}
	b.parts = nil
	var spare []*block
	if b.pool != nil {
		spare = b.pool.free
	}
	b.pool = nil
	_ = os.RemoveAll(b.dir)
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	b.s.stopFree()
	if !b.s.closed {
		b.s.spare = spare
		b.s.freeTimer = time.AfterFunc(freeDelay, b.s.freeIdle)
	}
	runtime.GC()
}

// newPool returns the block pool of a new batch, with the blocks the last
// one left (s.spare): their pages are already the process's, where new
// ones would be faulted in one by one as rows fill them (a quarter of a
// read node's page faults in a pull). s.mu is held.
func (s *Store) newPool() *blockPool {
	s.stopFree()
	p := &blockPool{max: int(s.cfg.MemoryBudget * 2 / 3 / blockSize), free: s.spare}
	s.spare = nil
	return p
}

// freeIdle drops the blocks kept for the next batch and returns the
// memory to the operating system: no batch began for freeDelay.
func (s *Store) freeIdle() {
	s.mu.Lock()
	s.spare = nil
	s.mu.Unlock()
	freeOSMemory()
}

// freeDelay is how long the memory of a finished batch stays with the
// process, for the next one, before it goes back to the operating system
// with freeOSMemory (tests replace both).
var (
	freeDelay    = 30 * time.Second
	freeOSMemory = debug.FreeOSMemory
)

// stopFree cancels the return of memory to the operating system that the
// last batch scheduled; s.mu is held.
func (s *Store) stopFree() {
	if s.freeTimer != nil {
		s.freeTimer.Stop()
		s.freeTimer = nil
	}
}

// Prepare is Commit without the activation: the version becomes complete
// and durable (StateReady) but the current one keeps serving until
// Activate. Read nodes prepare a version, then switch when the cluster
// activates it.
func (b *Batch) Prepare(ctx context.Context) (rows, duplicates int64, err error) {
	b.prepareOnly = true
	return b.Commit(ctx)
}

// finish records the complete version and, when activate, makes it current,
// in one synced write, unless the activation guard holds it: then it
// returns the reason, and the version is complete but not current.
func (b *Batch) finish(rows, duplicates int64, activate bool) (held string, err error) {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrClosed
	}
	info := b.info
	now := time.Now().UTC()
	info.State = StateReady
	info.Rows = rows
	info.Duplicates = duplicates
	info.CommittedAt = &now
	if activate {
		if held = s.guard(info.Version, rows); held != "" {
			info.HeldReason = held
			activate = false
		}
	}
	var current, epoch uint64
	if activate {
		info.ActivatedAt = &now
		current, epoch = info.Version, s.epoch+1
		info.Epoch = epoch
	}
	if err := s.putVersions(current, epoch, &info); err != nil {
		return "", fmt.Errorf("cannot record version %d: %w", info.Version, err)
	}
	*s.versions[info.Version] = info
	switch {
	case activate:
		s.install(info.Version, epoch)
		s.log.Info("activated dataset version", "version", info.Version, "epoch", epoch, "rows", rows, "duplicates", duplicates)
	case held != "":
		s.log.Warn("dataset version held by the activation guard", "version", info.Version, "rows", rows, "reason", held)
	default:
		s.log.Info("prepared dataset version", "version", info.Version, "rows", rows)
	}
	s.building = false
	s.triggerRetain()
	return held, nil
}

// guard returns why version v, of rows rows, must not replace the current
// version (Config.MinRowsRatio), or "". s.mu is held.
func (s *Store) guard(v uint64, rows int64) string {
	cur := s.current.Load()
	if s.cfg.MinRowsRatio <= 0 || cur == nil {
		return ""
	}
	serving := s.versions[cur.version].Rows
	return heldReason(v, rows, cur.version, serving, s.cfg.MinRowsRatio)
}

// heldReason returns why version v, of rows rows, is held when version
// serving of servingRows rows serves and the guard's ratio is ratio, or ""
// when it is not held.
func heldReason(v uint64, rows int64, serving uint64, servingRows int64, ratio float64) string {
	if ratio <= 0 || float64(rows) >= ratio*float64(servingRows) {
		return ""
	}
	return fmt.Sprintf("version %d has %d rows, fewer than %g x the %d rows of the serving version %d (min_rows_ratio); it is kept but not activated: POST /datasets/%d/activate serves it",
		v, rows, ratio, servingRows, serving, v)
}

// Abort discards the batch and everything it wrote. It is safe to call
// after Commit failed or more than once.
func (b *Batch) Abort() {
	if b.ended {
		return
	}
	b.ended = true
	b.release()
	s := b.s
	if b.extend {
		// Nothing was ingested (Ingest is atomic, and finishExtend cannot
		// fail after it but for a closed store): the version stays as it was.
		s.mu.Lock()
		s.building = false
		s.mu.Unlock()
		return
	}
	ctx := context.Background()
	err := s.useDB(func() error { return s.dropData(ctx, b.info.Version, true) })
	s.mu.Lock()
	defer s.mu.Unlock()
	s.building = false
	if err != nil {
		// The version stays recorded as building, so its number is not
		// reused and the next Open removes it.
		s.log.Error("cannot remove aborted version; it is removed at the next start", "version", b.info.Version, "err", err)
		return
	}
	delete(s.versions, b.info.Version)
}

// BeginExtend starts a batch that adds rows to version, which the store
// holds complete (ready or active): a read node that gains ring slots adds
// their rows to the versions it keeps. The rows must be new to the version
// (other slots than the ones it holds); Prepare or Commit ingests them
// under the version's prefix without changing its state or the current
// version, and Abort discards only what the batch wrote, never the version.
// Lookups of the version see the new rows once the batch has committed.
func (s *Store) BeginExtend(ctx context.Context, version uint64, source string, workers int) (*Batch, error) {
	if workers < 1 {
		workers = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.building {
		return nil, ErrBusy
	}
	info, ok := s.versions[version]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownVersion, version)
	}
	if info.State != StateReady {
		return nil, fmt.Errorf("%w: version %d is %s", ErrNotReady, version, info.State)
	}
	dir := filepath.Join(s.tmpDir, fmt.Sprintf("v%d-extend", version))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create import directory: %w", err)
	}
	s.building = true
	budget := s.cfg.MemoryBudget
	pool := s.newPool()
	bt := &Batch{s: s, info: *info, dir: dir, pool: pool, extend: true, allowEmpty: true, prepareOnly: true,
		sortLimit: sortLimit(budget, s.cfg.Workers), space: &spaceGuard{dir: dir}}
	bt.info.Source = source
	for range workers {
		bt.parts = append(bt.parts, &partition{pool: pool, dir: dir, space: bt.space})
	}
	phase := "parsing"
	bt.phase.Store(&phase)
	return bt, nil
}

// finishExtend adds the rows of an extending batch to its version's count.
func (b *Batch) finishExtend(rows int64) error {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.building = false
	if s.closed {
		return ErrClosed
	}
	cur, ok := s.versions[b.info.Version]
	if !ok {
		return fmt.Errorf("%w: %d was removed while it was extended", ErrUnknownVersion, b.info.Version)
	}
	info := *cur
	info.Rows += rows
	if err := s.putVersions(0, 0, &info); err != nil {
		return fmt.Errorf("cannot record version %d: %w", info.Version, err)
	}
	*cur = info
	s.log.Info("extended dataset version", "version", info.Version, "rows_added", rows)
	return nil
}
