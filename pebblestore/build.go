package pebblestore

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/sstable"

	"github.com/promotion-service/promo/promotion"
)

// ErrEmpty is returned by Commit when no row was added.
var ErrEmpty = errors.New("pebblestore: the dataset has no rows")

// rec is one row as the builder holds it. The ID is split in two
// big-endian words so that comparing keys is two integer compares.
type rec struct {
	hi, lo uint64
	price  int64
	exp    int64
	seq    uint64 // input position: the larger one wins among duplicates
}

const (
	recSize   = 40
	blockRecs = 512
	blockSize = blockRecs * recSize
	buckets   = 256
)

// block is a fixed array of rows; a bucket is a list of blocks. A block
// holds no pointers, so the garbage collector never scans one.
type block struct {
	n    int
	recs [blockRecs]rec
}

// radix returns the byte of the ID at position depth (0 to 15).
func (r *rec) radix(depth int) int {
	if depth < 8 {
		return int(r.hi >> (56 - 8*depth) & 0xff)
	}
	return int(r.lo >> (56 - 8*(depth-8)) & 0xff)
}

// blockPool hands out at most max blocks, so the rows held in memory stay
// within the budget.
type blockPool struct {
	mu    sync.Mutex
	free  []*block
	inUse int
	max   int
}

// get returns a cleared block, or nil when the budget is exhausted.
func (p *blockPool) get() *block {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inUse >= p.max {
		return nil
	}
	p.inUse++
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b
	}
	return new(block)
}

func (p *blockPool) put(b *block) {
	b.n = 0
	p.mu.Lock()
	p.inUse--
	p.free = append(p.free, b)
	p.mu.Unlock()
}

// run is a spill file: the rows of every bucket, bucket after bucket.
type run struct {
	f   *os.File
	off [buckets + 1]int64 // byte offset of each bucket's rows
}

// segment is the rows of one bucket in one run.
type segment struct {
	run    *run
	off, n int64 // byte offset and row count
}

// partition is a set of 256 buckets of rows that share their first depth
// bytes, held in blocks from a pool and spilled to runs when the pool runs
// dry.
type partition struct {
	depth int
	pool  *blockPool
	dir   string
	heads [buckets][]*block // the last block of a bucket is the one being filled
	runs  []*run
	spill *spiller
}

// add appends r to its bucket, spilling every bucket of p first when the
// pool is exhausted.
func (p *partition) add(r *rec) error {
	k := r.radix(p.depth)
	var h *block
	if l := p.heads[k]; len(l) > 0 {
		h = l[len(l)-1]
	}
	if h == nil || h.n == blockRecs {
		nb := p.pool.get()
		if nb == nil {
			if err := p.spillAll(); err != nil {
				return err
			}
			if nb = p.pool.get(); nb == nil {
				// Another partition holds the whole budget; grow
				// rather than deadlock. Only happens with a tiny
				// budget.
				nb = new(block)
				p.pool.mu.Lock()
				p.pool.inUse++
				p.pool.mu.Unlock()
			}
		}
		p.heads[k] = append(p.heads[k], nb)
		h = nb
	}
	h.recs[h.n] = *r
	h.n++
	return nil
}

// spillAll writes every in-memory row of p to a new run and returns the
// blocks to the pool.
func (p *partition) spillAll() error {
	if p.spill == nil {
		p.spill = &spiller{}
	}
	f, err := os.CreateTemp(p.dir, "spill-*.run")
	if err != nil {
		return fmt.Errorf("cannot create spill file: %w", err)
	}
	// The file is only reachable through the open descriptor, so it goes
	// away with the process whatever happens.
	_ = os.Remove(f.Name())
	r := &run{f: f}
	w := p.spill.writer(f)
	var off int64
	var buf [recSize]byte
	for k := range buckets {
		r.off[k] = off
		for _, b := range p.heads[k] {
			for i := range b.n {
				encodeRec(buf[:], &b.recs[i])
				if _, err := w.Write(buf[:]); err != nil {
					_ = f.Close()
					return fmt.Errorf("cannot write spill file: %w", err)
				}
				off += recSize
			}
			p.pool.put(b)
		}
		p.heads[k] = p.heads[k][:0]
	}
	r.off[buckets] = off
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return fmt.Errorf("cannot write spill file: %w", err)
	}
	p.runs = append(p.runs, r)
	return nil
}

// release returns p's blocks to the pool and closes its runs.
func (p *partition) release() {
	for k := range p.heads {
		for _, b := range p.heads[k] {
			p.pool.put(b)
		}
		p.heads[k] = nil
	}
	for _, r := range p.runs {
		_ = r.f.Close()
	}
	p.runs = nil
}

type spiller struct{ w *bufio.Writer }

func (s *spiller) writer(f *os.File) *bufio.Writer {
	if s.w == nil {
		s.w = bufio.NewWriterSize(f, 1<<20)
	} else {
		s.w.Reset(f)
	}
	return s.w
}

func encodeRec(b []byte, r *rec) {
	binary.LittleEndian.PutUint64(b[0:], r.hi)
	binary.LittleEndian.PutUint64(b[8:], r.lo)
	binary.LittleEndian.PutUint64(b[16:], uint64(r.price))
	binary.LittleEndian.PutUint64(b[24:], uint64(r.exp))
	binary.LittleEndian.PutUint64(b[32:], r.seq)
}

func decodeRec(b []byte, r *rec) {
	r.hi = binary.LittleEndian.Uint64(b[0:])
	r.lo = binary.LittleEndian.Uint64(b[8:])
	r.price = int64(binary.LittleEndian.Uint64(b[16:]))
	r.exp = int64(binary.LittleEndian.Uint64(b[24:]))
	r.seq = binary.LittleEndian.Uint64(b[32:])
}

// source is every row of one bucket: blocks in memory and run segments.
type source struct {
	blocks []*block
	segs   []segment
	n      int64
}

func (s *source) addPartition(p *partition, k int) {
	for _, b := range p.heads[k] {
		s.blocks = append(s.blocks, b)
		s.n += int64(b.n)
	}
	for _, r := range p.runs {
		if n := (r.off[k+1] - r.off[k]) / recSize; n > 0 {
			s.segs = append(s.segs, segment{run: r, off: r.off[k], n: n})
			s.n += n
		}
	}
}

// each calls fn for every row of s; buf is scratch space for reading runs.
func (s *source) each(buf []byte, fn func(*rec) error) error {
	for _, b := range s.blocks {
		for i := range b.n {
			if err := fn(&b.recs[i]); err != nil {
				return err
			}
		}
	}
	return s.eachSpilled(buf, fn)
}

// eachSpilled calls fn for every row of s in runs.
func (s *source) eachSpilled(buf []byte, fn func(*rec) error) error {
	var r rec
	for _, sg := range s.segs {
		left := sg.n * recSize
		off := sg.off
		for left > 0 {
			chunk := buf[:min(int64(len(buf)), left)]
			if _, err := sg.run.f.ReadAt(chunk, off); err != nil {
				return fmt.Errorf("cannot read spill file: %w", err)
			}
			for i := 0; i < len(chunk); i += recSize {
				decodeRec(chunk[i:], &r)
				if err := fn(&r); err != nil {
					return err
				}
			}
			off += int64(len(chunk))
			left -= int64(len(chunk))
		}
	}
	return nil
}

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

	phase     atomic.Pointer[string]
	done      atomic.Int64
	total     atomic.Int64
	sortLimit int64 // rows one goroutine sorts in memory
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
	pool := &blockPool{max: int(budget * 2 / 3 / blockSize)}
	bt := &Batch{
		s:         s,
		info:      info,
		dir:       dir,
		pool:      pool,
		sortLimit: max(budget/3/int64(s.cfg.Workers)/recSize, blockRecs),
	}
	for range workers {
		bt.parts = append(bt.parts, &partition{pool: pool, dir: dir})
	}
	phase := "parsing"
	bt.phase.Store(&phase)
	return bt, nil
}

// Version returns the version the batch builds.
func (b *Batch) Version() uint64 { return b.info.Version }

// Add adds a row from worker (0 to workers-1). Rows of one worker must be
// added by one goroutine at a time. seq orders duplicates: of rows with the
// same ID, the one with the largest seq is kept.
func (b *Batch) Add(worker int, r *promotion.Record, seq int64) error {
	x := rec{
		hi:    binary.BigEndian.Uint64(r.ID[:8]),
		lo:    binary.BigEndian.Uint64(r.ID[8:]),
		price: r.PriceMicros,
		exp:   r.Expires,
		seq:   uint64(seq),
	}
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
	if err := b.s.useDB(func() error {
		if len(files) == 0 {
			return nil // an empty shard of a cluster version
		}
		return b.s.db.Ingest(ctx, files)
	}); err != nil {
		return 0, 0, fmt.Errorf("cannot ingest SSTables: %w", err)
	}
	t2 := time.Now()
	b.setPhase("activating")
	if err := b.finish(rows, duplicates, !b.prepareOnly); err != nil {
		return 0, 0, err
	}
	b.s.log.Debug("committed version", "version", b.info.Version, "files", len(files),
		"write_tables", t1.Sub(t0), "ingest", t2.Sub(t1), "activate", time.Since(t2))
	b.ended = true
	b.release()
	return rows, duplicates, nil
}

// release frees the batch's memory and temporary files. The row blocks are
// handed back to the operating system at once: otherwise the next import
// would allocate on top of this one's garbage before the collector runs,
// and the process would peak at twice the budget.
func (b *Batch) release() {
	for _, p := range b.parts {
		p.release()
	}
	b.parts = nil
	b.pool = nil
	_ = os.RemoveAll(b.dir)
	debug.FreeOSMemory()
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
// in one synced write.
func (b *Batch) finish(rows, duplicates int64, activate bool) error {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	info := b.info
	now := time.Now().UTC()
	info.State = StateReady
	info.Rows = rows
	info.Duplicates = duplicates
	info.CommittedAt = &now
	var current uint64
	if activate {
		info.ActivatedAt = &now
		current = info.Version
	}
	if err := s.putVersions(current, &info); err != nil {
		return fmt.Errorf("cannot record version %d: %w", info.Version, err)
	}
	*s.versions[info.Version] = info
	if activate {
		s.install(info.Version)
		s.log.Info("activated dataset version", "version", info.Version, "rows", rows, "duplicates", duplicates)
	} else {
		s.log.Info("prepared dataset version", "version", info.Version, "rows", rows)
	}
	s.building = false
	s.triggerRetain()
	return nil
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

// group is a run of consecutive buckets written to one SSTable.
type group struct {
	first, last int // bucket range, inclusive
	srcs        []source
	path        string
	rows, dups  int64
	written     bool
}

// writeTables sorts every bucket and writes the rows into SSTables, in
// parallel, one table per group of consecutive buckets.
func (b *Batch) writeTables(ctx context.Context) (files []string, rows, dups int64, err error) {
	srcs := make([]source, buckets)
	var total int64
	for k := range buckets {
		for _, p := range b.parts {
			srcs[k].addPartition(p, k)
		}
		total += srcs[k].n
	}
	b.total.Store(total)
	if total == 0 {
		return nil, 0, 0, nil
	}
	// When rows went to disk, or one bucket is larger than a sort buffer,
	// move the rest to disk too: the blocks are then free for sorting.
	spill := false
	for k := range buckets {
		spill = spill || srcs[k].n > b.sortLimit
	}
	for _, p := range b.parts {
		spill = spill || len(p.runs) > 0
	}
	if spill {
		for _, p := range b.parts {
			if err := p.spillAll(); err != nil {
				return nil, 0, 0, err
			}
		}
		srcs = make([]source, buckets)
		for k := range buckets {
			for _, p := range b.parts {
				srcs[k].addPartition(p, k)
			}
		}
	}

	workers := b.s.cfg.Workers
	// Enough tables to keep every worker busy to the end, each at most
	// ~4M rows (~100 MB).
	target := min(max(total/int64(8*workers), 64<<10), 4<<20)
	var groups []*group
	for k := 0; k < buckets; {
		g := &group{first: k}
		var n int64
		for ; k < buckets && (n == 0 || n+srcs[k].n <= target); k++ {
			n += srcs[k].n
		}
		g.last = k - 1
		g.srcs = srcs[g.first : g.last+1]
		g.path = filepath.Join(b.dir, fmt.Sprintf("%03d.sst", g.first))
		groups = append(groups, g)
	}

	wopts := b.s.writerOptions()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, len(groups)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := b.newTableWriter(wopts)
			for {
				i := int(next.Add(1) - 1)
				if i >= len(groups) || ctx.Err() != nil {
					return
				}
				if err := w.writeGroup(ctx, groups[i]); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, 0, 0, err
	}
	for _, g := range groups {
		rows += g.rows
		dups += g.dups
		if g.written {
			files = append(files, g.path)
		}
	}
	return files, rows, dups, nil
}

func (s *Store) writerOptions() sstable.WriterOptions {
	// Row blocks (Pebblev3) rather than the newest columnar format: a Get
	// of a columnar (or v4) table allocates to hide obsolete points, and
	// point lookups measured no faster on them (BenchmarkLookup).
	return s.opts.MakeWriterOptions(6, sstable.TableFormatPebblev3)
}

// tableWriter sorts buckets and writes SSTables; one per goroutine.
type tableWriter struct {
	b       *Batch
	opts    sstable.WriterOptions
	sorted  []rec
	scratch []rec
	io      []byte
	key     [keyLen]byte
	val     []byte
	w       *sstable.Writer
	g       *group
}

func (b *Batch) newTableWriter(opts sstable.WriterOptions) *tableWriter {
	t := &tableWriter{b: b, opts: opts, io: make([]byte, 256*recSize)}
	p := versionPrefix(b.info.Version)
	copy(t.key[:], p[:])
	return t
}

func (t *tableWriter) writeGroup(ctx context.Context, g *group) error {
	t.g = g
	defer func() {
		if t.w != nil {
			_ = t.w.Close()
			t.w = nil
		}
	}()
	for k := range g.srcs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := t.emit(&g.srcs[k], 0); err != nil {
			return err
		}
		t.b.done.Add(g.srcs[k].n)
	}
	if t.w == nil {
		return nil
	}
	err := t.w.Close()
	t.w = nil
	if err != nil {
		return fmt.Errorf("cannot write SSTable: %w", err)
	}
	g.written = true
	return nil
}

// emit writes the rows of src, a bucket at depth, in key order, keeping the
// last of duplicates.
func (t *tableWriter) emit(src *source, depth int) error {
	switch {
	case src.n == 0:
		return nil
	case src.n <= t.b.sortLimit:
		rows, err := t.load(src)
		if err != nil {
			return err
		}
		return t.writeSorted(t.sort(rows, depth+1))
	case depth == 15:
		// Every row has the same ID: keep the last one.
		var last rec
		if err := src.each(t.io, func(r *rec) error {
			if r.seq >= last.seq {
				last = *r
			}
			return nil
		}); err != nil {
			return err
		}
		t.g.dups += src.n - 1
		return t.put(&last)
	}
	// Too large to sort at once: split by the next byte of the ID, on
	// disk as needed, and emit the parts in order.
	sub := &partition{depth: depth + 1, pool: t.b.pool, dir: t.b.dir}
	defer sub.release()
	if err := src.each(t.io, sub.add); err != nil {
		return err
	}
	for k := range buckets {
		var s source
		s.addPartition(sub, k)
		if err := t.emit(&s, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// load copies the rows of src into the sort buffer.
func (t *tableWriter) load(src *source) ([]rec, error) {
	if int64(cap(t.sorted)) < src.n {
		t.sorted = make([]rec, src.n, src.n+src.n/8)
	}
	rows := t.sorted[:0]
	for _, b := range src.blocks {
		rows = append(rows, b.recs[:b.n]...)
	}
	if len(src.segs) == 0 {
		return rows, nil
	}
	err := src.eachSpilled(t.io, func(r *rec) error {
		rows = append(rows, *r)
		return nil
	})
	return rows, err
}

// sort sorts rows, which share their first depth bytes, by ID then seq.
// The result is in rows.
func (t *tableWriter) sort(rows []rec, depth int) []rec {
	if cap(t.scratch) < len(rows) {
		t.scratch = make([]rec, len(rows), len(rows)+len(rows)/8)
	}
	radixSort(rows, t.scratch[:len(rows)], depth)
	return rows
}

// radixSort sorts a, whose rows share their first depth bytes, by ID then
// seq, using b (as long as a) as scratch. It distributes the rows by the
// byte at depth, recursively; the IDs are random, so parts shrink 256-fold
// per level and small ones are insertion-sorted.
func radixSort(a, b []rec, depth int) {
	if depth > 15 {
		// Every row has the same ID. Only the order of the last one
		// matters (it wins), so move it to the end in one pass rather
		// than sort: many copies of one ID would be quadratic.
		last := 0
		for i := range a {
			if a[i].seq > a[last].seq {
				last = i
			}
		}
		a[last], a[len(a)-1] = a[len(a)-1], a[last]
		return
	}
	if len(a) <= 48 {
		insertionSort(a)
		return
	}
	var count [buckets + 1]int
	for i := range a {
		count[a[i].radix(depth)+1]++
	}
	for k := 1; k <= buckets; k++ {
		count[k] += count[k-1]
	}
	pos := count
	for i := range a {
		k := a[i].radix(depth)
		b[pos[k]] = a[i]
		pos[k]++
	}
	copy(a, b)
	for k := range buckets {
		if lo, hi := count[k], count[k+1]; hi-lo > 1 {
			radixSort(a[lo:hi], b[lo:hi], depth+1)
		}
	}
}

func insertionSort(a []rec) {
	for i := 1; i < len(a); i++ {
		x := a[i]
		j := i
		for ; j > 0 && less(&x, &a[j-1]); j-- {
			a[j] = a[j-1]
		}
		a[j] = x
	}
}

func less(x, y *rec) bool {
	if x.hi != y.hi {
		return x.hi < y.hi
	}
	if x.lo != y.lo {
		return x.lo < y.lo
	}
	return x.seq < y.seq
}

// writeSorted writes rows sorted by ID then seq, dropping all but the last
// of each run of equal IDs.
func (t *tableWriter) writeSorted(rows []rec) error {
	for i := range rows {
		if i+1 < len(rows) && rows[i+1].hi == rows[i].hi && rows[i+1].lo == rows[i].lo {
			t.g.dups++
			continue
		}
		if err := t.put(&rows[i]); err != nil {
			return err
		}
	}
	return nil
}

func (t *tableWriter) put(r *rec) error {
	if t.w == nil {
		f, err := newFileWritable(t.g.path)
		if err != nil {
			return err
		}
		t.w = sstable.NewWriter(f, t.opts)
	}
	binary.BigEndian.PutUint64(t.key[prefixLen:], r.hi)
	binary.BigEndian.PutUint64(t.key[prefixLen+8:], r.lo)
	t.val = promotion.AppendValue(t.val[:0], &promotion.Record{PriceMicros: r.price, Expires: r.exp})
	t.g.rows++
	if err := t.w.Set(t.key[:], t.val); err != nil {
		return fmt.Errorf("cannot write SSTable: %w", err)
	}
	return nil
}
