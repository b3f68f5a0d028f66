package csv

import (
	"bytes"
	"context"
	stdcsv "encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/promotion-service/promo/promotion"
)

// collectSink keeps every row it is given, by line. It is safe for
// concurrent use and fails the parse if two calls share a worker number at
// the same time or a line is added twice.
type collectSink struct {
	workers int
	mu      sync.Mutex
	rows    map[int64]promotion.Record
	busy    map[int]bool
	err     error
	// onAdd, when set, is called after each row with the number of rows so
	// far; its error is returned by Add.
	onAdd func(n int) error
}

func newCollectSink(workers int) *collectSink {
	return &collectSink{workers: workers, rows: make(map[int64]promotion.Record), busy: make(map[int]bool)}
}

func (s *collectSink) Add(worker int, r *promotion.Record, line int64) error {
	s.mu.Lock()
	if worker < 0 || worker >= s.workers {
		s.err = fmt.Errorf("worker %d out of [0, %d)", worker, s.workers)
	}
	if s.busy[worker] {
		s.err = fmt.Errorf("worker %d used by two goroutines at once", worker)
	}
	if _, dup := s.rows[line]; dup {
		s.err = fmt.Errorf("line %d added twice", line)
	}
	s.busy[worker] = true
	s.rows[line] = *r // the record is reused by the caller: copy it
	n := len(s.rows)
	s.mu.Unlock()
	// Let another worker in while this one is "busy".
	runtime.Gosched()
	s.mu.Lock()
	s.busy[worker] = false
	s.mu.Unlock()
	if s.onAdd != nil {
		return s.onAdd(n)
	}
	return nil
}

type parseResult struct {
	rows      map[int64]promotion.Record
	errs      []RowError
	accepted  int64
	rejected  int64
	bytesRead int64
	err       error
}

// runParse runs Parse over r with a collecting sink and checks the
// invariants every run must keep.
func runParse(t testing.TB, r io.Reader, cfg Config) parseResult {
	t.Helper()
	return runParseCtx(t, context.Background(), r, cfg, nil)
}

func runParseCtx(t testing.TB, ctx context.Context, r io.Reader, cfg Config, onAdd func(int) error) parseResult {
	t.Helper()
	sink := newCollectSink(cfg.Workers)
	sink.onAdd = onAdd
	var prog Progress
	err := Parse(ctx, r, sink, cfg, &prog)
	if sink.err != nil {
		t.Fatalf("sink: %v", sink.err)
	}
	res := parseResult{
		rows:      sink.rows,
		errs:      prog.Errors(),
		accepted:  prog.Accepted(),
		rejected:  prog.Rejected(),
		bytesRead: prog.BytesRead(),
		err:       err,
	}
	if prog.errs.total != res.rejected {
		t.Fatalf("errorLog counted %d rejected rows, Progress %d", prog.errs.total, res.rejected)
	}
	if err == nil && res.accepted != int64(len(res.rows)) {
		t.Fatalf("Progress says %d accepted, sink has %d", res.accepted, len(res.rows))
	}
	if len(res.errs) > cfg.MaxErrors {
		t.Fatalf("kept %d errors, more than MaxErrors %d", len(res.errs), cfg.MaxErrors)
	}
	if !slices.IsSortedFunc(res.errs, func(a, b RowError) int { return int(a.Line - b.Line) }) {
		t.Fatalf("kept errors not in line order: %v", res.errs)
	}
	return res
}

// Rows used to build streams.
const (
	rowA = "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118,60.683466,2018-08-04 05:32:31 +0200 CEST"
	rowB = "e2649ca5-7e05-4d53-a8ff-919917a4922e,66.640497,2018-08-22 18:34:11 +0200 CEST"
	rowC = `"0b5d1a4e-7d3f-4f43-8e5a-b11e23c7a0f1", "0.5" ,2018-08-04T03:32:31Z`
	rowX = "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118,abc,2018-08-04 05:32:31 +0200 CEST"
	hdr  = "id,price,expiration_date"
	bom  = "\xef\xbb\xbf"
)

func mustRow(t testing.TB, row string) promotion.Record {
	t.Helper()
	r, err := ParseRow([]byte(row))
	if err != nil {
		t.Fatalf("ParseRow(%q): %v", row, err)
	}
	return r
}

// streamConfigs are the worker counts and chunk sizes every stream test
// runs with; 128 bytes cuts most records of the tests across reads.
func streamConfigs() []Config {
	var out []Config
	for _, w := range []int{1, 2, 3, 8} {
		for _, size := range []int{128, 173, 4096} {
			out = append(out, Config{Workers: w, ChunkSize: size, MaxRejected: 1000, MaxErrors: 1000})
		}
	}
	return out
}

func TestParseStream(t *testing.T) {
	type rej struct {
		line  int64
		field string
	}
	cases := []struct {
		name     string
		in       string
		accepted map[int64]string
		rejected []rej
	}{
		{name: "empty"},
		{name: "only BOM", in: bom},
		{name: "only blank lines", in: "\n\r\n  \n\t\n"},
		{name: "LF", in: rowA + "\n" + rowB + "\n", accepted: map[int64]string{1: rowA, 2: rowB}},
		{name: "CRLF", in: rowA + "\r\n" + rowB + "\r\n", accepted: map[int64]string{1: rowA, 2: rowB}},
		{name: "BOM and CRLF", in: bom + rowA + "\r\n" + rowB + "\r\n", accepted: map[int64]string{1: rowA, 2: rowB}},
		{name: "mixed line ends", in: rowA + "\r\n" + rowB + "\n" + rowC + "\r\n", accepted: map[int64]string{1: rowA, 2: rowB, 3: rowC}},
		{name: "no final newline", in: rowA + "\n" + rowB, accepted: map[int64]string{1: rowA, 2: rowB}},
		{name: "no final newline after CRLF", in: rowA + "\r\n" + rowC, accepted: map[int64]string{1: rowA, 2: rowC}},
		{name: "final CR without LF", in: rowA + "\r\n" + rowB + "\r", accepted: map[int64]string{1: rowA, 2: rowB}},
		{name: "blank lines", in: "\n\n" + rowA + "\n\n\r\n" + rowB + "\n  \n\t\r\n" + rowC + "\n\n",
			accepted: map[int64]string{3: rowA, 6: rowB, 9: rowC}},
		{name: "header", in: hdr + "\n" + rowA + "\n", accepted: map[int64]string{2: rowA}},
		{name: "only header", in: hdr + "\r\n"},
		{name: "only header no newline", in: hdr},
		{name: "upper-case header", in: "ID,Price,Expiration_Date\n" + rowA + "\n", accepted: map[int64]string{2: rowA}},
		{name: "quoted header", in: `"id","price","expiration_date"` + "\n" + rowA + "\n", accepted: map[int64]string{2: rowA}},
		{name: "header after BOM and blank lines", in: bom + "\r\n\n" + hdr + "\r\n" + rowA, accepted: map[int64]string{4: rowA}},
		{name: "header after more blank lines than a chunk", in: bom + strings.Repeat("\n  \r\n\t\n", 100) + hdr + "\n" + rowA + "\n",
			accepted: map[int64]string{302: rowA}},
		{name: "header not first", in: rowA + "\n" + hdr + "\n" + rowB + "\n",
			accepted: map[int64]string{1: rowA, 3: rowB}, rejected: []rej{{2, FieldID}}},
		{name: "header twice", in: hdr + "\n" + hdr + "\n" + rowB + "\n",
			accepted: map[int64]string{3: rowB}, rejected: []rej{{2, FieldID}}},
		{name: "header after a bad row", in: rowX + "\n" + hdr + "\n",
			rejected: []rej{{1, FieldPrice}, {2, FieldID}}},
		{name: "multi-line quoted field", in: rowA + "\n" + `d018ef0b-dbd9-48f1-ac1a-eb4d90e57118,60.1,"2018-08-04` + "\n" + `05:32:31"` + "\n" + rowB + "\n",
			accepted: map[int64]string{1: rowA, 4: rowB}, rejected: []rej{{2, FieldExpiration}}},
		{name: "multi-line quoted field CRLF", in: rowA + "\r\n" + `"a` + "\r\n\r\n" + `b",1,2` + "\r\n" + rowB + "\r\n" + rowX + "\r\n" + rowC,
			accepted: map[int64]string{1: rowA, 5: rowB, 7: rowC}, rejected: []rej{{2, FieldID}, {6, FieldPrice}}},
		{name: "quoted commas and escaped quotes", in: `"a,b""c",1,2` + "\n" + rowA + "\n" + tID + `,"1""",2` + "\n",
			accepted: map[int64]string{2: rowA}, rejected: []rej{{1, FieldID}, {3, FieldPrice}}},
		{name: "quote inside unquoted field does not open a quote", in: `ab"c,1,2` + "\n" + rowA + "\n",
			accepted: map[int64]string{2: rowA}, rejected: []rej{{1, FieldRow}}},
		{name: "bad rows", in: rowX + "\n" + rowA + "\n" + "x,y\n" + rowB + "\n" + rowA + ",extra\n",
			accepted: map[int64]string{2: rowA, 4: rowB}, rejected: []rej{{1, FieldPrice}, {3, FieldRow}, {5, FieldRow}}},
		{name: "unterminated quote at the end", in: rowA + "\n" + `"abc,1,2` + "\n",
			accepted: map[int64]string{1: rowA}, rejected: []rej{{2, FieldRow}}},
		{name: "duplicates keep their lines", in: rowA + "\n" + rowA + "\n" + rowA + "\n",
			accepted: map[int64]string{1: rowA, 2: rowA, 3: rowA}},
	}
	for _, c := range cases {
		for _, cfg := range streamConfigs() {
			t.Run(fmt.Sprintf("%s/w%d/c%d", c.name, cfg.Workers, cfg.ChunkSize), func(t *testing.T) {
				res := runParse(t, strings.NewReader(c.in), cfg)
				if res.err != nil {
					t.Fatalf("parse: %v", res.err)
				}
				if res.bytesRead != int64(len(c.in)) {
					t.Fatalf("bytesRead %d, want %d", res.bytesRead, len(c.in))
				}
				if len(res.rows) != len(c.accepted) {
					t.Fatalf("accepted lines %v, want %v", slices.Sorted(maps.Keys(res.rows)), slices.Sorted(maps.Keys(c.accepted)))
				}
				for line, row := range c.accepted {
					got, ok := res.rows[line]
					if want := mustRow(t, row); !ok || got != want {
						t.Fatalf("line %d = %+v (present %v), want %+v", line, got, ok, want)
					}
				}
				if len(res.errs) != len(c.rejected) || res.rejected != int64(len(c.rejected)) {
					t.Fatalf("rejected %d, kept %v; want %v", res.rejected, res.errs, c.rejected)
				}
				for i, w := range c.rejected {
					if e := res.errs[i]; e.Line != w.line || e.Field != w.field {
						t.Fatalf("error %d = %+v, want line %d field %s", i, e, w.line, w.field)
					}
				}
			})
		}
	}
}

// linesWithBad returns n rows, where every row whose 1-based line is in bad
// has a bad price.
func linesWithBad(n int, bad func(line int) bool) string {
	var b strings.Builder
	for line := 1; line <= n; line++ {
		if bad(line) {
			b.WriteString(rowX)
		} else {
			b.WriteString(rowA)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func TestParseKeepsLowestErrors(t *testing.T) {
	in := linesWithBad(3000, func(line int) bool { return line%7 == 3 })
	var allBad []int64
	for line := int64(1); line <= 3000; line++ {
		if line%7 == 3 {
			allBad = append(allBad, line)
		}
	}
	for _, workers := range []int{1, 2, 4, 8} {
		for _, maxErrors := range []int{0, 1, 5, 100} {
			cfg := Config{Workers: workers, ChunkSize: 256, MaxRejected: 1 << 20, MaxErrors: maxErrors}
			res := runParse(t, strings.NewReader(in), cfg)
			if res.err != nil {
				t.Fatal(res.err)
			}
			if res.rejected != int64(len(allBad)) || res.accepted != int64(3000-len(allBad)) {
				t.Fatalf("w%d: rejected %d accepted %d", workers, res.rejected, res.accepted)
			}
			var lines []int64
			for _, e := range res.errs {
				if e.Field != FieldPrice || e.Reason != "not a decimal number" || e.Value != "abc" {
					t.Fatalf("unexpected error %+v", e)
				}
				lines = append(lines, e.Line)
			}
			if want := allBad[:maxErrors]; !slices.Equal(lines, want) {
				t.Fatalf("w%d max %d: kept lines %v, want %v", workers, maxErrors, lines, want)
			}
		}
	}
}

func TestParseMaxRejected(t *testing.T) {
	const n = 5
	bad := func(count int) string {
		return linesWithBad(500, func(line int) bool { return line%50 == 0 && line/50 <= count })
	}
	for _, workers := range []int{1, 3, 8} {
		for _, size := range []int{128, 4096} {
			cfg := Config{Workers: workers, ChunkSize: size, MaxRejected: n, MaxErrors: 100}
			res := runParse(t, strings.NewReader(bad(n)), cfg)
			if res.err != nil {
				t.Fatalf("w%d c%d: %d rejected rows with MaxRejected %d: %v", workers, size, n, n, res.err)
			}
			if res.rejected != n || len(res.rows) != 500-n {
				t.Fatalf("w%d c%d: rejected %d, accepted %d", workers, size, res.rejected, len(res.rows))
			}
			res = runParse(t, strings.NewReader(bad(n+1)), cfg)
			if !errors.Is(res.err, ErrTooManyRejected) {
				t.Fatalf("w%d c%d: %d rejected rows with MaxRejected %d: %v, want ErrTooManyRejected", workers, size, n+1, n, res.err)
			}
			cfg.MaxRejected = 0
			res = runParse(t, strings.NewReader(bad(1)), cfg)
			if !errors.Is(res.err, ErrTooManyRejected) {
				t.Fatalf("w%d c%d: one rejected row with MaxRejected 0: %v", workers, size, res.err)
			}
			if len(res.errs) == 0 || res.errs[0].Line != 50 {
				t.Fatalf("w%d c%d: errors %v, want line 50", workers, size, res.errs)
			}
		}
	}
}

func TestParseRecordTooLong(t *testing.T) {
	long := "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118," + strings.Repeat("1", 5000) + ",2018-08-04T03:32:31Z"
	unterminated := rowA + "\n" + `"` + strings.Repeat(rowA+"\n", 100)
	cases := map[string]string{
		"long row first":        long + "\n" + rowA + "\n",
		"long row later":        strings.Repeat(rowA+"\n", 100) + long + "\n" + rowA + "\n",
		"long row last":         strings.Repeat(rowA+"\n", 100) + long + "\n" + strings.Repeat(rowA+"\n", 100),
		"unterminated quote":    unterminated,
		"binary without a line": strings.Repeat("\x00\x01", 3000),
	}
	for name, in := range cases {
		for _, workers := range []int{1, 4} {
			res := runParse(t, strings.NewReader(in), Config{Workers: workers, ChunkSize: 4096, MaxErrors: 10})
			if !errors.Is(res.err, ErrRecordTooLong) {
				t.Fatalf("%s w%d: %v, want ErrRecordTooLong", name, workers, res.err)
			}
		}
	}
	// The message names the line where the long record starts.
	res := runParse(t, strings.NewReader(strings.Repeat(rowA+"\n", 100)+long+"\n"), Config{Workers: 1, ChunkSize: 4096, MaxErrors: 10})
	if !errors.Is(res.err, ErrRecordTooLong) || !strings.Contains(res.err.Error(), "line 101:") {
		t.Fatalf("error %v does not name line 101", res.err)
	}
	// A record that fits is fine, even a quoted one spanning many lines.
	fits := rowA + "\n" + `"` + strings.Repeat("x\n", 1000) + `",1,2` + "\n" + rowB + "\n"
	res = runParse(t, strings.NewReader(fits), Config{Workers: 2, ChunkSize: 4096, MaxRejected: 1, MaxErrors: 10})
	if res.err != nil || len(res.rows) != 2 || res.rows[1003] != mustRow(t, rowB) || len(res.errs) != 1 || res.errs[0].Line != 2 {
		t.Fatalf("long quoted record: %v, rows %v, errs %v", res.err, slices.Sorted(maps.Keys(res.rows)), res.errs)
	}
}

// failingReader returns its data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestParseReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	for _, workers := range []int{1, 4} {
		for _, size := range []int{128, 4096} {
			in := strings.Repeat(rowA+"\n", 500)
			res := runParse(t, &failingReader{data: []byte(in), err: boom}, Config{Workers: workers, ChunkSize: size, MaxErrors: 10})
			if !errors.Is(res.err, boom) {
				t.Fatalf("w%d c%d: %v, want the reader's error", workers, size, res.err)
			}
			// Right at the start too.
			res = runParse(t, &failingReader{err: boom}, Config{Workers: workers, ChunkSize: size, MaxErrors: 10})
			if !errors.Is(res.err, boom) || len(res.rows) != 0 {
				t.Fatalf("w%d c%d: %v, want the reader's error", workers, size, res.err)
			}
		}
	}
}

func TestParseSinkError(t *testing.T) {
	full := errors.New("sink full")
	in := strings.Repeat(rowA+"\n", 2000)
	for _, workers := range []int{1, 4} {
		res := runParseCtx(t, context.Background(), strings.NewReader(in), Config{Workers: workers, ChunkSize: 512, MaxErrors: 10},
			func(n int) error {
				if n >= 100 {
					return full
				}
				return nil
			})
		if !errors.Is(res.err, full) {
			t.Fatalf("w%d: %v, want the sink's error", workers, res.err)
		}
	}
}

// endlessReader repeats row forever.
type endlessReader struct {
	row []byte
	off int
}

func (r *endlessReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.row[r.off:])
		n += c
		r.off = (r.off + c) % len(r.row)
	}
	return n, nil
}

func TestParseCancel(t *testing.T) {
	for _, workers := range []int{1, 4} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan parseResult, 1)
		go func() {
			done <- runParseCtx(t, ctx, &endlessReader{row: []byte(rowA + "\n")}, Config{Workers: workers, ChunkSize: 4096, MaxErrors: 10},
				func(n int) error {
					if n == 1000 {
						cancel()
					}
					return nil
				})
		}()
		select {
		case res := <-done:
			if !errors.Is(res.err, context.Canceled) {
				t.Fatalf("w%d: %v, want context.Canceled", workers, res.err)
			}
			if len(res.rows) < 1000 {
				t.Fatalf("w%d: only %d rows before the cancellation", workers, len(res.rows))
			}
		case <-time.After(time.Minute):
			t.Fatalf("w%d: parse did not stop after its context was cancelled", workers)
		}
		cancel()
	}

	// Cancelled before it starts.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := runParseCtx(t, ctx, &endlessReader{row: []byte(rowA + "\n")}, Config{Workers: 2, ChunkSize: 4096, MaxErrors: 10}, nil)
	if !errors.Is(res.err, context.Canceled) {
		t.Fatalf("pre-cancelled: %v, want context.Canceled", res.err)
	}
}

// genRow returns one random row that encoding/csv can read, and whether it
// holds a valid promotion.
func genRow(rng *rand.Rand) (row string, valid bool) {
	field := func(s string, mayQuote bool) string {
		if mayQuote && rng.IntN(5) == 0 {
			s = `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
			if rng.IntN(3) == 0 {
				s = strings.Repeat(" ", 1+rng.IntN(2)) + s
			}
			return s
		}
		if rng.IntN(6) == 0 {
			s = " " + s
		}
		if rng.IntN(6) == 0 {
			s += "\t "
		}
		return s
	}
	var id promotion.ID
	for i := range id {
		id[i] = byte(rng.Uint32())
	}
	idText := id.String()
	if rng.IntN(3) == 0 {
		idText = strings.ToUpper(idText)
	}
	price := strconv.FormatInt(rng.Int64N(100000), 10)
	if d := rng.IntN(7); d > 0 {
		frac := strconv.FormatInt(rng.Int64N(1000000), 10)
		frac = strings.Repeat("0", 6-len(frac)) + frac
		price += "." + frac[:d]
	}
	// Years 2 to 9998, so that no offset moves them out of range.
	sec := promotion.UnixFromCivil(2, 1, 1, 0, 0, 0) + rng.Int64N(promotion.UnixFromCivil(9998, 12, 31, 0, 0, 0)-promotion.UnixFromCivil(2, 1, 1, 0, 0, 0))
	offset := (rng.IntN(47) - 23) * 1800
	names := []string{"CEST", "UTC", "", "PDT", "+03"}
	tm := time.Unix(sec, int64(rng.IntN(3))*rng.Int64N(1e9)).In(time.FixedZone(names[rng.IntN(len(names))], offset))
	var date string
	switch rng.IntN(5) {
	case 0:
		date = tm.String()
	case 1:
		date = tm.String() + " m=+" + strconv.FormatFloat(rng.Float64()*100, 'f', 9, 64)
	case 2:
		date = tm.Format(time.RFC3339Nano)
	case 3:
		date = tm.UTC().Format("2006-01-02 15:04:05.999999999")
	default:
		date = tm.Format("2006-01-02 15:04:05 -07:00")
	}
	if rng.IntN(8) != 0 {
		return field(idText, true) + "," + field(price, true) + "," + field(date, true), true
	}
	switch rng.IntN(7) {
	case 0:
		return field(idText, true) + "," + field("abc", true) + "," + field(date, true), false
	case 1:
		return field(idText, true) + "," + field(price, true), false
	case 2:
		nl := "\n"
		if rng.IntN(2) == 0 {
			nl = "\r\n"
		}
		return field(idText, true) + "," + field(price, false) + `,"2018-08-04` + nl + `05:32:31"`, false
	case 3:
		return field(idText, true) + `,"1""2",` + field(date, true), false
	case 4:
		return field(idText[1:], true) + "," + field(price, true) + "," + field(date, true), false
	case 5:
		return hdr, false
	default:
		return field(idText, true) + "," + field(price, true) + "," + field("2018-13-01 00:00:00", true), false
	}
}

// genStream returns a random CSV file of about n rows.
func genStream(rng *rand.Rand, n int) []byte {
	var b bytes.Buffer
	if rng.IntN(2) == 0 {
		b.WriteString(bom)
	}
	if rng.IntN(3) == 0 {
		for range rng.IntN(3) {
			b.WriteString("\n")
		}
		b.WriteString(hdr + "\n")
	}
	for i := range n {
		switch rng.IntN(20) {
		case 0:
			b.WriteString("\n")
		case 1:
			b.WriteString("\r\n")
		}
		row, _ := genRow(rng)
		b.WriteString(row)
		if i < n-1 || rng.IntN(2) == 0 {
			if rng.IntN(3) == 0 {
				b.WriteString("\r\n")
			} else {
				b.WriteString("\n")
			}
		}
	}
	return b.Bytes()
}

var (
	refGoDate = regexp.MustCompile(`^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? [+-]\d\d(?::?\d\d))(?: [A-Za-z0-9+\-_/]+(?: m=[+-]\d+(?:\.\d+)?)?)?$`)
	refPrice  = regexp.MustCompile(`^(\d+)(?:\.(\d{1,6}))?$`)
)

// refRecord converts the fields of one record independently of rowParser.
func refRecord(fields []string) (promotion.Record, bool) {
	var r promotion.Record
	if len(fields) != 3 {
		return r, false
	}
	for i := range fields {
		fields[i] = strings.Trim(fields[i], " \t")
	}
	id := fields[0]
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
		return r, false
	}
	raw, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
	if err != nil || len(raw) != 16 {
		return r, false
	}
	copy(r.ID[:], raw)
	m := refPrice.FindStringSubmatch(fields[1])
	if m == nil {
		return r, false
	}
	whole, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || whole > 1e12 {
		return r, false
	}
	frac, _ := strconv.ParseInt((m[2] + "000000")[:6], 10, 64)
	r.PriceMicros = whole*1e6 + frac
	var tm time.Time
	date := fields[2]
	switch {
	case refGoDate.MatchString(date):
		s := refGoDate.FindStringSubmatch(date)[1]
		layout := "2006-01-02 15:04:05.999999999 -0700"
		if strings.Contains(s[len(s)-6:], ":") {
			layout = "2006-01-02 15:04:05.999999999 -07:00"
		}
		tm, err = time.Parse(layout, s)
	case strings.Contains(date, "T"):
		tm, err = time.Parse(time.RFC3339Nano, date)
	default:
		tm, err = time.Parse("2006-01-02 15:04:05.999999999", date)
	}
	if err != nil {
		return r, false
	}
	r.Expires = tm.Unix()
	if r.Expires < promotion.MinExpires || r.Expires > promotion.MaxExpires {
		return r, false
	}
	return r, true
}

// refParse is the sequential reference: encoding/csv for the records and
// their lines, refRecord for the values.
func refParse(t testing.TB, data []byte) (rows map[int64]promotion.Record, rejected []int64) {
	t.Helper()
	rd := stdcsv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte(bom))))
	rd.FieldsPerRecord = -1
	rd.TrimLeadingSpace = true
	rows = make(map[int64]promotion.Record)
	first := true
	for {
		rec, err := rd.Read()
		if err == io.EOF {
			return rows, rejected
		}
		if err != nil {
			t.Fatalf("encoding/csv: %v", err)
		}
		line, _ := rd.FieldPos(0)
		if len(rec) == 1 && strings.Trim(rec[0], " \t") == "" {
			continue // blank
		}
		if first && strings.EqualFold(strings.Trim(rec[0], " \t"), "id") {
			first = false
			continue
		}
		first = false
		if r, ok := refRecord(rec); ok {
			rows[int64(line)] = r
		} else {
			rejected = append(rejected, int64(line))
		}
	}
}

func TestParseMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(20180804, 53231))
	var totalRows, totalRejected int
	for iter := range 60 {
		data := genStream(rng, 1+rng.IntN(400))
		wantRows, wantRejected := refParse(t, data)
		totalRows += len(wantRows)
		totalRejected += len(wantRejected)
		cfgs := []Config{
			{Workers: 1, ChunkSize: 4096},
			{Workers: 1 + rng.IntN(8), ChunkSize: 256 + rng.IntN(1024)},
			{Workers: 1 + rng.IntN(8), ChunkSize: 4096},
		}
		for _, cfg := range cfgs {
			cfg.MaxRejected, cfg.MaxErrors = 1<<20, 1<<20
			res := runParse(t, bytes.NewReader(data), cfg)
			if res.err != nil {
				t.Fatalf("iter %d w%d c%d: %v", iter, cfg.Workers, cfg.ChunkSize, res.err)
			}
			var gotRejected []int64
			for _, e := range res.errs {
				gotRejected = append(gotRejected, e.Line)
			}
			if !slices.Equal(gotRejected, wantRejected) {
				t.Fatalf("iter %d w%d c%d: rejected lines %v, want %v\n%s", iter, cfg.Workers, cfg.ChunkSize, gotRejected, wantRejected, data)
			}
			if len(res.rows) != len(wantRows) {
				t.Fatalf("iter %d w%d c%d: %d rows, want %d", iter, cfg.Workers, cfg.ChunkSize, len(res.rows), len(wantRows))
			}
			for line, want := range wantRows {
				if got, ok := res.rows[line]; !ok || got != want {
					t.Fatalf("iter %d w%d c%d: line %d = %+v (present %v), want %+v", iter, cfg.Workers, cfg.ChunkSize, line, got, ok, want)
				}
			}
		}
	}
	t.Logf("%d good rows, %d rejected rows checked", totalRows, totalRejected)
	// Guard the generator: it must give both kinds of rows.
	if totalRows < 1000 || totalRejected < 100 {
		t.Fatalf("the generator gave %d good and %d rejected rows", totalRows, totalRejected)
	}
}

// TestLastRecordEnd checks the cut between chunks against a scan record by
// record.
func TestLastRecordEnd(t *testing.T) {
	f := func(data string, want int) {
		t.Helper()
		if got := lastRecordEnd([]byte(data)); got != want {
			t.Fatalf("lastRecordEnd(%q) = %d, want %d", data, got, want)
		}
	}
	f("", 0)
	f("abc", 0)
	f("abc\n", 4)
	f("abc\ndef", 4)
	f("a\nb\nc", 4)
	f(`"a`+"\n"+`b"`+"\nc", 6)
	f(`"a`+"\n"+`b`, 0)
	f(`a,"b`+"\n", 0)
	f(`a,"b"`+"\n", 6)
	f(`a,"b""`+"\n", 0)
	f(`a,"b"""`+"\n", 8)
	f(`a"b`+"\n"+`c`, 4)
	f(`a, "b`+"\n"+`c"`+"\n", 9)
	f("x\n"+`"`, 2)
	f("x\n"+`""`, 2)
}

// FuzzParseStream checks that the parallel parser gives the same rows and
// errors whatever the worker count and the chunk size, as long as every
// record fits the chunk.
func FuzzParseStream(f *testing.F) {
	for _, name := range []string{"bad_rows.csv", "good_rows.csv"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(bom + hdr + "\r\n" + rowA + "\r\n\r\n" + rowB + "\n" + rowC))
	f.Add([]byte(rowA + "\n" + `"a` + "\n" + `b",1,2` + "\n" + rowX + "\r"))
	f.Add([]byte(strings.Repeat("\n", 200) + hdr + "\n" + rowA))
	f.Fuzz(func(t *testing.T, data []byte) {
		ref := runParse(t, bytes.NewReader(data), Config{Workers: 1, ChunkSize: len(data) + 4, MaxRejected: 1 << 20, MaxErrors: 1 << 20})
		if ref.err != nil {
			t.Fatalf("one chunk for the whole input: %v", ref.err)
		}
		for _, cfg := range []Config{{Workers: 3, ChunkSize: 128}, {Workers: 2, ChunkSize: 1000}} {
			cfg.MaxRejected, cfg.MaxErrors = 1<<20, 1<<20
			res := runParse(t, bytes.NewReader(data), cfg)
			if errors.Is(res.err, ErrRecordTooLong) {
				continue
			}
			if res.err != nil {
				t.Fatalf("w%d c%d: %v", cfg.Workers, cfg.ChunkSize, res.err)
			}
			if !maps.Equal(res.rows, ref.rows) {
				t.Fatalf("w%d c%d: rows %v, want %v", cfg.Workers, cfg.ChunkSize, res.rows, ref.rows)
			}
			if !slices.Equal(res.errs, ref.errs) {
				t.Fatalf("w%d c%d: errors %v, want %v", cfg.Workers, cfg.ChunkSize, res.errs, ref.errs)
			}
		}
	})
}

type nopSink struct{}

func (nopSink) Add(int, *promotion.Record, int64) error { return nil }

func BenchmarkParseStream(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	var buf bytes.Buffer
	const rows = 200000
	for range rows {
		var id promotion.ID
		for i := range id {
			id[i] = byte(rng.Uint32())
		}
		buf.Write(id.AppendText(nil))
		buf.WriteByte(',')
		buf.Write(promotion.AppendPrice6(nil, rng.Int64N(100e6)))
		buf.WriteByte(',')
		tm := time.Unix(1500000000+rng.Int64N(1e8), 0).In(time.FixedZone("CEST", 7200))
		buf.WriteString(tm.String())
		buf.WriteByte('\n')
	}
	data := buf.Bytes()
	cfg := Config{Workers: runtime.GOMAXPROCS(0), ChunkSize: 1 << 20, MaxErrors: 100}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var prog Progress
		if err := Parse(context.Background(), bytes.NewReader(data), nopSink{}, cfg, &prog); err != nil {
			b.Fatal(err)
		}
		if prog.Accepted() != rows {
			b.Fatalf("accepted %d rows, want %d", prog.Accepted(), rows)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// TestParseFailingListsFirstErrors: once the import is known to fail, the
// parser keeps reading only until it knows MaxErrors errors, and those are
// exactly the first ones of the file, whatever the order chunks finish in.
func TestParseFailingListsFirstErrors(t *testing.T) {
	const lines = 20_000
	isBad := func(line int) bool { return line%3 == 0 }
	in := linesWithBad(lines, isBad)
	for _, workers := range []int{1, 2, 8} {
		for _, size := range []int{256, 4096} {
			cfg := Config{Workers: workers, ChunkSize: size, MaxRejected: 0, MaxErrors: 100}
			res := runParse(t, strings.NewReader(in), cfg)
			if !errors.Is(res.err, ErrTooManyRejected) {
				t.Fatalf("w%d c%d: %v, want ErrTooManyRejected", workers, size, res.err)
			}
			if len(res.errs) != 100 {
				t.Fatalf("w%d c%d: kept %d errors, want 100", workers, size, len(res.errs))
			}
			for i, e := range res.errs {
				if want := int64(3 * (i + 1)); e.Line != want {
					t.Fatalf("w%d c%d: error %d is line %d, want %d", workers, size, i, e.Line, want)
				}
			}
			if res.bytesRead >= int64(len(in)) {
				t.Fatalf("w%d c%d: read all %d bytes; reading should stop once 100 errors are known", workers, size, res.bytesRead)
			}
			if len(res.rows) >= lines/2 {
				t.Fatalf("w%d c%d: %d rows reached the sink of a failing import", workers, size, len(res.rows))
			}
		}
	}
	// Fewer errors than MaxErrors: the whole input is read and all listed.
	in = linesWithBad(5000, func(line int) bool { return line == 10 || line == 4990 })
	res := runParse(t, strings.NewReader(in), Config{Workers: 2, ChunkSize: 256, MaxRejected: 0, MaxErrors: 100})
	if !errors.Is(res.err, ErrTooManyRejected) || len(res.errs) != 2 || res.errs[1].Line != 4990 || res.bytesRead != int64(len(in)) {
		t.Fatalf("two bad rows: %v, errors %v, read %d of %d", res.err, res.errs, res.bytesRead, len(in))
	}
}

// TestParseCutInputFails: a reader that ends with io.ErrUnexpectedEOF (a
// connection cut mid-upload) fails the parse, even on a row boundary.
func TestParseCutInputFails(t *testing.T) {
	in := strings.Repeat(rowA+"\n", 100)
	res := runParse(t, &failingReader{data: []byte(in), err: io.ErrUnexpectedEOF}, Config{Workers: 2, ChunkSize: 4096, MaxErrors: 10})
	if !errors.Is(res.err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut input: %v, want io.ErrUnexpectedEOF", res.err)
	}
}
