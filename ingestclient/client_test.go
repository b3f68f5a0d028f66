package ingestclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/ingest"
	"github.com/promotion-service/promo/ingestclient"
	"github.com/promotion-service/promo/standalone/standalonetest"
)

// badLines are rejected rows appended to generated files, with the field
// each is rejected for.
var badLines = []struct{ line, field string }{
	{"not-a-uuid,1.00,2018-08-04 05:32:31 +0200 CEST", "id"},
	{"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118,-1.00,2018-08-04 05:32:31 +0200 CEST", "price"},
	{"d018ef0b-dbd9-48f1-ac1a-eb4d90e57119,1.00,2018-13-04 05:32:31 +0200 CEST", "expiration_date"},
}

// mustStartServer starts a standalone server on a free loopback port and
// returns its base URL.
func mustStartServer(tb testing.TB, token string) string {
	tb.Helper()
	_, url := standalonetest.Start(tb, standalonetest.WithToken(token))
	return url
}

// mustWriteCSV writes rows generated rows followed by extra lines and
// returns the file's path.
func mustWriteCSV(tb testing.TB, rows int64, extra ...string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "promotions.csv")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if rows > 0 {
		if _, err := gen.Generate(f, gen.DefaultConfig(rows)); err != nil {
			tb.Fatal(err)
		}
	}
	for _, l := range extra {
		if _, err := io.WriteString(f, l+"\n"); err != nil {
			tb.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}

func mustNewClient(tb testing.TB, server, token string) *ingestclient.Client {
	tb.Helper()
	cfg := ingestclient.DefaultConfig(server)
	cfg.Token = token
	cfg.PollInterval = 10 * time.Millisecond
	c, err := ingestclient.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func fileSize(tb testing.TB, path string) int64 {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Size()
}

// recorder collects the progress reports of an import.
type recorder struct{ reports []ingestclient.Progress }

func (r *recorder) add(p ingestclient.Progress) { r.reports = append(r.reports, p) }

func TestImportSucceeds(t *testing.T) {
	url := mustStartServer(t, "")
	c := mustNewClient(t, url, "")
	const rows = 50_000
	path := mustWriteCSV(t, rows)
	size := fileSize(t, path)

	for version := uint64(1); version <= 2; version++ {
		var rec recorder
		st, err := c.Import(context.Background(), path, ingest.Options{}, rec.add)
		if err != nil {
			t.Fatalf("import %d: %v", version, err)
		}
		if st.State != ingest.StateSucceeded || st.Rows != rows || st.RowsAccepted != rows ||
			st.RowsRejected != 0 || st.DatasetVersion != version || st.ImportID != int64(version) {
			t.Fatalf("import %d: unexpected final status %+v", version, st)
		}
		if st.BytesTotal == nil || *st.BytesTotal != size || st.BytesRead != size {
			t.Fatalf("import %d: server read %d of %v bytes, want %d", version, st.BytesRead, st.BytesTotal, size)
		}
		if len(rec.reports) == 0 {
			t.Fatal("progress was never called")
		}
		var prev int64
		for i, p := range rec.reports {
			if p.BytesSent < prev {
				t.Fatalf("report %d: bytes sent went back from %d to %d", i, prev, p.BytesSent)
			}
			if p.BytesTotal != size {
				t.Fatalf("report %d: bytes total %d, want %d", i, p.BytesTotal, size)
			}
			prev = p.BytesSent
		}
		last := rec.reports[len(rec.reports)-1]
		if last.BytesSent != size || last.Phase != ingest.StateSucceeded || last.Status.ImportID != st.ImportID {
			t.Fatalf("last report %+v: want all %d bytes sent and phase succeeded", last, size)
		}
	}
}

func TestImportRejectedRows(t *testing.T) {
	url := mustStartServer(t, "")
	c := mustNewClient(t, url, "")
	var extra []string
	for _, b := range badLines {
		extra = append(extra, b.line)
	}
	const rows = 1000
	path := mustWriteCSV(t, rows, extra...)

	t.Run("refused", func(t *testing.T) {
		st, err := c.Import(context.Background(), path, ingest.Options{}, nil)
		var ie *ingestclient.ImportError
		if !errors.As(err, &ie) {
			t.Fatalf("got error %v, want an *ImportError", err)
		}
		if st.State != ingest.StateFailed || ie.Status.ImportID != st.ImportID || st.DatasetVersion != 0 {
			t.Fatalf("unexpected status %+v", st)
		}
		if !strings.Contains(err.Error(), "max_rejected=0") || !strings.Contains(err.Error(), st.Error) {
			t.Fatalf("error %q does not carry the server's message %q", err, st.Error)
		}
		// The import fails at the first bad row, but reading goes on to
		// list up to 100 of them, so the file can be fixed in one go.
		if len(st.Errors) != len(badLines) || st.RowsRejected != int64(len(badLines)) {
			t.Fatalf("got row errors %+v (%d rejected), want all %d bad rows", st.Errors, st.RowsRejected, len(badLines))
		}
		if e := st.Errors[0]; e.Line != rows+1 || e.Field != badLines[0].field || e.Reason == "" {
			t.Fatalf("got row error %+v, want line %d, field %s", e, rows+1, badLines[0].field)
		}
	})

	t.Run("tolerated", func(t *testing.T) {
		st, err := c.Import(context.Background(), path, ingest.Options{MaxRejected: int64(len(badLines))}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != ingest.StateSucceeded || st.Rows != rows || st.RowsRejected != int64(len(badLines)) || st.DatasetVersion == 0 {
			t.Fatalf("unexpected status %+v", st)
		}
		if len(st.Errors) != len(badLines) {
			t.Fatalf("got row errors %+v, want %d", st.Errors, len(badLines))
		}
		for i, e := range st.Errors {
			if e.Line != rows+1+int64(i) || e.Field != badLines[i].field {
				t.Errorf("row error %d: got %+v, want line %d, field %s", i, e, rows+1+i, badLines[i].field)
			}
		}
	})

	t.Run("one too many", func(t *testing.T) {
		_, err := c.Import(context.Background(), path, ingest.Options{MaxRejected: int64(len(badLines) - 1)}, nil)
		var ie *ingestclient.ImportError
		if !errors.As(err, &ie) || ie.Status.RowsRejected != int64(len(badLines)) {
			t.Fatalf("got error %v, want an *ImportError after %d rejected rows", err, len(badLines))
		}
	})

	t.Run("negative", func(t *testing.T) {
		if _, err := c.Import(context.Background(), path, ingest.Options{MaxRejected: -1}, nil); err == nil {
			t.Fatal("a negative max_rejected was accepted")
		}
	})
}

// TestImportStoppedEarly sends a file whose first row is bad and which is
// far larger than the socket buffers: the server stops reading it, and the
// client must still report the import's failure, not a broken pipe.
func TestImportStoppedEarly(t *testing.T) {
	url := mustStartServer(t, "")
	c := mustNewClient(t, url, "")
	path := filepath.Join(t.TempDir(), "bad-first.csv")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(f, badLines[1].line+"\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := gen.Generate(f, gen.DefaultConfig(400_000)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(name string, c *ingestclient.Client) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			st, err := c.Import(context.Background(), path, ingest.Options{}, nil)
			var ie *ingestclient.ImportError
			if !errors.As(err, &ie) {
				t.Fatalf("got error %v, want an *ImportError", err)
			}
			if st.State != ingest.StateFailed || len(st.Errors) != 1 || st.Errors[0].Line != 1 || st.Errors[0].Field != "price" {
				t.Fatalf("unexpected status %+v", st)
			}
		})
	}
	check("default transport", c)
	// A plain transport often reports the broken connection instead of the
	// answer; the client then finds the import and follows it.
	cfg := ingestclient.DefaultConfig(url)
	cfg.HTTP = &http.Client{}
	cfg.PollInterval = 10 * time.Millisecond
	plain, err := ingestclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		check("plain transport", plain)
	}
}

func TestImportToken(t *testing.T) {
	const token = "s3cret"
	url := mustStartServer(t, token)
	small := mustWriteCSV(t, 100)
	// Larger than the socket buffers, so the server answers while the
	// client still sends.
	large := mustWriteCSV(t, 300_000)

	f := func(name, token, path, wantMsg string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			st, err := mustNewClient(t, url, token).Import(context.Background(), path, ingest.Options{}, nil)
			var se *ingestclient.ServerError
			if !errors.As(err, &se) {
				t.Fatalf("got error %v, want a *ServerError", err)
			}
			if se.StatusCode != http.StatusUnauthorized || !strings.Contains(se.Message, wantMsg) ||
				!strings.Contains(err.Error(), "401") || st.ImportID != 0 {
				t.Fatalf("got %v (status %+v), want 401 with %q", err, st, wantMsg)
			}
		})
	}
	f("missing", "", small, "missing bearer token")
	f("wrong", "guess", small, "invalid bearer token")
	f("missing large", "", large, "missing bearer token")
	f("wrong large", "guess", large, "invalid bearer token")

	st, err := mustNewClient(t, url, token).Import(context.Background(), small, ingest.Options{}, nil)
	if err != nil || st.State != ingest.StateSucceeded {
		t.Fatalf("with the token: %+v, %v", st, err)
	}
}

func TestImportBadFile(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "unexpected", http.StatusTeapot)
	}))
	defer srv.Close()
	c := mustNewClient(t, srv.URL, "")
	dir := t.TempDir()

	_, err := c.Import(context.Background(), filepath.Join(dir, "missing.csv"), ingest.Options{}, nil)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing.csv") {
		t.Fatalf("missing file: got %v", err)
	}
	_, err = c.Import(context.Background(), dir, ingest.Options{}, nil)
	if err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("directory: got %v", err)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("the server got %d requests", n)
	}
}

func TestImportUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	path := mustWriteCSV(t, 10)

	_, err = mustNewClient(t, url, "").Import(context.Background(), path, ingest.Options{}, nil)
	if !errors.Is(err, ingestclient.ErrUnreachable) {
		t.Fatalf("got %v, want ErrUnreachable", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, url) || !strings.Contains(msg, "connection refused") || strings.Contains(msg, "\n") {
		t.Fatalf("unclear error %q", msg)
	}
}

// holdImport starts an import whose body is a pipe and returns once the
// server runs it; release ends the body and waits for the import to finish.
func holdImport(t *testing.T, url string) (release func()) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, url+"/process-csv", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/csv")
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				err = fmt.Errorf("held import answered %s", resp.Status)
			}
		}
		done <- err
	}()
	go func() {
		_, _ = gen.Generate(pw, gen.DefaultConfig(1000))
	}()
	c := mustNewClient(t, url, "")
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := c.Imports(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(list) > 0 && list[0].State == ingest.StateRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the held import did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return func() {
		pw.Close()
		if err := <-done; err != nil {
			t.Errorf("held import: %v", err)
		}
		for {
			st, err := c.Status(context.Background(), 1)
			if err != nil {
				t.Fatal(err)
			}
			if st.State == ingest.StateSucceeded || st.State == ingest.StateFailed {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the held import did not finish")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestImportConflict(t *testing.T) {
	url := mustStartServer(t, "")
	release := holdImport(t, url)
	released := false
	defer func() {
		if !released {
			release()
		}
	}()
	c := mustNewClient(t, url, "")
	for _, rows := range []int64{100, 300_000} {
		path := mustWriteCSV(t, rows)
		_, err := c.Import(context.Background(), path, ingest.Options{}, nil)
		var se *ingestclient.ServerError
		if !errors.As(err, &se) || se.StatusCode != http.StatusConflict {
			t.Fatalf("%d rows: got %v, want a 409 *ServerError", rows, err)
		}
		if !bytes.Equal(se.Fields["import_id"], []byte("1")) || !strings.Contains(err.Error(), "already running") {
			t.Fatalf("%d rows: error %v does not name the running import", rows, err)
		}
	}
	release()
	released = true

	list, err := c.Imports(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("the refused imports left jobs: %+v", list)
	}
	// As many rows as the first import: the activation guard passes it.
	st, err := c.Import(context.Background(), mustWriteCSV(t, 1000), ingest.Options{}, nil)
	if err != nil || st.DatasetVersion != 2 {
		t.Fatalf("after the held import: %+v, %v", st, err)
	}
}

func TestImportCancelled(t *testing.T) {
	url := mustStartServer(t, "")
	c := mustNewClient(t, url, "")
	path := mustWriteCSV(t, 100)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Import(ctx, path, ingest.Options{}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}

	// Cancelled during the upload: the server discards the import.
	path = mustWriteCSV(t, 300_000)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	_, err := c.Import(ctx, path, ingest.Options{}, func(p ingestclient.Progress) {
		if p.Phase == ingestclient.PhaseUploading {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	// The server really discards it: the import fails, and no version
	// becomes visible.
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := c.Imports(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 {
			t.Fatalf("imports on the server after the cancelled upload: %+v, want the one", list)
		}
		if list[0].State == ingest.StateFailed {
			if list[0].DatasetVersion != 0 || list[0].Rows != 0 {
				t.Fatalf("the cancelled import: %+v", list[0])
			}
			break
		}
		if list[0].State == ingest.StateSucceeded || time.Now().After(deadline) {
			t.Fatalf("the cancelled import on the server: %+v, want failed", list[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get(url + "/datasets/current")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/datasets/current after the cancelled import: %d, want 404 (nothing imported)", resp.StatusCode)
	}
}

// TestImportOddAnswers covers answers a standalone server does not give
// but a proxy in front of it, or a restarted server, may.
func TestImportOddAnswers(t *testing.T) {
	path := mustWriteCSV(t, 10)
	f := func(name string, h http.HandlerFunc, check func(ingest.Status, error) bool) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			defer srv.Close()
			st, err := mustNewClient(t, srv.URL, "").Import(context.Background(), path, ingest.Options{}, nil)
			if !check(st, err) {
				t.Fatalf("unexpected %+v, %v", st, err)
			}
		})
	}
	f("not JSON", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "  upstream\n down  ", http.StatusBadGateway)
	}, func(_ ingest.Status, err error) bool {
		var se *ingestclient.ServerError
		return errors.As(err, &se) && se.StatusCode == http.StatusBadGateway && se.Message == "upstream down" && se.Fields == nil
	})
	f("lost import", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/imports":
			_, _ = io.WriteString(w, `{"imports":[]}`)
		case "/process-csv":
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, `{"import_id":7,"status_url":"/imports/7","state":"running","phase":"parsing"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"error":"no such import (ids are remembered until restart)","import_id":7}`)
		}
	}, func(st ingest.Status, err error) bool {
		return err != nil && strings.Contains(err.Error(), "no longer knows") && st.ImportID == 7 && st.State == ingest.StateRunning
	})
}

func TestNewClientValidates(t *testing.T) {
	f := func(server string, ok bool) {
		t.Helper()
		_, err := ingestclient.New(ingestclient.Config{Server: server})
		if (err == nil) != ok {
			t.Errorf("NewClient(%q): got error %v, want ok=%v", server, err, ok)
		}
	}
	f("http://127.0.0.1:8080", true)
	f("https://promo.example.com/", true)
	f("http://promo.example.com/base", true)
	f("", false)
	f("127.0.0.1:8080", false)
	f("ftp://127.0.0.1", false)
	f("http://", false)
	f("http://127.0.0.1:8080/?x=1", false)
	f("http://a b", false)
}
