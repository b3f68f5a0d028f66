package pebblestore

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/sstable"

	"github.com/promotion-service/promo/promotion"
)

// This file turns the rows of a batch into SSTables when it commits:
// consecutive buckets grouped into tables, each sorted and written by one
// of several goroutines.

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
	srcs, total, err := b.sources()
	if err != nil || total == 0 {
		return nil, 0, 0, err
	}
	groups := b.planGroups(srcs, total)
	if err := b.writeGroups(ctx, groups); err != nil {
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

// sources returns the rows of each bucket and their total. When one
// bucket is larger than a sort buffer, it moves every row to disk: the
// blocks are then free for splitting that bucket further (emit). Otherwise
// the rows still in memory stay there, beside the runs of earlier spills:
// the sort buffers are budgeted apart from the blocks, and writing those
// rows to disk only to read them back cost a single-threaded spill of a
// whole pool at the start of the commit (20M rows: ~170 MB) while the other
// core idled.
func (b *Batch) sources() ([]source, int64, error) {
	srcs := b.collect()
	var total int64
	for k := range srcs {
		total += srcs[k].n
	}
	b.total.Store(total)
	if total == 0 {
		return nil, 0, nil
	}
	spill := false
	for k := range srcs {
		spill = spill || srcs[k].n > b.sortLimit
	}
	if err := b.space.check(total*tableBytesPerRow, fmt.Sprintf("writing the SSTables of %d rows", total)); err != nil {
		return nil, 0, err
	}
	if !spill {
		return srcs, total, nil
	}
	for _, p := range b.parts {
		if err := p.spillAll(); err != nil {
			return nil, 0, err
		}
	}
	return b.collect(), total, nil
}

// collect gathers the rows of each bucket from every partition.
func (b *Batch) collect() []source {
	srcs := make([]source, buckets)
	for k := range buckets {
		for _, p := range b.parts {
			srcs[k].addPartition(p, k)
		}
	}
	return srcs
}

// planGroups cuts the buckets into runs of consecutive buckets, one SSTable
// each: enough tables to keep every worker busy to the end, each at most
// ~4M rows (~100 MB).
func (b *Batch) planGroups(srcs []source, total int64) []*group {
	target := min(max(total/int64(8*b.s.cfg.Workers), 64<<10), 4<<20)
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
	return groups
}

// writeGroups writes the table of every group on up to Workers
// goroutines, each taking the next unwritten group; the first error stops
// them all.
func (b *Batch) writeGroups(ctx context.Context, groups []*group) error {
	wopts := b.s.writerOptions()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(b.s.cfg.Workers, len(groups)) {
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
	return context.Cause(ctx)
}

func (s *Store) writerOptions() sstable.WriterOptions {
	// Row blocks (Pebblev3) rather than the newest columnar format: a Get
	// of a columnar (or v4) table allocates to hide obsolete points, and
	// point lookups measured no faster on them (lookup.BenchmarkLookup).
	o := s.opts.MakeWriterOptions(6, sstable.TableFormatPebblev3)
	// One index block per table: the fast read path (table.go) reads
	// single-level indexes only, and a lookup then searches two blocks.
	o.IndexBlockSize = math.MaxInt32
	return o
}

// tableWriter sorts buckets and writes SSTables; one per goroutine.
type tableWriter struct {
	b       *Batch
	opts    sstable.WriterOptions
	sorted  []promotion.Row
	ahead   []promotion.Row // the second buffer of emitGroup
	scratch []promotion.Row
	count   []int32 // wideSort's counters
	io      []byte
	aheadIO []byte // emitGroup's reader's
	key     [keyLen]byte
	val     []byte
	w       *sstable.Writer
	g       *group
}

func (b *Batch) newTableWriter(opts sstable.WriterOptions) *tableWriter {
	t := &tableWriter{b: b, opts: opts, io: alignedBuf(spillRead), aheadIO: alignedBuf(spillRead)}
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
	if err := t.emitGroup(ctx, g); err != nil {
		return err
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

// emitGroup writes the buckets of g in order. When each of them fits a
// sort buffer, a second goroutine reads the next bucket (spill files are
// read past the page cache, from disk) while this one sorts and encodes
// the current one: two buffers take turns, handed over on channels.
func (t *tableWriter) emitGroup(ctx context.Context, g *group) error {
	ahead := true
	for k := range g.srcs {
		ahead = ahead && g.srcs[k].n <= t.b.sortLimit
	}
	if !ahead || len(g.srcs) < 2 {
		for k := range g.srcs {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := t.emit(&g.srcs[k], 0); err != nil {
				return err
			}
			t.b.done.Add(g.srcs[k].n)
		}
		return nil
	}
	type loaded struct {
		rows []promotion.Row
		err  error
	}
	free := make(chan []promotion.Row, 2)
	free <- t.sorted
	free <- t.ahead
	ready := make(chan loaded, 1)
	stop := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for k := range g.srcs {
			var buf []promotion.Row
			select {
			case buf = <-free:
			case <-stop:
				return
			}
			rows, err := loadInto(buf, &g.srcs[k], t.aheadIO)
			select {
			case ready <- loaded{rows, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		<-exited
		// Keep the buffers, grown as needed, for the next group.
		t.sorted, t.ahead = nil, nil
		for len(free) > 0 {
			if b := <-free; t.sorted == nil {
				t.sorted = b
			} else {
				t.ahead = b
			}
		}
	}()
	for k := range g.srcs {
		if err := ctx.Err(); err != nil {
			return err
		}
		l := <-ready
		if l.err != nil {
			return l.err
		}
		err := t.writeSorted(t.sort(l.rows, 1))
		free <- l.rows
		if err != nil {
			return err
		}
		t.b.done.Add(g.srcs[k].n)
	}
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
		var last promotion.Row
		if err := src.each(t.io, func(r *promotion.Row) error {
			if r.Seq >= last.Seq {
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
func (t *tableWriter) load(src *source) ([]promotion.Row, error) {
	rows, err := loadInto(t.sorted, src, t.io)
	t.sorted = rows
	return rows, err
}

// loadInto copies the rows of src into buf, grown as needed, and returns
// them; io is scratch space for reading runs.
func loadInto(buf []promotion.Row, src *source, io []byte) ([]promotion.Row, error) {
	if int64(cap(buf)) < src.n {
		buf = make([]promotion.Row, 0, src.n+src.n/8)
	}
	rows := buf[:0]
	for _, b := range src.blocks {
		rows = append(rows, b.recs[:b.n]...)
	}
	if len(src.segs) == 0 {
		return rows, nil
	}
	err := src.eachSpilled(io, func(r *promotion.Row) error {
		rows = append(rows, *r)
		return nil
	})
	return rows, err
}

// sort sorts rows, which share their first depth bytes, by ID then seq.
// The result is in rows or in t's scratch, valid until the next sort.
func (t *tableWriter) sort(rows []promotion.Row, depth int) []promotion.Row {
	if cap(t.scratch) < len(rows) {
		t.scratch = make([]promotion.Row, len(rows), len(rows)+len(rows)/8)
	}
	if t.count == nil && len(rows) >= wideMin {
		t.count = make([]int32, 1<<16+1)
	}
	return sortRows(rows, t.scratch[:len(rows)], depth, t.count)
}

// writeSorted writes rows sorted by ID then seq, dropping all but the last
// of each run of equal IDs.
func (t *tableWriter) writeSorted(rows []promotion.Row) error {
	for i := range rows {
		if i+1 < len(rows) && rows[i+1].ID == rows[i].ID {
			t.g.dups++
			continue
		}
		if err := t.put(&rows[i]); err != nil {
			return err
		}
	}
	return nil
}

func (t *tableWriter) put(r *promotion.Row) error {
	if t.w == nil {
		f, err := newFileWritable(t.g.path)
		if err != nil {
			return err
		}
		t.w = sstable.NewWriter(f, t.opts)
	}
	copy(t.key[prefixLen:], r.ID[:])
	t.val = promotion.AppendValue(t.val[:0], &r.Record)
	t.g.rows++
	if err := t.w.Set(t.key[:], t.val); err != nil {
		return fmt.Errorf("cannot write SSTable: %w", err)
	}
	return nil
}
