package pebblestore

import (
	"fmt"
	"os"
	"sync"

	"github.com/cockroachdb/pebble/v2/objstorage"
)

// fileWritable is the objstorage.Writable of the SSTables an import
// writes. Unlike Pebble's own, it writes in large chunks and starts the
// kernel's write-back of each chunk at once, so that the disk works while
// the CPUs sort and encode; Finish then waits only for the tail before its
// fsync, which Ingest requires.
//
// The chunks are 2 MiB, written at 2 MiB-aligned offsets: the kernel
// (ext4 since Linux 6.16, XFS) then caches each as one 2 MiB folio, which
// the fast read path's mapping of the table maps as a huge page, one TLB
// entry instead of 512. Random lookups at 20M rows spent most of their
// time in TLB and cache misses of the mapping before.
type fileWritable struct {
	f       *os.File
	buf     []byte
	off     int64 // bytes written to f
	flushed int64 // bytes whose write-back has been started
}

var _ objstorage.Writable = (*fileWritable)(nil)

const (
	writeChunk     = 2 << 20
	writebackChunk = 4 << 20
)

// chunks holds the write buffers of finished writers: an import writes
// hundreds of tables, each of which would otherwise allocate its own.
var chunks = sync.Pool{New: func() any { return new([writeChunk]byte) }}

func newFileWritable(path string) (*fileWritable, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot create SSTable: %w", err)
	}
	return &fileWritable{f: f, buf: chunks.Get().(*[writeChunk]byte)[:0]}, nil
}

// Write implements objstorage.Writable.
func (w *fileWritable) Write(p []byte) error {
	if w.buf == nil {
		return fmt.Errorf("cannot write SSTable %s: already finished", w.f.Name())
	}
	for len(p) > 0 {
		n := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+n]
		p = p[n:]
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *fileWritable) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if _, err := w.f.Write(w.buf); err != nil {
		return fmt.Errorf("cannot write SSTable: %w", err)
	}
	w.off += int64(len(w.buf))
	w.buf = w.buf[:0]
	if w.off-w.flushed >= writebackChunk {
		startWriteback(w.f, w.flushed, w.off-w.flushed)
		w.flushed = w.off
	}
	return nil
}

// Finish implements objstorage.Writable: the file is durable when it
// returns.
func (w *fileWritable) Finish() error {
	err := w.flush()
	w.release()
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cannot finish SSTable: %w", err)
	}
	return nil
}

// Abort implements objstorage.Writable.
func (w *fileWritable) Abort() {
	w.release()
	_ = w.f.Close()
	_ = os.Remove(w.f.Name())
}

// release returns the write buffer to the pool; the writer writes no more.
func (w *fileWritable) release() {
	if w.buf != nil {
		chunks.Put((*[writeChunk]byte)(w.buf[:writeChunk]))
		w.buf = nil
	}
}
