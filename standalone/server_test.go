package standalone

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/promotion"
)

type testServer struct {
	*Server
	url       string
	importDir string
	dataDir   string
}

func startServer(t *testing.T, mutate ...func(*Config)) *testServer {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.ImportDir = t.TempDir()
	cfg.CacheSize = 8 << 20
	cfg.MemoryBudget = 16 << 20
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &testServer{Server: s, url: "http://" + s.Addr(), importDir: cfg.ImportDir, dataDir: cfg.DataDir}
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
		t.Fatalf("body is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

func do(t *testing.T, method, url, contentType string, body io.Reader, header ...string) response {
	t.Helper()
	r, err := tryDo(method, url, contentType, body, header...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryDo is do for goroutines other than the test's: it returns the error
// instead of failing the test.
func tryDo(method, url, contentType string, body io.Reader, header ...string) (response, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return response{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
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

func (s *testServer) get(t *testing.T, path string) response {
	return do(t, http.MethodGet, s.url+path, "", nil)
}

func (s *testServer) postForm(t *testing.T, path, filename string, header ...string) response {
	form := url.Values{"filename": {filename}}.Encode()
	return do(t, http.MethodPost, s.url+path, "application/x-www-form-urlencoded", strings.NewReader(form), header...)
}

// writeFile writes content into the server's import directory.
func (s *testServer) writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(s.importDir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// rows builds CSV rows whose price is tag.xx, with ids derived from i.
func rows(n int, tag int) (string, []promotion.Record) {
	var b strings.Builder
	var recs []promotion.Record
	for i := range n {
		var r promotion.Record
		r.ID[0], r.ID[1], r.ID[15] = byte(i>>8), byte(i), 0x5a
		r.PriceMicros = int64(tag)*1_000_000 + int64(i%100)*10_000
		r.Expires = 1533353551 + int64(i)
		b.Write(gen.AppendRow(nil, &r, gen.FormatGo))
		recs = append(recs, r)
	}
	return b.String(), recs
}

func expectJSONError(t *testing.T, r response, status int, contains string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	m := r.json(t)
	msg, _ := m["error"].(string)
	if !strings.Contains(msg, contains) {
		t.Fatalf("error %q does not contain %q", msg, contains)
	}
}

func TestLookupAnswers(t *testing.T) {
	s := startServer(t)
	expectJSONError(t, s.get(t, "/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e57118"), 404, "no dataset")
	s.writeFile(t, "p.csv", "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118,60.683466,2018-08-04 05:32:31 +0200 CEST\n"+
		"E2649CA5-7E05-4D53-A8FF-919917A4922E,66.64,2018-08-22T18:34:11Z\n")
	if r := s.postForm(t, "/process-csv?wait=true", "p.csv"); r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	r := s.get(t, "/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	want := `{"id":"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118","price":60.68,"expiration_date":"2018-08-04T03:32:31Z"}`
	if r.status != 200 || string(r.body) != want {
		t.Fatalf("lookup: %d %s, want 200 %s", r.status, r.body, want)
	}
	if v := r.header.Get("X-Dataset-Version"); v != "1" {
		t.Fatalf("X-Dataset-Version %q, want 1", v)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	// Any case in, lower case out.
	r = s.get(t, "/promotions/E2649CA5-7E05-4D53-A8FF-919917A4922E")
	if r.status != 200 || !strings.Contains(string(r.body), `"id":"e2649ca5-7e05-4d53-a8ff-919917a4922e","price":66.64`) {
		t.Fatalf("upper-case lookup: %d %s", r.status, r.body)
	}
	expectJSONError(t, s.get(t, "/promotions/00000000-0000-0000-0000-000000000000"), 404, "not found")
	expectJSONError(t, s.get(t, "/promotions/not-a-uuid"), 400, "malformed")
	expectJSONError(t, s.get(t, "/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e5711"), 400, "malformed")
}

func TestProcessCSVForms(t *testing.T) {
	s := startServer(t)
	csv, recs := rows(300, 1)
	s.writeFile(t, "promotions.csv", csv)

	// Form, asynchronous: 202, Location, then the job succeeds.
	r := s.postForm(t, "/process-csv", "promotions.csv")
	if r.status != 202 {
		t.Fatalf("form import: %d %s", r.status, r.body)
	}
	m := r.json(t)
	loc := r.header.Get("Location")
	if loc == "" || m["status_url"] != loc || m["import_id"] == nil {
		t.Fatalf("202 without Location/status_url/import_id: %v %s", r.header, r.body)
	}
	st := waitImport(t, s, loc)
	if st["state"] != "succeeded" || st["rows"] != float64(300) || st["dataset_version"] != float64(1) {
		t.Fatalf("final status %v", st)
	}
	checkLookup(t, s, recs[7], 1)

	// Body, synchronous.
	csv2, recs2 := rows(300, 2)
	r = do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv2))
	if r.status != 200 || r.json(t)["dataset_version"] != float64(2) {
		t.Fatalf("body import: %d %s", r.status, r.body)
	}
	checkLookup(t, s, recs2[7], 2)

	// Body as octet-stream, asynchronous.
	csv3, recs3 := rows(300, 3)
	r = do(t, http.MethodPost, s.url+"/process-csv", "application/octet-stream", strings.NewReader(csv3))
	if r.status != 202 {
		t.Fatalf("octet-stream import: %d %s", r.status, r.body)
	}
	waitImport(t, s, r.header.Get("Location"))
	checkLookup(t, s, recs3[7], 3)

	// Multipart field file.
	csv4, recs4 := rows(300, 4)
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	fw, _ := mw.CreateFormFile("file", "promotions.csv")
	io.WriteString(fw, csv4)
	mw.Close()
	r = do(t, http.MethodPost, s.url+"/process-csv?wait=true", mw.FormDataContentType(), &mp)
	if r.status != 200 || r.json(t)["dataset_version"] != float64(4) {
		t.Fatalf("multipart import: %d %s", r.status, r.body)
	}
	checkLookup(t, s, recs4[7], 4)

	// Imports are listed newest first.
	r = s.get(t, "/imports")
	var list struct {
		Imports []map[string]any `json:"imports"`
	}
	if err := json.Unmarshal(r.body, &list); err != nil || len(list.Imports) != 4 || list.Imports[0]["import_id"] != float64(4) {
		t.Fatalf("GET /imports: %s", r.body)
	}
}

func waitImport(t *testing.T, s *testServer, statusURL string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := s.get(t, statusURL)
		if r.status != 200 {
			t.Fatalf("GET %s: %d %s", statusURL, r.status, r.body)
		}
		m := r.json(t)
		if m["state"] == "succeeded" || m["state"] == "failed" {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("import still %v", m["state"])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkLookup(t *testing.T, s *testServer, rec promotion.Record, version int) {
	t.Helper()
	r := s.get(t, "/promotions/"+rec.ID.String())
	want := string(promotion.AppendJSON(nil, &rec))
	if r.status != 200 || string(r.body) != want || r.header.Get("X-Dataset-Version") != fmt.Sprint(version) {
		t.Fatalf("lookup %s: %d %s (version %s), want %s in version %d", rec.ID, r.status, r.body, r.header.Get("X-Dataset-Version"), want, version)
	}
}

func TestProcessCSVPaths(t *testing.T) {
	s := startServer(t)
	csv, _ := rows(10, 1)
	s.writeFile(t, "ok.csv", csv)
	outside := filepath.Join(t.TempDir(), "outside.csv")
	if err := os.WriteFile(outside, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(s.importDir, "escape.csv")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(s.importDir, "ok.csv"), filepath.Join(s.importDir, "inside.csv")); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(s.importDir, "sub"), 0o755)

	expectJSONError(t, s.postForm(t, "/process-csv", "missing.csv"), 404, "not found")
	expectJSONError(t, s.postForm(t, "/process-csv", "../outside.csv"), 403, "outside")
	expectJSONError(t, s.postForm(t, "/process-csv", outside), 403, "outside")
	expectJSONError(t, s.postForm(t, "/process-csv", "/etc/passwd"), 403, "outside")
	expectJSONError(t, s.postForm(t, "/process-csv", "../../../../nonexistent"), 403, "outside")
	expectJSONError(t, s.postForm(t, "/process-csv", "escape.csv"), 403, "symbolic link")
	expectJSONError(t, s.postForm(t, "/process-csv", "sub"), 400, "directory")
	expectJSONError(t, s.postForm(t, "/process-csv", ""), 400, "filename")
	expectJSONError(t, do(t, http.MethodPost, s.url+"/process-csv", "application/x-www-form-urlencoded", strings.NewReader("name=x")), 400, "filename")
	expectJSONError(t, do(t, http.MethodPost, s.url+"/process-csv", "application/json", strings.NewReader("{}")), 415, "Content-Type")
	expectJSONError(t, s.postForm(t, "/process-csv?max_rejected=-1", "ok.csv"), 400, "max_rejected")
	expectJSONError(t, s.postForm(t, "/process-csv?wait=maybe", "ok.csv"), 400, "wait")
	if r := s.postForm(t, "/process-csv?wait=true", "inside.csv"); r.status != 200 {
		t.Fatalf("symlink inside the import directory: %d %s", r.status, r.body)
	}
	// An absolute path inside the import directory is fine too.
	if r := s.postForm(t, "/process-csv?wait=true", filepath.Join(s.importDir, "ok.csv")); r.status != 200 {
		t.Fatalf("absolute path inside: %d %s", r.status, r.body)
	}
}

func TestBadRowsKeepPreviousVersion(t *testing.T) {
	// Off: the tolerated import has 1 row, the serving version 50.
	s := startServer(t, func(c *Config) { c.MinRowsRatio = 0 })
	good, recs := rows(50, 1)
	s.writeFile(t, "good.csv", good)
	if r := s.postForm(t, "/process-csv?wait=true", "good.csv"); r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	bad := "id,price,expiration_date\n" + // header, skipped
		"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118,60.683466,2018-08-04 05:32:31 +0200 CEST\n" +
		"not-a-uuid,1.00,2018-08-04 05:32:31 +0200 CEST\n" +
		"e2649ca5-7e05-4d53-a8ff-919917a4922e,-5,2018-08-04 05:32:31 +0200 CEST\n" +
		"\n" +
		"e2649ca5-7e05-4d53-a8ff-919917a4922f,5,2018-13-04 05:32:31 +0200 CEST\n"
	s.writeFile(t, "bad.csv", bad)
	r := s.postForm(t, "/process-csv?wait=true", "bad.csv")
	if r.status != 422 {
		t.Fatalf("bad file: %d %s", r.status, r.body)
	}
	var st struct {
		State  string `json:"state"`
		Error  string `json:"error"`
		Errors []struct {
			Line   int    `json:"line"`
			Field  string `json:"field"`
			Reason string `json:"reason"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(r.body, &st); err != nil {
		t.Fatal(err)
	}
	if st.State != "failed" || st.Error == "" || len(st.Errors) == 0 {
		t.Fatalf("422 body: %s", r.body)
	}
	if e := st.Errors[0]; e.Line != 3 || e.Field != "id" || e.Reason == "" {
		t.Fatalf("first error %+v, want line 3, field id", e)
	}
	checkLookup(t, s, recs[3], 1)
	// All errors are found when tolerated.
	r = s.postForm(t, "/process-csv?wait=true&max_rejected=3", "bad.csv")
	if r.status != 200 {
		t.Fatalf("max_rejected=3: %d %s", r.status, r.body)
	}
	m := r.json(t)
	if m["rows"] != float64(1) || m["rows_rejected"] != float64(3) || len(m["errors"].([]any)) != 3 {
		t.Fatalf("tolerated import: %s", r.body)
	}
	fields := []string{}
	for _, e := range m["errors"].([]any) {
		em := e.(map[string]any)
		fields = append(fields, fmt.Sprintf("%v:%v", em["line"], em["field"]))
	}
	if strings.Join(fields, " ") != "3:id 4:price 6:expiration_date" {
		t.Fatalf("errors %v", fields)
	}
	// An empty file is refused rather than erasing the dataset.
	s.writeFile(t, "empty.csv", "")
	expectJSONError(t, s.postForm(t, "/process-csv?wait=true", "empty.csv"), 422, "no rows")
	if r := s.get(t, "/datasets/current"); r.json(t)["version"] != float64(2) {
		t.Fatalf("current after failed imports: %s", r.body)
	}
}

func TestConcurrentImportConflicts(t *testing.T) {
	s := startServer(t)
	csv, _ := rows(10, 1)
	s.writeFile(t, "p.csv", csv)
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan response, 1)
	failed := make(chan error, 1)
	go func() {
		r, err := tryDo(http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", pr)
		if err != nil {
			failed <- err
			return
		}
		done <- r
	}()
	first, _ := rows(10, 2)
	if _, err := io.WriteString(pw, first); err != nil {
		t.Fatal(err)
	}
	// The upload is running until the pipe is closed: wait until the
	// server shows it as import 1, reading, before asking for another.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := s.get(t, "/imports/1")
		if r.status == 200 {
			m := r.json(t)
			if m["source"] != "upload" || (m["state"] != "running" && m["state"] != "queued") {
				t.Fatalf("import status while its upload is open: %s", r.body)
			}
			if m["bytes_read"].(float64) > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress reported: %d %s", r.status, r.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := s.postForm(t, "/process-csv", "p.csv")
	if r.status != 409 {
		t.Fatalf("second import: %d %s, want 409 while the first runs", r.status, r.body)
	}
	if m := r.json(t); m["import_id"] != float64(1) || !strings.Contains(m["error"].(string), "already running") {
		t.Fatalf("409 body: %s", r.body)
	}
	pw.Close()
	select {
	case r := <-done:
		if r.status != 200 {
			t.Fatalf("streamed import: %d %s", r.status, r.body)
		}
	case err := <-failed:
		t.Fatalf("streamed import: %v", err)
	}
}

func TestTokenProtectsWrites(t *testing.T) {
	s := startServer(t, func(c *Config) { c.IngestToken = "s3cret" })
	csv, recs := rows(10, 1)
	s.writeFile(t, "p.csv", csv)
	r := s.postForm(t, "/process-csv", "p.csv")
	expectJSONError(t, r, 401, "bearer token")
	if r.header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
	expectJSONError(t, s.postForm(t, "/process-csv", "p.csv", "Authorization", "Bearer wrong"), 401, "invalid")
	if r := s.postForm(t, "/process-csv?wait=true", "p.csv", "Authorization", "Bearer s3cret"); r.status != 200 {
		t.Fatalf("with token: %d %s", r.status, r.body)
	}
	expectJSONError(t, do(t, http.MethodPost, s.url+"/datasets/1/activate", "", nil), 401, "bearer token")
	if r := do(t, http.MethodPost, s.url+"/datasets/1/activate", "", nil, "Authorization", "Bearer s3cret"); r.status != 200 {
		t.Fatalf("activate with token: %d %s", r.status, r.body)
	}
	checkLookup(t, s, recs[1], 1) // reads need no token
}

func TestNonLoopbackNeedsToken(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addr = "0.0.0.0:0"
	cfg.DataDir = t.TempDir()
	if _, err := Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "ingest token") {
		t.Fatalf("Start on 0.0.0.0 without token: %v", err)
	}
	cfg.Addr = ":0"
	if _, err := Start(context.Background(), cfg); err == nil {
		t.Fatal("Start on :0 without token succeeded")
	}
	s := startServer(t, func(c *Config) { c.Addr = "0.0.0.0:0"; c.Insecure = true })
	if r := s.get(t, "/healthz"); r.status != 200 {
		t.Fatalf("insecure server: %d", r.status)
	}
}

func TestDatasetsAndRollback(t *testing.T) {
	s := startServer(t, func(c *Config) { c.KeepVersions = 2 })
	expectJSONError(t, s.get(t, "/datasets/current"), 404, "no dataset")
	var recs [4][]promotion.Record
	for v := 1; v <= 3; v++ {
		csv, r := rows(20, v)
		recs[v] = r
		if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv)); r.status != 200 {
			t.Fatalf("import %d: %d %s", v, r.status, r.body)
		}
	}
	cur := s.get(t, "/datasets/current").json(t)
	if cur["version"] != float64(3) || cur["rows"] != float64(20) || cur["activated_at"] == nil {
		t.Fatalf("current: %v", cur)
	}
	// Version 1 is dropped in the background; 3 (active) and 2 stay.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ds struct {
			Datasets []map[string]any `json:"datasets"`
		}
		json.Unmarshal(s.get(t, "/datasets").body, &ds)
		if len(ds.Datasets) == 2 && ds.Datasets[0]["state"] == "active" && ds.Datasets[1]["state"] == "ready" && ds.Datasets[1]["version"] == float64(2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("datasets: %v", ds)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := do(t, http.MethodPost, s.url+"/datasets/2/activate", "", nil)
	if r.status != 200 || r.json(t)["version"] != float64(2) {
		t.Fatalf("activate 2: %d %s", r.status, r.body)
	}
	checkLookup(t, s, recs[2][5], 2)
	expectJSONError(t, do(t, http.MethodPost, s.url+"/datasets/1/activate", "", nil), 404, "no such")
	expectJSONError(t, do(t, http.MethodPost, s.url+"/datasets/x/activate", "", nil), 400, "version")
}

func TestOperationalEndpoints(t *testing.T) {
	metrics.ExposeMetadata(true) // as cmd/promo does
	s := startServer(t)
	if r := s.get(t, "/healthz"); r.status != 200 || r.json(t)["status"] != "ok" {
		t.Fatalf("healthz: %d %s", r.status, r.body)
	}
	if r := s.get(t, "/readyz"); r.status != 200 || r.json(t)["status"] != "ready" {
		t.Fatalf("readyz: %d %s", r.status, r.body)
	}
	csv, recs := rows(10, 1)
	do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv))
	checkLookup(t, s, recs[0], 1)
	s.get(t, "/promotions/zzz")
	r := s.get(t, "/metrics")
	body := string(r.body)
	for _, want := range []string{
		`# TYPE promo_http_request_duration_seconds histogram`,
		`promo_http_request_duration_seconds_bucket{route="/promotions/{id}",le=`,
		`promo_http_requests_total{route="/promotions/{id}",code="200"} 1`,
		`promo_http_requests_total{route="/promotions/{id}",code="400"} 1`,
		`promo_import_rows_accepted_total 10`,
		`promo_import_rows_rejected_total 0`,
		`promo_import_duration_seconds_bucket{le=`,
		`promo_dataset_version 1`,
		`# HELP`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	expectJSONError(t, s.get(t, "/nope"), 404, "no such endpoint")
	expectJSONError(t, do(t, http.MethodDelete, s.url+"/imports", "", nil), 405, "method not allowed")
	expectJSONError(t, s.get(t, "/imports/99"), 404, "no such import")
	expectJSONError(t, s.get(t, "/imports/abc"), 400, "import id")
}

func TestUploadLimits(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MaxUploadBytes = 1000 })
	csv, _ := rows(100, 1) // ~7.8 KB
	expectJSONError(t, do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv)), 413, "size limit")
	// Without Content-Length (chunked), the limit applies while reading.
	r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", io.MultiReader(strings.NewReader(csv)))
	if r.status != 413 {
		t.Fatalf("chunked oversized upload: %d %s", r.status, r.body)
	}
	if r := s.get(t, "/datasets"); !strings.Contains(string(r.body), `"datasets":[]`) {
		t.Fatalf("datasets after refused uploads: %s", r.body)
	}
}

// TestLookupsDuringImports hammers lookups while new versions are imported:
// no request may fail, each answer must carry the value of the version in
// its header, and versions never go backwards for a client.
func TestLookupsDuringImports(t *testing.T) {
	s := startServer(t, func(c *Config) { c.KeepVersions = 1 })
	const n = 500
	csv, recs := rows(n, 1)
	if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv)); r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	var stop atomic.Bool
	var count atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := 0
			for i := g; !stop.Load(); i += 7 {
				rec := recs[i%n]
				resp, err := client.Get(s.url + "/promotions/" + rec.ID.String())
				if err != nil {
					errs <- err.Error()
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var v int
				fmt.Sscan(resp.Header.Get("X-Dataset-Version"), &v)
				want := rec
				want.PriceMicros = int64(v)*1_000_000 + int64(i%n%100)*10_000
				switch {
				case resp.StatusCode != 200:
					errs <- fmt.Sprintf("status %d: %s", resp.StatusCode, body)
					return
				case string(body) != string(promotion.AppendJSON(nil, &want)):
					errs <- fmt.Sprintf("version %d answered %s", v, body)
					return
				case v < last:
					errs <- fmt.Sprintf("version went back from %d to %d", last, v)
					return
				}
				last = v
				count.Add(1)
			}
		}()
	}
	for v := 2; v <= 5; v++ {
		csv, _ := rows(n, v)
		if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv)); r.status != 200 {
			t.Fatalf("import %d: %d %s", v, r.status, r.body)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if count.Load() == 0 {
		t.Fatal("no lookups were made")
	}
}

// TestLookupPathDoesNotAllocate runs the server's whole handler chain
// (routing, metrics, lookup) for a found and an unknown ID.
func TestLookupPathDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; make test also runs this package without it")
	}
	s := startServer(t)
	csv, recs := rows(100, 1)
	if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv)); r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	h := s.handler()
	for _, path := range []string{"/promotions/" + recs[3].ID.String(), "/promotions/00000000-0000-0000-0000-000000000000"} {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(fasthttp.MethodGet)
		ctx.Request.SetRequestURI(path)
		h(&ctx)
		if n := testing.AllocsPerRun(1000, func() {
			ctx.Response.Reset()
			h(&ctx)
		}); n != 0 {
			t.Errorf("%s: %v allocations per request, want 0", path, n)
		}
	}
}

// BenchmarkHandler measures the server's handler chain for lookups of
// random existing IDs, without the network.
func BenchmarkHandler(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = b.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Start(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	var csv bytes.Buffer
	if _, err := gen.Generate(&csv, gen.DefaultConfig(200_000)); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, 0, 1024)
	for line := range strings.Lines(csv.String()) {
		if len(ids) == cap(ids) {
			break
		}
		ids = append(ids, line[:36])
	}
	resp, err := http.Post("http://"+s.Addr()+"/process-csv?wait=true", "text/csv", &csv)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("import: %v %v", err, resp)
	}
	resp.Body.Close()
	h := s.handler()
	ctxs := make([]*fasthttp.RequestCtx, len(ids))
	for i, id := range ids {
		ctxs[i] = new(fasthttp.RequestCtx)
		ctxs[i].Request.Header.SetMethod(fasthttp.MethodGet)
		ctxs[i].Request.SetRequestURI("/promotions/" + id)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ctx := ctxs[i%len(ctxs)]
		ctx.Response.Reset()
		h(ctx)
		i++
	}
	if ctxs[0].Response.StatusCode() != 200 {
		b.Fatalf("lookup: %d %s", ctxs[0].Response.StatusCode(), ctxs[0].Response.Body())
	}
}

// TestSlowClientsAreCutOff checks the timeouts: a client that never
// finishes its headers is disconnected, and an upload that stalls fails
// without touching the serving version.
func TestSlowClientsAreCutOff(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.HTTP.ReadTimeout = 300 * time.Millisecond
		c.UploadIdleTimeout = 300 * time.Millisecond
	})
	csv, recs := rows(20, 1)
	if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv)); r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}

	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // never ends
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("connection with unfinished headers was not closed by the server: %v", err)
	}

	up, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	// More than the 8 KiB fasthttp reads before the handler starts, then
	// nothing.
	big, _ := rows(400, 2)
	fmt.Fprintf(up, "POST /process-csv HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 100000\r\n\r\n%s", big[:16<<10])
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := s.get(t, "/imports/2").json(t)
		if m["state"] == "failed" {
			if !strings.Contains(m["error"].(string), "upload interrupted") {
				t.Fatalf("stalled upload failed with %q", m["error"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stalled upload still %v", m["state"])
		}
		time.Sleep(20 * time.Millisecond)
	}
	checkLookup(t, s, recs[2], 1)
}

// A request whose headers exceed the server's read buffer is refused:
// 431 (or 400), or, when the server's close of the connection with the
// rest of the headers unread (a reset) overtakes the answer, a broken
// connection. Either way the server goes on serving.
func TestOversizedHeadersAreRefused(t *testing.T) {
	s := startServer(t)
	r, err := tryDo(http.MethodGet, s.url+"/healthz", "", nil, "X-Big", strings.Repeat("a", 64<<10))
	switch {
	case err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE):
		t.Fatalf("64 KiB header: %v, want 431 or a reset connection", err)
	case err == nil && r.status != 431 && r.status != 400:
		t.Fatalf("64 KiB header: %d %s", r.status, r.body)
	}
	if r := s.get(t, "/healthz"); r.status != 200 {
		t.Fatalf("healthz after the refusal: %d %s", r.status, r.body)
	}
}

// TestCloseInterruptsStalledUpload: shutting down must not wait for a
// client that stopped sending.
func TestCloseInterruptsStalledUpload(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.ImportDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	big, _ := rows(400, 1)
	fmt.Fprintf(conn, "POST /process-csv HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 100000\r\n\r\n%s", big[:16<<10])
	for deadline := time.Now().Add(10 * time.Second); s.ingest.Running() == nil; {
		if time.Now().After(deadline) {
			t.Fatal("the stalled upload never started an import")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("close with a stalled upload (upload idle timeout is %v): %v after %v", time.Minute, err, time.Since(start))
	}
}

// TestCutUploadsAreNotImported: a client that disconnects mid-upload must
// never make what it sent so far the dataset, whatever the body form and
// wherever the cut falls.
func TestCutUploadsAreNotImported(t *testing.T) {
	s := startServer(t)
	good, recs := rows(50, 1)
	if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(good)); r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	body, _ := rows(2000, 2)
	cut := body[:len(body)/2]
	cut = cut[:strings.LastIndexByte(cut, '\n')+1] // on a row boundary: every row sent is valid

	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	fw, _ := mw.CreateFormFile("file", "p.csv")
	io.WriteString(fw, body)
	mw.Close()
	mpCut := mp.String()[:mp.Len()/2]

	cases := map[string]string{
		"content-length": fmt.Sprintf("POST /process-csv?max_rejected=10 HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n%s", len(body), cut),
		"chunked":        fmt.Sprintf("POST /process-csv?max_rejected=10 HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(cut), cut),
		"multipart":      fmt.Sprintf("POST /process-csv?max_rejected=10 HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s", mw.FormDataContentType(), mp.Len(), mpCut),
	}
	id := 1
	for name, raw := range cases {
		id++
		conn, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, raw)
		// Wait until the server is reading this upload, then hang up.
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := s.get(t, fmt.Sprintf("/imports/%d", id))
			if r.status == 200 && r.json(t)["bytes_read"].(float64) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: upload never started: %s", name, r.body)
			}
			time.Sleep(5 * time.Millisecond)
		}
		conn.Close()
		st := waitImport(t, s, fmt.Sprintf("/imports/%d", id))
		if st["state"] != "failed" || !strings.Contains(st["error"].(string), "upload interrupted") {
			t.Fatalf("%s: cut upload ended %v: %v", name, st["state"], st["error"])
		}
		checkLookup(t, s, recs[9], 1)
	}
	if r := s.get(t, "/datasets/current"); r.json(t)["version"] != float64(1) {
		t.Fatalf("current after cut uploads: %s", r.body)
	}
}

func TestOddRequests(t *testing.T) {
	s := startServer(t)
	csv, recs := rows(10, 1)
	s.writeFile(t, "p.csv", csv)
	// filename in the query string, as some clients send it.
	if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true&filename=p.csv", "", nil); r.status != 200 {
		t.Fatalf("query filename: %d %s", r.status, r.body)
	}
	expectJSONError(t, do(t, http.MethodPost, s.url+"/process-csv", "", nil), 400, "empty request")
	expectJSONError(t, do(t, http.MethodPost, s.url+"/process-csv?filename=p.csv", "text/csv", strings.NewReader(csv)), 400, "one or the other")

	// HEAD answers like GET, without a body.
	for _, path := range []string{"/promotions/" + recs[1].ID.String(), "/healthz", "/datasets", "/imports"} {
		r := do(t, http.MethodHead, s.url+path, "", nil)
		if r.status != 200 || len(r.body) != 0 {
			t.Fatalf("HEAD %s: %d %q", path, r.status, r.body)
		}
	}
	if r := do(t, http.MethodHead, s.url+"/promotions/"+recs[1].ID.String(), "", nil); r.header.Get("X-Dataset-Version") != "1" {
		t.Fatalf("HEAD lookup without X-Dataset-Version: %v", r.header)
	}
	// A trailing slash is not part of an id, and no redirect either.
	expectJSONError(t, do(t, http.MethodGet, s.url+"/promotions/"+recs[1].ID.String()+"/", "", nil), 404, "no such endpoint")
	expectJSONError(t, do(t, http.MethodPost, s.url+"/datasets/99999999999999999999/activate", "", nil), 404, "no such")

	// A named pipe in the import directory must not block the handler.
	if err := syscall.Mkfifo(filepath.Join(s.importDir, "fifo.csv"), 0o644); err != nil {
		t.Fatal(err)
	}
	expectJSONError(t, s.postForm(t, "/process-csv", "fifo.csv"), 400, "not a regular file")
}

// TestImportHistorySurvivesRestartAndDeleteCancels: DELETE /imports/{id}
// cancels a running upload and leaves the serving version alone; after a
// restart GET /imports lists the earlier imports (the cancelled one too)
// and new imports get higher ids.
func TestImportHistorySurvivesRestartAndDeleteCancels(t *testing.T) {
	const token = "s3cret"
	auth := []string{"Authorization", "Bearer " + token}
	dataDir, importDir := t.TempDir(), t.TempDir()
	start := func() *testServer {
		t.Helper()
		cfg := DefaultConfig()
		cfg.Addr = "127.0.0.1:0"
		cfg.DataDir, cfg.ImportDir, cfg.IngestToken = dataDir, importDir, token
		cfg.CacheSize, cfg.MemoryBudget = 8<<20, 16<<20
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		s, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return &testServer{Server: s, url: "http://" + s.Addr(), importDir: importDir, dataDir: dataDir}
	}
	stop := func(s *testServer) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s := start()
	good, recs := rows(20, 1)
	s.writeFile(t, "good.csv", good)
	s.writeFile(t, "bad.csv", "nope\n")
	if r := s.postForm(t, "/process-csv?wait=true", "good.csv", auth...); r.status != 200 {
		t.Fatalf("import 1: %d %s", r.status, r.body)
	}
	if r := s.postForm(t, "/process-csv?wait=true", "bad.csv", auth...); r.status != 422 {
		t.Fatalf("import 2: %d %s", r.status, r.body)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	posted := make(chan int, 1)
	go func() {
		req, err := http.NewRequest(http.MethodPost, s.url+"/process-csv", pr)
		if err != nil {
			t.Error(err)
			posted <- 0
			return
		}
		req.Header.Set("Content-Type", "text/csv")
		req.Header.Set(auth[0], auth[1])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			posted <- 0 // the server may close the cancelled upload
			return
		}
		resp.Body.Close()
		posted <- resp.StatusCode
	}()
	big, _ := rows(400, 2) // more than fasthttp reads before the handler runs
	if _, err := io.WriteString(pw, big); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := s.get(t, "/imports/3")
		if r.status == 200 && r.json(t)["bytes_read"].(float64) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload never started: %d %s", r.status, r.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := do(t, http.MethodDelete, s.url+"/imports/3", "", nil); r.status != 401 {
		t.Fatalf("DELETE without the token: %d %s", r.status, r.body)
	}
	r := do(t, http.MethodDelete, s.url+"/imports/3", "", nil, auth...)
	if r.status != 200 || r.json(t)["state"] != "failed" || !strings.Contains(r.json(t)["error"].(string), "cancelled") {
		t.Fatalf("DELETE of the running upload: %d %s", r.status, r.body)
	}
	<-posted
	checkLookup(t, s, recs[7], 1)
	var list struct{ Datasets []map[string]any }
	if err := json.Unmarshal(s.get(t, "/datasets").body, &list); err != nil || len(list.Datasets) != 1 || list.Datasets[0]["version"] != float64(1) {
		t.Fatalf("datasets after the cancellation: %v %+v", err, list)
	}
	if r := do(t, http.MethodDelete, s.url+"/imports/1", "", nil, auth...); r.status != 409 {
		t.Fatalf("DELETE of a finished import: %d %s", r.status, r.body)
	}
	stop(s)

	s = start()
	defer stop(s)
	var imports struct{ Imports []map[string]any }
	if err := json.Unmarshal(s.get(t, "/imports").body, &imports); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range imports.Imports {
		got = append(got, fmt.Sprintf("%v %v", st["import_id"], st["state"]))
	}
	if want := "[3 failed 2 failed 1 succeeded]"; fmt.Sprint(got) != want {
		t.Fatalf("imports after restart: %v, want %s", got, want)
	}
	if m := s.get(t, "/imports/1").json(t); m["dataset_version"] != float64(1) || m["rows"] != float64(20) {
		t.Fatalf("import 1 after restart: %v", m)
	}
	if m := s.get(t, "/imports/3").json(t); !strings.Contains(m["error"].(string), "cancelled") {
		t.Fatalf("import 3 after restart: %v", m)
	}
	if r := s.postForm(t, "/process-csv?wait=true", "good.csv", auth...); r.status != 200 || r.json(t)["import_id"] != float64(4) {
		t.Fatalf("first import after restart: %d %s", r.status, r.body)
	}
}
