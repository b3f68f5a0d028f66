package pebblestore

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"github.com/promotion-service/promo/promotion"
)

// This file holds the rows of a batch until it commits: radix partitions
// of fixed-size blocks, spilled to run files when the memory budget runs
// out.

const (
	// rowSize is the memory one row takes in a block or a sort buffer;
	// on disk it takes promotion.RowLen bytes.
	rowSize   = int64(unsafe.Sizeof(promotion.Row{}))
	blockRecs = 512
	blockSize = blockRecs * rowSize
	buckets   = 256
)

// block is a fixed array of rows; a bucket is a list of blocks. A block
// holds no pointers, so the garbage collector never scans one.
type block struct {
	n    int
	recs [blockRecs]promotion.Row
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
	space *spaceGuard // nil: not checked
}

// add appends r to its bucket, spilling every bucket of p first when the
// pool is exhausted.
func (p *partition) add(r *promotion.Row) error {
	k := int(r.ID[p.depth])
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
	if p.space != nil {
		var n int64
		for k := range buckets {
			for _, b := range p.heads[k] {
				n += int64(b.n)
			}
		}
		if err := p.space.beforeSpill(n); err != nil {
			return err
		}
	}
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
	var buf [promotion.RowLen]byte
	for k := range buckets {
		r.off[k] = off
		for _, b := range p.heads[k] {
			for i := range b.n {
				promotion.PutRow(buf[:], &b.recs[i])
				if _, err := w.Write(buf[:]); err != nil {
					_ = f.Close()
					return fmt.Errorf("cannot write spill file: %w", err)
				}
				off += promotion.RowLen
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
		if n := (r.off[k+1] - r.off[k]) / promotion.RowLen; n > 0 {
			s.segs = append(s.segs, segment{run: r, off: r.off[k], n: n})
			s.n += n
		}
	}
}

// each calls fn for every row of s; buf is scratch space for reading runs.
func (s *source) each(buf []byte, fn func(*promotion.Row) error) error {
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
func (s *source) eachSpilled(buf []byte, fn func(*promotion.Row) error) error {
	var r promotion.Row
	for _, sg := range s.segs {
		left := sg.n * promotion.RowLen
		off := sg.off
		for left > 0 {
			chunk := buf[:min(int64(len(buf)), left)]
			if _, err := sg.run.f.ReadAt(chunk, off); err != nil {
				return fmt.Errorf("cannot read spill file: %w", err)
			}
			for i := 0; i < len(chunk); i += promotion.RowLen {
				promotion.DecodeRow(chunk[i:], &r)
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
