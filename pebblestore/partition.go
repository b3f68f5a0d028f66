package pebblestore

import (
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

// run is a spill file: the rows of every bucket, bucket after bucket,
// padded to a multiple of spillAlign.
type run struct {
	f   *os.File
	off [buckets]int64 // byte offset of each bucket's rows
	n   [buckets]int64 // row count of each bucket
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
		p.spill = &spiller{buf: alignedBuf(spillWrite + promotion.RowLen)}
	}
	f, err := os.CreateTemp(p.dir, "spill-*.run")
	if err != nil {
		return fmt.Errorf("cannot create spill file: %w", err)
	}
	// The file is only reachable through the open descriptor, so it goes
	// away with the process whatever happens.
	_ = os.Remove(f.Name())
	directIO(f)
	r := &run{f: f}
	w := p.spill
	w.reset(f)
	for k := range buckets {
		r.off[k] = w.offset()
		for _, b := range p.heads[k] {
			for i := range b.n {
				if err := w.put(&b.recs[i]); err != nil {
					_ = f.Close()
					return err
				}
			}
			r.n[k] += int64(b.n)
			p.pool.put(b)
		}
		p.heads[k] = p.heads[k][:0]
	}
	w.pad()
	if err := w.flush(); err != nil {
		_ = f.Close()
		return err
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

// Spill files are written and read in units aligned to spillAlign, so
// that they can bypass the page cache (directIO): written once and read
// once, their rows gain nothing from it, and on this VM filling fresh
// page-cache pages cost more CPU than encoding the rows (write(2) ran at
// ~350-450 MB/s of system time).
const (
	spillAlign = 4096
	// spillWrite is the size of a spill file write.
	spillWrite = 1 << 20
	// spillRead is the size of a spill file read: a bucket's rows in a
	// run of a 20M-row import (~600 KB) take one read rather than three.
	spillRead = 1 << 20
)

// alignedBuf returns a buffer of n bytes that starts at a multiple of
// spillAlign.
func alignedBuf(n int) []byte {
	b := make([]byte, n+spillAlign)
	skip := (spillAlign - int(uintptr(unsafe.Pointer(&b[0]))%spillAlign)) % spillAlign
	return b[skip : skip+n : skip+n]
}

// spiller encodes rows into an aligned buffer and writes it to a run in
// spillWrite units; its buffer is reused from one run to the next.
type spiller struct {
	f   *os.File
	buf []byte // spillWrite plus room for the row that crosses the limit
	off int64  // bytes written to f
}

func (s *spiller) reset(f *os.File) {
	s.f, s.buf, s.off = f, s.buf[:0], 0
}

// offset is where the next row goes in the file.
func (s *spiller) offset() int64 { return s.off + int64(len(s.buf)) }

func (s *spiller) put(r *promotion.Row) error {
	n := len(s.buf)
	s.buf = s.buf[:n+promotion.RowLen]
	promotion.PutRow(s.buf[n:], r)
	if len(s.buf) < spillWrite {
		return nil
	}
	if err := s.write(s.buf[:spillWrite]); err != nil {
		return err
	}
	s.buf = s.buf[:copy(s.buf, s.buf[spillWrite:])]
	return nil
}

// pad fills the buffer with zeros up to the next multiple of spillAlign.
func (s *spiller) pad() {
	n := len(s.buf)
	end := (n + spillAlign - 1) / spillAlign * spillAlign
	s.buf = s.buf[:end]
	clear(s.buf[n:end])
}

// flush writes the buffer, which pad has aligned.
func (s *spiller) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	if err := s.write(s.buf); err != nil {
		return err
	}
	s.buf = s.buf[:0]
	return nil
}

func (s *spiller) write(b []byte) error {
	n, err := s.f.WriteAt(b, s.off)
	if err != nil && retryBuffered(s.f, err) {
		_, err = s.f.WriteAt(b[n:], s.off+int64(n))
	}
	if err != nil {
		return fmt.Errorf("cannot write spill file: %w", err)
	}
	s.off += int64(len(b))
	return nil
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
		if n := r.n[k]; n > 0 {
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

// eachSpilled calls fn for every row of s in runs. buf is aligned
// (alignedBuf) and a multiple of spillAlign long.
func (s *source) eachSpilled(buf []byte, fn func(*promotion.Row) error) error {
	var r promotion.Row
	var carry [promotion.RowLen]byte // a row cut by the end of a read
	for _, sg := range s.segs {
		// Read whole aligned units from the one holding the first row;
		// the bytes around the segment's rows are read and skipped.
		pos := sg.off / spillAlign * spillAlign
		skip := sg.off - pos
		end := sg.off + sg.n*promotion.RowLen
		cut := 0
		for pos < end {
			n := min(int64(len(buf)), (end-pos+spillAlign-1)/spillAlign*spillAlign)
			_, err := sg.run.f.ReadAt(buf[:n], pos)
			if err != nil && retryBuffered(sg.run.f, err) {
				_, err = sg.run.f.ReadAt(buf[:n], pos)
			}
			if err != nil {
				return fmt.Errorf("cannot read spill file: %w", err)
			}
			data := buf[skip:min(n, end-pos)]
			pos += n
			skip = 0
			if cut > 0 {
				// The segment holds whole rows, so the rest of this one
				// is here.
				k := copy(carry[cut:], data)
				data = data[k:]
				promotion.DecodeRow(carry[:], &r)
				if err := fn(&r); err != nil {
					return err
				}
			}
			whole := len(data) / promotion.RowLen * promotion.RowLen
			for i := 0; i < whole; i += promotion.RowLen {
				promotion.DecodeRow(data[i:], &r)
				if err := fn(&r); err != nil {
					return err
				}
			}
			cut = copy(carry[:], data[whole:])
		}
	}
	return nil
}
