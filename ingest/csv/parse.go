package csv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/promotion-service/promo/promotion"
)

// The sentinels keep the "ingest:" prefix they had before the reader moved
// to this package: import statuses show their text.
var (
	// ErrTooManyRejected ends a Parse whose rejected rows exceed
	// Config.MaxRejected.
	ErrTooManyRejected = errors.New("ingest: too many rejected rows")
	// ErrRecordTooLong is returned for a record longer than the read
	// buffer, which in practice means an unterminated quote or a binary
	// file.
	ErrRecordTooLong = errors.New("ingest: record too long")
)

// RowSink receives the rows that Parse accepts. Add is called concurrently
// with distinct worker numbers; line orders duplicates (the last one wins).
// The record belongs to the caller: Add must copy what it keeps before it
// returns.
type RowSink interface {
	Add(worker int, r *promotion.Record, line int64) error
}

// Config tunes Parse.
type Config struct {
	// Workers is the number of goroutines that validate rows; RowSink.Add
	// sees worker numbers in [0, Workers).
	Workers int
	// ChunkSize is the size of a read; no record may be longer.
	ChunkSize int
	// MaxRejected is how many rejected rows are tolerated; one more fails
	// the parse with ErrTooManyRejected.
	MaxRejected int64
	// MaxErrors is how many rejected rows Progress keeps, those with the
	// lowest line numbers. Once the parse is bound to fail, the input is
	// read on only until that many are known.
	MaxErrors int
	// Interrupt, if set, is called when parsing stops before the end of
	// the input (an error, too many rejected rows, a shutdown), to unblock
	// a Read that may be waiting on a slow client.
	Interrupt func()
}

// Progress is the live progress of one Parse. Its zero value is ready to
// use; its methods are safe to call from other goroutines while the parse
// runs.
type Progress struct {
	bytesRead atomic.Int64
	accepted  atomic.Int64
	rejected  atomic.Int64
	// failing is set once more rows are rejected than tolerated: the
	// parse will fail, rows are no longer handed to the sink, and the
	// input is read on only until MaxErrors errors are known.
	failing atomic.Bool
	// stopped is set when reading stopped before the end for that reason.
	stopped atomic.Bool
	errs    errorLog
}

// BytesRead returns how much of the input has been read.
func (p *Progress) BytesRead() int64 { return p.bytesRead.Load() }

// Accepted returns how many rows have been accepted.
func (p *Progress) Accepted() int64 { return p.accepted.Load() }

// Rejected returns how many rows have been rejected.
func (p *Progress) Rejected() int64 { return p.rejected.Load() }

// Stopped reports whether reading stopped before the end of the input
// because the parse was bound to fail and MaxErrors errors were known.
func (p *Progress) Stopped() bool { return p.stopped.Load() }

// Errors returns a copy of the rejected rows kept so far, in line order.
func (p *Progress) Errors() []RowError { return p.errs.snapshot() }

// chunk is a run of whole records of the input.
type chunk struct {
	buf   []byte
	data  []byte
	line  int64 // line number of the first byte of data
	first bool  // data starts the input, where a header may be
}

// Parse streams CSV records from r, validates them in parallel and hands
// the good ones to sink, reporting to prog as it goes. It returns when the
// input is consumed, or at the first read error, sink error or rejected
// row beyond the tolerance. A Progress serves one Parse.
func Parse(ctx context.Context, r io.Reader, sink RowSink, cfg Config, prog *Progress) error {
	prog.errs.setMax(cfg.MaxErrors)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if cfg.Interrupt != nil {
		// Unregistered before the deferred cancel runs.
		defer context.AfterFunc(ctx, cfg.Interrupt)()
	}
	bufs := make(chan []byte, cfg.Workers+2)
	for range cap(bufs) {
		bufs <- make([]byte, cfg.ChunkSize)
	}
	chunks := make(chan *chunk, cfg.Workers)
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rp rowParser
			for ch := range chunks {
				if ctx.Err() == nil {
					if err := parseChunk(ch, w, &rp, sink, cfg, prog); err != nil {
						cancel(err)
					}
				}
				bufs <- ch.buf
			}
		}()
	}
	err := split(ctx, &countingReader{r: r, n: &prog.bytesRead}, bufs, chunks, &prog.stopped)
	// The chunks already handed out are parsed to the end, so that the
	// errors kept are the first ones of the file.
	close(chunks)
	wg.Wait()
	if err != nil {
		cancel(err)
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if prog.failing.Load() {
		return ErrTooManyRejected
	}
	return nil
}

// split reads r into chunks that end on record boundaries. It stops before
// reading more when stop is set, with ErrTooManyRejected.
func split(ctx context.Context, r io.Reader, bufs chan []byte, chunks chan<- *chunk, stop *atomic.Bool) error {
	var buf []byte
	select {
	case buf = <-bufs:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	n := 0
	line := int64(1)
	first := true
	for {
		if stop != nil && stop.Load() {
			return ErrTooManyRejected
		}
		m, err := fill(r, buf[n:])
		n += m
		// Only a clean end of file ends the input: a reader that fails
		// with io.ErrUnexpectedEOF (a cut upload) fails the parse.
		eof := err == io.EOF
		if err != nil && !eof {
			return fmt.Errorf("cannot read input: %w", err)
		}
		data := buf[:n]
		start := 0
		// Only the first read is at line 1: every chunk ends with a line end.
		if line == 1 && bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
			start = 3
		}
		cut := n
		if !eof {
			cut = start + lastRecordEnd(data[start:])
			if cut == start {
				return fmt.Errorf("%w: line %d: no end of record within %d bytes (an unterminated quote?)", ErrRecordTooLong, line, len(buf))
			}
		}
		var next []byte
		if !eof {
			select {
			case next = <-bufs:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		rest := copy(next, data[cut:])
		ch := &chunk{buf: buf, data: data[start:cut], line: line, first: first}
		line += int64(bytes.Count(ch.data, []byte{'\n'}))
		// A header may follow more blank lines than fit one chunk.
		first = first && len(bytes.Trim(ch.data, " \t\r\n")) == 0
		select {
		case chunks <- ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if eof {
			return nil
		}
		buf, n = next, rest
	}
}

// fill reads from r until buf is full, and returns io.EOF only when r
// ended cleanly before that. Unlike io.ReadFull, it never turns a clean
// end into io.ErrUnexpectedEOF, so that the error of a cut upload stays
// distinguishable.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// lastRecordEnd returns the length of the complete records at the start of
// data: up to the last line end that is not inside a quoted field.
func lastRecordEnd(data []byte) int {
	if bytes.IndexByte(data, '"') < 0 {
		return bytes.LastIndexByte(data, '\n') + 1
	}
	end := 0
	for end < len(data) {
		n, _, complete := nextRecord(data[end:])
		if !complete {
			break
		}
		end += n
	}
	return end
}

// nextRecord finds the first record of data. It returns its length with the
// line end, the number of line ends in it, and whether it is complete: a
// record without a line end may continue in the next read.
func nextRecord(data []byte) (n, lines int, complete bool) {
	i := bytes.IndexByte(data, '\n')
	if i < 0 {
		i = len(data)
	}
	if bytes.IndexByte(data[:i], '"') < 0 {
		if i == len(data) {
			return len(data), 0, false
		}
		return i + 1, 1, true
	}
	// RFC 4180: a quote opens a quoted field only at the start of the
	// field; inside one, "" is a quote and line ends are data.
	fieldStart, inQuote := true, false
	for j := 0; j < len(data); j++ {
		c := data[j]
		if inQuote {
			switch c {
			case '"':
				if j+1 == len(data) {
					return len(data), lines, false
				}
				if data[j+1] == '"' {
					j++
					continue
				}
				inQuote = false
			case '\n':
				lines++
			}
			continue
		}
		switch c {
		case '"':
			if fieldStart {
				inQuote = true
			}
			fieldStart = false
		case ',':
			fieldStart = true
		case '\n':
			return j + 1, lines + 1, true
		case ' ', '\t':
		default:
			fieldStart = false
		}
	}
	return len(data), lines, false
}

// parseChunk validates the records of ch and adds the good ones to sink.
func parseChunk(ch *chunk, worker int, p *rowParser, sink RowSink, cfg Config, prog *Progress) error {
	data := ch.data
	line := ch.line
	header := ch.first
	var accepted, rejected int64
	defer func() {
		prog.accepted.Add(accepted)
		prog.rejected.Add(rejected)
	}()
	var r promotion.Record
	for len(data) > 0 {
		n, lines, complete := nextRecord(data)
		rec := data[:n]
		if complete {
			rec = rec[:len(rec)-1]
		}
		// A CR before the LF, or before the end of the input.
		if len(rec) > 0 && rec[len(rec)-1] == '\r' {
			rec = rec[:len(rec)-1]
		}
		field, reason, value, blank := p.parse(rec, &r)
		switch {
		case blank:
		case header && isHeader(p):
			header = false
		case reason != "":
			header = false
			rejected++
			total := prog.errs.add(RowError{Line: line, Field: field, Reason: reason, Value: string(value)})
			if total > cfg.MaxRejected {
				prog.failing.Store(true)
				if total >= int64(cfg.MaxErrors) {
					prog.stopped.Store(true)
				}
			}
		default:
			header = false
			accepted++
			if prog.failing.Load() {
				break // the parse fails: no use storing rows
			}
			if err := sink.Add(worker, &r, line); err != nil {
				return err
			}
		}
		data = data[n:]
		line += int64(lines)
	}
	return nil
}

// isHeader reports whether the record p last split starts with the column
// name id.
func isHeader(p *rowParser) bool {
	return bytes.EqualFold(p.fields[0], []byte("id"))
}

// errorLog keeps the rejected rows with the lowest line numbers and counts
// all of them.
type errorLog struct {
	mu    sync.Mutex
	max   int
	errs  []RowError
	total int64
}

// setMax sets how many errors l keeps.
func (l *errorLog) setMax(max int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.max = max
}

// add records e and returns how many rows have been rejected so far.
func (l *errorLog) add(e RowError) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	switch {
	case len(l.errs) < l.max:
	case l.max > 0 && e.Line < l.errs[len(l.errs)-1].Line:
		l.errs = l.errs[:len(l.errs)-1]
	default:
		return l.total
	}
	i, _ := slices.BinarySearchFunc(l.errs, e.Line, func(x RowError, line int64) int { return int(x.Line - line) })
	l.errs = slices.Insert(l.errs, i, e)
	return l.total
}

// snapshot returns a copy of the kept errors, in line order.
func (l *errorLog) snapshot() []RowError {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.errs)
}

// countingReader counts the bytes read from r into n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
