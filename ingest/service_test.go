package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/promotion"
)

// fakeSink is a Sink in memory. Its Begin blocks while block is set, until
// release is closed, ignoring its context, as a sink stuck on a frozen
// server would.
type fakeSink struct {
	block   atomic.Bool
	release chan struct{}
	calls   chan struct{} // receives one value per Begin call

	mu      sync.Mutex
	version uint64
	batches []*fakeBatch
	sources []string
}

func newFakeSink() *fakeSink {
	return &fakeSink{release: make(chan struct{}), calls: make(chan struct{}, 100)}
}

func (f *fakeSink) Begin(ctx context.Context, source string, workers int) (Batch, error) {
	f.calls <- struct{}{}
	if f.block.Load() {
		<-f.release
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.version++
	b := &fakeBatch{version: f.version}
	f.batches = append(f.batches, b)
	f.sources = append(f.sources, source)
	return b, nil
}

func (f *fakeSink) batch(i int) *fakeBatch {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i >= len(f.batches) {
		return nil
	}
	return f.batches[i]
}

type fakeBatch struct {
	version   uint64
	rows      atomic.Int64
	committed atomic.Bool
	aborted   atomic.Bool
	// commit, if set, is called by Commit, which fails with its error.
	commit func(ctx context.Context) error
}

func (b *fakeBatch) Add(worker int, r *promotion.Record, line int64) error {
	b.rows.Add(1)
	return nil
}

func (b *fakeBatch) Version() uint64 { return b.version }

func (b *fakeBatch) Commit(ctx context.Context) (int64, int64, error) {
	if b.commit != nil {
		if err := b.commit(ctx); err != nil {
			b.Abort()
			return 0, 0, err
		}
	}
	b.committed.Store(true)
	return b.rows.Load(), 0, nil
}

func (b *fakeBatch) Abort() { b.aborted.Store(true) }

// testService is a Service served on loopback with its router and
// /metrics, as standalone and ingestsvc serve it.
type testService struct {
	*Service
	url       string
	importDir string
	metrics   *metrics.Set
}

func startService(t *testing.T, sink Sink, mutate ...func(*Config)) *testService {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ImportDir = t.TempDir()
	cfg.Workers = 2
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := New(cfg, sink)
	if err != nil {
		t.Fatal(err)
	}
	r := s.Router(httpserver.NewMetrics(cfg.Metrics))
	r.Probe("/metrics", func(ctx *fasthttp.RequestCtx) { httpserver.WriteMetrics(ctx, cfg.Metrics) })
	hc := httpserver.DefaultServerConfig("test")
	hc.StreamRequestBody = true
	hc.Logger = cfg.Logger
	srv := httpserver.NewServer(hc, r.Handler())
	ln, err := httpserver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Serve(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := srv.ShutdownWithContext(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &testService{Service: s, url: "http://" + ln.Addr(), importDir: cfg.ImportDir, metrics: cfg.Metrics}
}

func (ts *testService) writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(ts.importDir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object (status %d): %v: %q", r.status, err, r.body)
	}
	return m
}

// call sends a request with a client that gives up after timeout, so that
// a stuck server fails the test instead of hanging it.
func call(method, u, contentType string, body io.Reader, timeout time.Duration, header ...string) (response, error) {
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return response{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c := &http.Client{Timeout: timeout}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func mustCall(t *testing.T, method, u, contentType string, body io.Reader, header ...string) response {
	t.Helper()
	r, err := call(method, u, contentType, body, 30*time.Second, header...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func form(filename string) (string, io.Reader) {
	return "application/x-www-form-urlencoded", strings.NewReader(url.Values{"filename": {filename}}.Encode())
}

// csvRows returns n valid rows.
func csvRows(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%08x-0000-4000-8000-000000000000,1.50,2018-08-04 05:32:31 +0200 CEST\n", i)
	}
	return b.String()
}

// eventually retries check until it returns nil or d has passed, then
// fails with its last error.
func eventually(t *testing.T, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState waits until import id is in one of the final states and
// returns its status.
func (ts *testService) waitDone(t *testing.T, id int64) map[string]any {
	t.Helper()
	var st map[string]any
	eventually(t, 20*time.Second, func() error {
		r, err := call(http.MethodGet, fmt.Sprintf("%s/imports/%d", ts.url, id), "", nil, 5*time.Second)
		if err != nil {
			return err
		}
		st = r.json(t)
		if s := st["state"]; s != StateSucceeded && s != StateFailed {
			return fmt.Errorf("import %d is %v", id, s)
		}
		return nil
	})
	return st
}

// TestStalledSinkDoesNotFreezeStatus: while the sink's Begin hangs (a
// frozen PostgreSQL), GET /imports and /metrics answer at once, the POST
// answers 503 with a JSON reason once StoreTimeout has passed, and the
// slot stays taken until Begin returns, whose batch is then aborted.
func TestStalledSinkDoesNotFreezeStatus(t *testing.T) {
	sink := newFakeSink()
	sink.block.Store(true)
	const timeout = 300 * time.Millisecond
	ts := startService(t, sink, func(c *Config) { c.StoreTimeout = timeout })
	ts.writeFile(t, "p.csv", csvRows(10))

	type result struct {
		r       response
		err     error
		elapsed time.Duration
	}
	posted := make(chan result, 1)
	go func() {
		start := time.Now()
		ct, body := form("p.csv")
		r, err := call(http.MethodPost, ts.url+"/process-csv", ct, body, 5*time.Second)
		posted <- result{r, err, time.Since(start)}
	}()
	select {
	case <-sink.calls:
	case <-time.After(10 * time.Second):
		t.Fatal("the sink's Begin was never called")
	}
	for _, path := range []string{"/imports", "/imports/1", "/metrics"} {
		start := time.Now()
		r, err := call(http.MethodGet, ts.url+path, "", nil, time.Second)
		if err != nil {
			t.Fatalf("GET %s while Begin hangs: %v", path, err)
		}
		if r.status != 200 {
			t.Fatalf("GET %s while Begin hangs: %d %s", path, r.status, r.body)
		}
		switch path {
		case "/metrics":
			if !strings.Contains(string(r.body), "promo_import_running 1") {
				t.Fatalf("/metrics while Begin hangs lacks promo_import_running 1:\n%s", r.body)
			}
		case "/imports/1":
			if st := r.json(t); st["state"] != StateQueued {
				t.Fatalf("import while Begin hangs: %s", r.body)
			}
		}
		t.Logf("GET %s while Begin hangs: %v", path, time.Since(start))
	}
	res := <-posted
	if res.err != nil {
		t.Fatalf("POST while Begin hangs: %v after %v", res.err, res.elapsed)
	}
	if res.r.status != 503 || res.elapsed > timeout+2*time.Second {
		t.Fatalf("POST while Begin hangs: %d after %v, want 503 after about %v: %s", res.r.status, res.elapsed, timeout, res.r.body)
	}
	if m := res.r.json(t); !strings.Contains(m["error"].(string), "did not answer within 300ms") || m["import_id"] != float64(1) {
		t.Fatalf("503 body %s", res.r.body)
	}
	if st := ts.waitDone(t, 1); st["state"] != StateFailed || !strings.Contains(st["error"].(string), "did not answer within 300ms") {
		t.Fatalf("import that did not begin: %v", st)
	}
	if res.r.header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	// Begin has not returned: a second import must not begin a version.
	ct, body := form("p.csv")
	if r := mustCall(t, http.MethodPost, ts.url+"/process-csv", ct, body); r.status != 409 {
		t.Fatalf("POST while the first Begin still hangs: %d %s", r.status, r.body)
	}
	close(sink.release)
	eventually(t, 5*time.Second, func() error {
		if b := sink.batch(0); b == nil || !b.aborted.Load() {
			return errors.New("the batch of the abandoned Begin was not aborted")
		}
		return nil
	})
	sink.block.Store(false)
	eventually(t, 5*time.Second, func() error {
		ct, body := form("p.csv")
		r, err := call(http.MethodPost, ts.url+"/process-csv?wait=true", ct, body, 5*time.Second)
		if err != nil {
			return err
		}
		if r.status != 200 {
			return fmt.Errorf("import once Begin works: %d %s", r.status, r.body)
		}
		return nil
	})
	if b := sink.batch(1); b == nil || !b.committed.Load() || b.rows.Load() != 10 {
		t.Fatalf("second batch %+v", b)
	}
}

// TestClientStringsAreBounded: what a client controls and a job keeps (the
// name of an upload, a message quoting its body, a rejected value) is cut
// to a bound, on a UTF-8 boundary and marked as cut, in the status, the
// sink's metadata and GET /imports.
func TestClientStringsAreBounded(t *testing.T) {
	sink := newFakeSink()
	ts := startService(t, sink)
	// An odd prefix puts the cut inside a two-byte rune.
	name := "x" + strings.Repeat("é", 512<<10)
	const boundary = "B0undary"
	part := func(header, content string) string {
		return "--" + boundary + "\r\n" + header + "\r\n\r\n" + content + "\r\n"
	}
	ct := "multipart/form-data; boundary=" + boundary
	checkCut := func(what, got, prefix string, limit int) {
		t.Helper()
		if len(got) > limit || !utf8.ValidString(got) || !strings.HasPrefix(got, prefix) || !strings.Contains(got, "[cut from ") {
			t.Fatalf("%s: %d bytes (max %d), valid UTF-8 %v: %.80q...%q", what, len(got), limit, utf8.ValidString(got), got, got[max(0, len(got)-40):])
		}
	}

	body := part(`Content-Disposition: form-data; name="file"; filename="`+name+`"`, csvRows(3)) + "--" + boundary + "--\r\n"
	r := mustCall(t, http.MethodPost, ts.url+"/process-csv?wait=true", ct, strings.NewReader(body))
	if r.status != 200 {
		t.Fatalf("upload with a 1 MiB name: %d %.300s", r.status, r.body)
	}
	st := r.json(t)
	checkCut("source in the status", st["source"].(string), "upload:xé", 400)
	sink.mu.Lock()
	checkCut("source given to the sink", sink.sources[0], "upload:xé", 400)
	sink.mu.Unlock()

	// A malformed header after the file: the error quotes the line.
	bad := "Bad" + strings.Repeat("h", 1<<20)
	body = part(`Content-Disposition: form-data; name="file"; filename="p.csv"`, csvRows(3)) + "--" + boundary + "\r\n" + bad + "\r\n\r\n"
	r = mustCall(t, http.MethodPost, ts.url+"/process-csv?wait=true", ct, strings.NewReader(body))
	st = r.json(t)
	if r.status != 400 || st["state"] != StateFailed {
		t.Fatalf("upload with a 1 MiB header line: %d %.300s", r.status, r.body)
	}
	checkCut("error in the status", st["error"].(string), "", 1100)

	// A rejected row with a 100 KiB field keeps at most 64 bytes of it.
	ts.writeFile(t, "bad.csv", csvRows(2)+"00000000-0000-4000-8000-000000000000,"+strings.Repeat("9", 100<<10)+",2018-08-04 05:32:31 +0200 CEST\n")
	fct, fbody := form("bad.csv")
	r = mustCall(t, http.MethodPost, ts.url+"/process-csv?wait=true", fct, fbody)
	st = r.json(t)
	errs, _ := st["errors"].([]any)
	if r.status != 422 || len(errs) != 1 {
		t.Fatalf("file with a 100 KiB price: %d %.300s", r.status, r.body)
	}
	if v := errs[0].(map[string]any)["value"].(string); len(v) > 64 {
		t.Fatalf("rejected value kept with %d bytes", len(v))
	}

	r = mustCall(t, http.MethodGet, ts.url+"/imports", "", nil)
	if r.status != 200 || len(r.body) > 16<<10 {
		t.Fatalf("GET /imports: %d, %d bytes", r.status, len(r.body))
	}
}

// TestNamesOutsideTheImportDirAre403: a name that leads outside the import
// directory, through a symbolic link or not, is refused with 403 whether
// the file there exists or not; only names inside tell a missing file
// (404) from a present one.
func TestNamesOutsideTheImportDirAre403(t *testing.T) {
	ts := startService(t, newFakeSink())
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "exists.csv"), []byte(csvRows(1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(outside, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(ts.importDir, "in"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"out":      outside,                                    // a directory outside
		"dangling": filepath.Join(outside, "missing.csv"),      // a missing file outside
		"deep":     filepath.Join(outside, "missing", "x.csv"), // below a missing directory outside
		"rel":      "../" + filepath.Base(outside),             // relative, to a sibling of the import dir
		"inlink":   "in",                                       // a directory inside
	} {
		if err := os.Symlink(target, filepath.Join(ts.importDir, link)); err != nil {
			t.Fatal(err)
		}
	}
	if filepath.Dir(outside) != filepath.Dir(ts.importDir) {
		t.Fatalf("temporary directories %s and %s are not siblings", outside, ts.importDir)
	}
	ts.writeFile(t, "in/ok.csv", csvRows(1))
	f := func(name string, want int) {
		t.Helper()
		ct, body := form(name)
		r := mustCall(t, http.MethodPost, ts.url+"/process-csv?wait=true", ct, body)
		if r.status != want {
			t.Errorf("filename=%s: %d, want %d: %s", name, r.status, want, r.body)
		}
	}
	for _, name := range []string{
		"out/exists.csv", "out/missing.csv", "out/sub", "out/sub/missing.csv", "out/missing/x.csv",
		"dangling", "dangling/x.csv", "deep", "rel/exists.csv", "rel/missing.csv",
		"../" + filepath.Base(outside) + "/exists.csv", "../" + filepath.Base(outside) + "/missing.csv",
		filepath.Join(outside, "exists.csv"), filepath.Join(outside, "missing.csv"),
		"in/../../" + filepath.Base(outside) + "/missing.csv",
	} {
		f(name, 403)
	}
	f("in/missing.csv", 404)
	f("inlink/missing.csv", 404)
	f("missing/x.csv", 404)
	f("inlink/ok.csv", 200)
	f(filepath.Join(ts.importDir, "in", "ok.csv"), 200)
}

// TestMultipartCutAfterABoundaryFails: a multipart body that ends right
// after a boundary line, where another part's headers were due, lacks its
// close delimiter: the upload was interrupted, and nothing is imported.
func TestMultipartCutAfterABoundaryFails(t *testing.T) {
	sink := newFakeSink()
	ts := startService(t, sink)
	const boundary = "xYzzY"
	ct := "multipart/form-data; boundary=" + boundary
	file := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.csv\"\r\n\r\n" + csvRows(5) + "\r\n"
	f := func(body string, wantStatus int, wantErr string) {
		t.Helper()
		// No length: the body is sent chunked and ends cleanly where it
		// ends, so only the multipart framing can tell.
		req, err := http.NewRequest(http.MethodPost, ts.url+"/process-csv?wait=true", io.NopCloser(strings.NewReader(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		msg, _ := st["error"].(string)
		if resp.StatusCode != wantStatus || !strings.Contains(msg, wantErr) {
			t.Fatalf("%q: %d %v, want %d %q", body[len(body)-20:], resp.StatusCode, st, wantStatus, wantErr)
		}
	}
	f(file+"--"+boundary+"\r\n", 400, "ended before its closing boundary")
	f(file+"--"+boundary+"\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n", 400, "upload interrupted")
	f(file+"--"+boundary+"--", 200, "")
	f(file+"--"+boundary+"\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--"+boundary+"--\r\nepilogue\r\n", 200, "")
	sink.mu.Lock()
	defer sink.mu.Unlock()
	for i, b := range sink.batches {
		if committed := i >= 2; b.committed.Load() != committed {
			t.Errorf("batch %d committed %v", i, b.committed.Load())
		}
	}
}

// TestCloseWatch: the close delimiter is seen wherever reads split it, and
// only a whole one counts.
func TestCloseWatch(t *testing.T) {
	f := func(body string, want bool) {
		t.Helper()
		for _, size := range []int{1, 2, 3, 7, 4096} {
			delim := "\n--B--"
			w := &closeWatch{r: strings.NewReader(body), delim: []byte(delim), tail: make([]byte, 0, 2*len(delim))}
			buf := make([]byte, size)
			for {
				_, err := w.Read(buf)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if w.closed != want {
				t.Fatalf("%q read %d bytes at a time: closed %v, want %v", body, size, w.closed, want)
			}
		}
	}
	f("--B\r\n\r\ndata\r\n--B--\r\n", true)
	f("--B\r\n\r\ndata\r\n--B--", true)
	f("--B\r\n\r\ndata\n--B--", true)
	f("--B\r\n\r\ndata\r\n--B\r\n", false)
	f("--B\r\n\r\ndata\r\n--B-", false)
	f("--B\r\n\r\ndata--B--", false)
}

// TestRejectedValuesNeedTheToken: with a token configured, GET /imports
// and GET /imports/{id} show the values of rejected rows (the file's
// content) only to requests that carry it; line, field and reason are
// for everyone.
func TestRejectedValuesNeedTheToken(t *testing.T) {
	const token = "s3cret"
	ts := startService(t, newFakeSink(), func(c *Config) { c.IngestToken = token })
	ts.writeFile(t, "bad.csv", csvRows(2)+"secret-value,1.00,2018-08-04 05:32:31 +0200 CEST\n")
	ct, body := form("bad.csv")
	r := mustCall(t, http.MethodPost, ts.url+"/process-csv?wait=true", ct, body, "Authorization", "Bearer "+token)
	if r.status != 422 || !strings.Contains(string(r.body), `"value":"secret-value"`) {
		t.Fatalf("import with the token: %d %s", r.status, r.body)
	}
	f := func(path string, header []string, wantValue bool) {
		t.Helper()
		r := mustCall(t, http.MethodGet, ts.url+path, "", nil, header...)
		if r.status != 200 {
			t.Fatalf("GET %s %v: %d %s", path, header, r.status, r.body)
		}
		var st Status
		if path == "/imports" {
			var l struct{ Imports []Status }
			if err := json.Unmarshal(r.body, &l); err != nil || len(l.Imports) != 1 {
				t.Fatalf("GET %s: %v %s", path, err, r.body)
			}
			st = l.Imports[0]
		} else if err := json.Unmarshal(r.body, &st); err != nil {
			t.Fatal(err)
		}
		if len(st.Errors) != 1 {
			t.Fatalf("GET %s: errors %+v", path, st.Errors)
		}
		e := st.Errors[0]
		if e.Line != 3 || e.Field != "id" || e.Reason == "" {
			t.Fatalf("GET %s %v: row error %+v", path, header, e)
		}
		if got := e.Value == "secret-value"; got != wantValue || strings.Contains(string(r.body), "secret-value") != wantValue {
			t.Fatalf("GET %s %v: value shown %v, want %v: %s", path, header, got, wantValue, r.body)
		}
	}
	for _, path := range []string{"/imports", "/imports/1"} {
		f(path, nil, false)
		f(path, []string{"Authorization", "Bearer wrong"}, false)
		f(path, []string{"Authorization", "Bearer " + token}, true)
	}
}

// trickle starts an upload of a Content-Length body far longer than what
// it sends: the rows in head, then a byte of every pace, without ever
// pausing long enough for the idle timeout. It stops at the end of the
// test or when the server closes the connection.
func trickle(t *testing.T, addr, head string, every time.Duration, chunk int) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "POST /process-csv HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 100000000\r\n\r\n%s", head); err != nil {
		t.Fatal(err)
	}
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		row := []byte(csvRows(1000))
		for i := 0; ; i += chunk {
			<-tick.C
			if _, err := conn.Write(row[i%len(row) : i%len(row)+chunk]); err != nil {
				return
			}
		}
	}()
}

// TestTrickledUploadsEnd: an upload that trickles a few bytes at a time,
// never idle for long enough to time out, fails once its rate is below
// UploadMinRate, or once it has run for UploadTimeout; nothing of it is
// committed, and the slot is free again.
func TestTrickledUploadsEnd(t *testing.T) {
	f := func(name string, mutate func(*Config), every time.Duration, chunk int, wantErr string) {
		t.Run(name, func(t *testing.T) {
			sink := newFakeSink()
			ts := startService(t, sink, func(c *Config) {
				c.UploadIdleTimeout = 500 * time.Millisecond
				c.UploadMinRate = 0
				mutate(c)
			})
			start := time.Now()
			// More than the 8 KiB fasthttp reads before the handler
			// runs (ReadTimeout bounds that part).
			trickle(t, strings.TrimPrefix(ts.url, "http://"), csvRows(200), every, chunk)
			var st map[string]any
			deadline := time.Now().Add(5 * time.Second)
			for {
				r := mustCall(t, http.MethodGet, ts.url+"/imports/1", "", nil)
				if r.status == 200 {
					if st = r.json(t); st["state"] == StateFailed {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("trickled upload after %v: %d %s", time.Since(start), r.status, r.body)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if msg := st["error"].(string); !strings.Contains(msg, wantErr) || !strings.Contains(msg, "nothing was imported") {
				t.Fatalf("trickled upload failed with %q, want %q", msg, wantErr)
			}
			if b := sink.batch(0); b == nil || b.committed.Load() || !b.aborted.Load() {
				t.Fatalf("batch of the trickled upload: %+v", b)
			}
			t.Logf("failed after %v: %s", time.Since(start), st["error"])
			eventually(t, 5*time.Second, func() error {
				if ts.Running() != nil {
					return errors.New("the slot is still taken")
				}
				return nil
			})
		})
	}
	f("min rate", func(c *Config) { c.UploadMinRate = 1000 }, 100*time.Millisecond, 1,
		"less than the minimum of 1000 bytes/s")
	f("total deadline", func(c *Config) { c.UploadTimeout = time.Second }, 20*time.Millisecond, 100,
		"did not end within 1s")
}

// memHistory is a History in memory, shared by the services of a test as
// a store outlives a process.
type memHistory struct {
	mu   sync.Mutex
	docs map[int64][]byte
	fail error // returned by SaveImport when set
}

func (h *memHistory) SaveImport(ctx context.Context, id int64, doc []byte, keep int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail != nil {
		return h.fail
	}
	if h.docs == nil {
		h.docs = map[int64][]byte{}
	}
	h.docs[id] = slices.Clone(doc)
	for len(h.docs) > keep {
		delete(h.docs, slices.Min(slices.Collect(maps.Keys(h.docs))))
	}
	return nil
}

func (h *memHistory) LoadImports(ctx context.Context) ([][]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out [][]byte
	for _, d := range h.docs {
		out = append(out, slices.Clone(d))
	}
	return out, nil
}

// startRestored starts a service over h, restored from it.
func startRestored(t *testing.T, sink Sink, h *memHistory, mutate ...func(*Config)) *testService {
	t.Helper()
	ts := startService(t, sink, append([]func(*Config){func(c *Config) { c.History = h }}, mutate...)...)
	if err := ts.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ts
}

// TestHistorySurvivesARestart: a new service over the same history lists
// the finished imports of the old one, an import that was running when it
// stopped as failed, and gives out higher ids; the history keeps KeepJobs.
func TestHistorySurvivesARestart(t *testing.T) {
	h := &memHistory{}
	keep := func(c *Config) { c.KeepJobs = 3 }
	old := startRestored(t, newFakeSink(), h, keep)
	old.writeFile(t, "p.csv", csvRows(5))
	old.writeFile(t, "bad.csv", "x,1,2\n")
	for _, name := range []string{"p.csv", "bad.csv", "p.csv"} {
		ct, body := form(name)
		mustCall(t, http.MethodPost, old.url+"/process-csv?wait=true", ct, body)
	}
	// Import 4 was running when the process died: its start is recorded.
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = call(http.MethodPost, old.url+"/process-csv", "text/csv", pr, 30*time.Second) }()
	if _, err := io.WriteString(pw, csvRows(200)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.docs[4] == nil {
			return errors.New("import 4 is not recorded")
		}
		return nil
	})

	ts := startRestored(t, newFakeSink(), h, keep)
	r := mustCall(t, http.MethodGet, ts.url+"/imports", "", nil)
	var l struct{ Imports []Status }
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range l.Imports {
		got = append(got, fmt.Sprintf("%d %s", st.ImportID, st.State))
	}
	if want := "[4 failed 3 succeeded 2 failed]"; fmt.Sprint(got) != want {
		t.Fatalf("imports after restart: %v, want %s", got, want)
	}
	if l.Imports[0].Error != interrupted || l.Imports[1].DatasetVersion != 3 || l.Imports[1].Rows != 5 ||
		len(l.Imports[2].Errors) != 1 || l.Imports[2].Errors[0].Line != 1 {
		t.Fatalf("restored statuses: %+v", l.Imports)
	}
	if r := mustCall(t, http.MethodGet, ts.url+"/imports/3", "", nil); r.status != 200 || r.json(t)["dataset_version"] != float64(3) {
		t.Fatalf("GET /imports/3 after restart: %d %s", r.status, r.body)
	}
	if r := mustCall(t, http.MethodGet, ts.url+"/imports/1", "", nil); r.status != 404 {
		t.Fatalf("GET /imports/1, beyond KeepJobs: %d %s", r.status, r.body)
	}
	ts.writeFile(t, "p.csv", csvRows(5))
	ct, body := form("p.csv")
	if r := mustCall(t, http.MethodPost, ts.url+"/process-csv?wait=true", ct, body); r.status != 200 || r.json(t)["import_id"] != float64(5) {
		t.Fatalf("first import after restart: %d %s", r.status, r.body)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.docs) != 3 || h.docs[5] == nil || h.docs[2] != nil {
		t.Fatalf("history holds ids %v, want the newest 3", slices.Sorted(maps.Keys(h.docs)))
	}
}

// TestImportNotRecordedFails: an import whose start cannot be recorded
// does not run (its id could otherwise be given out again after a
// crash).
func TestImportNotRecordedFails(t *testing.T) {
	h := &memHistory{fail: fmt.Errorf("%w: disk on fire", ErrUnavailable)}
	sink := newFakeSink()
	ts := startRestored(t, sink, h)
	ts.writeFile(t, "p.csv", csvRows(5))
	ct, body := form("p.csv")
	r := mustCall(t, http.MethodPost, ts.url+"/process-csv?wait=true", ct, body)
	if r.status != 503 || !strings.Contains(r.json(t)["error"].(string), "disk on fire") {
		t.Fatalf("import that cannot be recorded: %d %s", r.status, r.body)
	}
	if b := sink.batch(0); b == nil || !b.aborted.Load() || b.committed.Load() {
		t.Fatalf("batch of an import that cannot be recorded: %+v", b)
	}
}

// TestDeleteCancelsAnImport: DELETE /imports/{id} needs the token, cancels
// a running upload (whose version is aborted) and a queued import, and
// answers 404 for an unknown id and 409 for a finished import.
func TestDeleteCancelsAnImport(t *testing.T) {
	const token = "s3cret"
	auth := []string{"Authorization", "Bearer " + token}
	sink := newFakeSink()
	ts := startService(t, sink, func(c *Config) { c.IngestToken = token })
	del := func(id int64, header ...string) response {
		t.Helper()
		return mustCall(t, http.MethodDelete, fmt.Sprintf("%s/imports/%d", ts.url, id), "", nil, header...)
	}

	pr, pw := io.Pipe()
	defer pw.Close()
	posted := make(chan response, 1)
	go func() {
		r, err := call(http.MethodPost, ts.url+"/process-csv?wait=true", "text/csv", pr, 30*time.Second, auth...)
		if err != nil {
			t.Error(err)
		}
		posted <- r
	}()
	// More than fasthttp reads before the handler runs.
	if _, err := io.WriteString(pw, csvRows(200)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if j := ts.Running(); j == nil || j.Status().BytesRead == 0 {
			return errors.New("the upload is not read yet")
		}
		return nil
	})
	if r := del(1); r.status != 401 {
		t.Fatalf("DELETE without the token: %d %s", r.status, r.body)
	}
	if r := del(9, auth...); r.status != 404 {
		t.Fatalf("DELETE of an unknown id: %d %s", r.status, r.body)
	}
	r := del(1, auth...)
	st := r.json(t)
	if r.status != 200 || st["state"] != StateFailed || !strings.Contains(st["error"].(string), "cancelled") {
		t.Fatalf("DELETE of a running upload: %d %s", r.status, r.body)
	}
	if b := sink.batch(0); !b.aborted.Load() || b.committed.Load() {
		t.Fatalf("batch of the cancelled import: %+v", b)
	}
	if p := <-posted; p.status != 409 || !strings.Contains(string(p.body), "cancelled") {
		t.Fatalf("POST ?wait=true of the cancelled import: %d %s", p.status, p.body)
	}
	if r := del(1, auth...); r.status != 409 || r.json(t)["state"] != StateFailed {
		t.Fatalf("DELETE of a cancelled import: %d %s", r.status, r.body)
	}

	// Queued: the sink's Begin hangs.
	sink.block.Store(true)
	ts.writeFile(t, "p.csv", csvRows(5))
	go func() {
		ct, body := form("p.csv")
		posted <- mustCallErr(t, http.MethodPost, ts.url+"/process-csv", ct, body, auth...)
	}()
	eventually(t, 10*time.Second, func() error {
		if j := ts.Running(); j == nil || j.ID() != 2 {
			return errors.New("import 2 is not queued yet")
		}
		return nil
	})
	if r := del(2, auth...); r.status != 200 || r.json(t)["state"] != StateFailed {
		t.Fatalf("DELETE of a queued import: %d %s", r.status, r.body)
	}
	if p := <-posted; p.status != 409 {
		t.Fatalf("POST of the import cancelled while queued: %d %s", p.status, p.body)
	}
	close(sink.release)
	sink.block.Store(false)
	eventually(t, 10*time.Second, func() error {
		if ts.Running() != nil {
			return errors.New("the slot is still taken")
		}
		return nil
	})
	ct, body := form("p.csv")
	if r := mustCall(t, http.MethodPost, ts.url+"/process-csv?wait=true", ct, body, auth...); r.status != 200 {
		t.Fatalf("import after the cancellations: %d %s", r.status, r.body)
	}
	if r := del(3, auth...); r.status != 409 || r.json(t)["state"] != StateSucceeded {
		t.Fatalf("DELETE of a succeeded import: %d %s", r.status, r.body)
	}
}

// mustCallErr is mustCall for other goroutines: it reports with t.Error.
func mustCallErr(t *testing.T, method, u, contentType string, body io.Reader, header ...string) response {
	r, err := call(method, u, contentType, body, 30*time.Second, header...)
	if err != nil {
		t.Error(err)
	}
	return r
}

// zeros is an endless body of CSV-looking bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '0'
	}
	return len(p), nil
}

// TestEarlyRefusalsReachTheClient: a client still sending a large body
// when the server refuses it (401 bad token, 409 busy, 413 too large)
// reads the JSON answer, not a connection reset.
func TestEarlyRefusalsReachTheClient(t *testing.T) {
	const token = "s3cret"
	auth := []string{"Authorization", "Bearer " + token}
	ts := startService(t, newFakeSink(), func(c *Config) {
		c.IngestToken = token
		c.MaxUploadBytes = 100 << 20
	})
	small := startService(t, newFakeSink(), func(c *Config) {
		c.IngestToken = token
		c.MaxUploadBytes = 1 << 20
	})
	const size = 64 << 20
	f := func(name, base string, want int, header ...string) {
		t.Helper()
		for i := range 5 {
			req, err := http.NewRequest(http.MethodPost, base+"/process-csv", io.LimitReader(zeros{}, size))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = size
			req.Header.Set("Content-Type", "text/csv")
			for i := 0; i+1 < len(header); i += 2 {
				req.Header.Set(header[i], header[i+1])
			}
			c := &http.Client{Timeout: 30 * time.Second}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s, attempt %d: %v", name, i, err)
			}
			var m map[string]any
			err = json.NewDecoder(resp.Body).Decode(&m)
			resp.Body.Close()
			if err != nil || resp.StatusCode != want || m["error"] == nil {
				t.Fatalf("%s, attempt %d: %d %v %v, want %d with a JSON error", name, i, resp.StatusCode, m, err, want)
			}
		}
	}
	f("no token", ts.url, 401)
	f("wrong token", ts.url, 401, "Authorization", "Bearer nope")
	f("too large", small.url, 413, auth...)

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = call(http.MethodPost, ts.url+"/process-csv", "text/csv", pr, 30*time.Second, auth...) }()
	if _, err := io.WriteString(pw, csvRows(200)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if ts.Running() == nil {
			return errors.New("the first upload is not running")
		}
		return nil
	})
	f("busy", ts.url, 409, auth...)
}
