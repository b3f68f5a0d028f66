package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/ingest"
	"github.com/promotion-service/promo/ingestclient"
	"github.com/promotion-service/promo/standalone/standalonetest"
)

// startImportServer starts a standalone server on a free loopback port and
// returns its base URL.
func startImportServer(tb testing.TB, token string) string {
	tb.Helper()
	_, url := standalonetest.Start(tb, standalonetest.WithToken(token))
	return url
}

// writeImportCSV writes rows generated rows followed by extra lines.
func writeImportCSV(tb testing.TB, rows int64, extra ...string) string {
	tb.Helper()
	var buf bytes.Buffer
	if _, err := gen.Generate(&buf, gen.DefaultConfig(rows)); err != nil {
		tb.Fatal(err)
	}
	for _, l := range extra {
		buf.WriteString(l + "\n")
	}
	path := filepath.Join(tb.TempDir(), "promotions.csv")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// runPromo runs promo with args and returns its exit code and output.
func runPromo(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	if err != nil {
		code = exitCode(err)
		errOut.WriteString("promo: " + err.Error() + "\n")
	}
	return code, out.String(), errOut.String()
}

// clearImportEnv keeps the environment of the test run from setting flags.
func clearImportEnv(t *testing.T) {
	for _, k := range []string{"PROMO_SERVER", "PROMO_TOKEN", "PROMO_MAX_REJECTED", "PROMO_INGEST_TOKEN"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Cleanup(func() { os.Setenv(k, v) })
			os.Unsetenv(k)
		}
	}
}

func TestImportCommand(t *testing.T) {
	clearImportEnv(t)
	url := startImportServer(t, "")
	good := writeImportCSV(t, 2000)
	bad := writeImportCSV(t, 2000, "not-a-uuid,1.00,2018-08-04 05:32:31 +0200 CEST",
		"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118,-1.00,2018-08-04 05:32:31 +0200 CEST")

	t.Run("succeeds", func(t *testing.T) {
		code, stdout, stderr := runPromo(t, "import", good, "--server", url)
		if code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", code, stderr)
		}
		for _, want := range []string{"import 1 succeeded", "dataset version: 1", "rows:            2000", "duplicates:      0", "rejected:        0", "elapsed:", "rows/s:"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("summary lacks %q:\n%s", want, stdout)
			}
		}
	})

	t.Run("fails with row errors", func(t *testing.T) {
		code, stdout, stderr := runPromo(t, "import", "--server", url, bad)
		if code != 1 {
			t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
		}
		for _, want := range []string{"import 2 failed", "max_rejected=0", "line 2001: id:", `"not-a-uuid"`} {
			if !strings.Contains(stdout, want) {
				t.Errorf("summary lacks %q:\n%s", want, stdout)
			}
		}
		if !strings.Contains(stderr, "promo: import 2 failed") {
			t.Errorf("stderr lacks the error:\n%s", stderr)
		}
	})

	t.Run("max rejected", func(t *testing.T) {
		code, stdout, stderr := runPromo(t, "import", bad, "--server", url, "--max-rejected", "2")
		if code != 0 || !strings.Contains(stdout, "dataset version: 2") || !strings.Contains(stdout, "rejected:        2") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	})

	t.Run("server from the environment", func(t *testing.T) {
		t.Setenv("PROMO_SERVER", url)
		code, stdout, stderr := runPromo(t, "import", good)
		if code != 0 || !strings.Contains(stdout, "dataset version: 3") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	})

	t.Run("standard input", func(t *testing.T) {
		data, err := os.ReadFile(good)
		if err != nil {
			t.Fatal(err)
		}
		// A pipe, whose length is unknown: the body goes chunked.
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			w.Write(data)
			w.Close()
		}()
		defer r.Close()
		setStdin(t, r)
		code, stdout, stderr := runPromo(t, "import", "-", "--server", url)
		if code != 0 || !strings.Contains(stdout, "dataset version: 4") || !strings.Contains(stdout, "rows:            2000") {
			t.Fatalf("pipe: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		// A file redirected to standard input, whose length is known.
		f, err := os.Open(good)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if got := stdinSize(f); got != int64(len(data)) {
			t.Fatalf("stdinSize of a redirected file = %d, want %d", got, len(data))
		}
		setStdin(t, f)
		code, stdout, stderr = runPromo(t, "import", "-", "--server", url)
		if code != 0 || !strings.Contains(stdout, "dataset version: 5") {
			t.Fatalf("redirected file: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		// A bad stream fails like a bad file, naming the line.
		setStdin(t, strings.NewReader("not-a-uuid,1.00,2018-08-04 05:32:31 +0200 CEST\n"))
		code, stdout, _ = runPromo(t, "import", "-", "--server", url)
		if code != 1 || !strings.Contains(stdout, "line 1: id:") {
			t.Fatalf("bad stream: exit %d\nstdout:\n%s", code, stdout)
		}
	})

	t.Run("progress lines", func(t *testing.T) {
		// A non-terminal gets plain lines, at most every two seconds: none
		// for an import this small, and never a carriage return.
		code, stdout, stderr := runPromo(t, "import", good, "--server", url)
		if code != 0 || !strings.Contains(stdout, "dataset version: ") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if strings.Contains(stderr, "\r") {
			t.Fatalf("carriage return on a non-terminal: %q", stderr)
		}
	})
}

// setStdin makes promo import - read r for the rest of the test.
func setStdin(t *testing.T, r io.Reader) {
	old := stdin
	stdin = r
	t.Cleanup(func() { stdin = old })
}

func TestImportCommandErrors(t *testing.T) {
	clearImportEnv(t)
	const token = "s3cret"
	url := startImportServer(t, token)
	good := writeImportCSV(t, 100)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()

	f := func(name string, wantCode int, wantStderr string, args ...string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := runPromo(t, append([]string{"import"}, args...)...)
			if code != wantCode || !strings.Contains(stderr, wantStderr) {
				t.Fatalf("exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", code, wantCode, wantStderr, stdout, stderr)
			}
			if wantCode != 0 && strings.Contains(stdout, "succeeded") {
				t.Fatalf("a failure printed a success:\n%s", stdout)
			}
		})
	}
	f("no file", 2, "expected one FILE", "--server", url)
	f("two files", 2, "expected one FILE", good, good, "--server", url)
	f("bad server", 2, "scheme must be http or https", good, "--server", "localhost:8080")
	f("bad server names the flag", 2, "Server (--server, PROMO_SERVER)", good, "--server", "localhost:8080")
	f("negative max rejected", 2, "--max-rejected", good, "--server", url, "--max-rejected", "-1")
	f("missing file", 1, "no such file", filepath.Join(t.TempDir(), "none.csv"), "--server", url)
	f("unreachable", 1, "cannot connect to the promo server at "+closed, good, "--server", closed)
	f("no token", 1, "401 Unauthorized", good, "--server", url)
	f("wrong token", 1, "invalid bearer token", good, "--server", url, "--token", "guess")
	f("token", 0, "", good, "--server", url, "--token", token)

	t.Run("token from the environment", func(t *testing.T) {
		t.Setenv("PROMO_INGEST_TOKEN", token)
		code, stdout, stderr := runPromo(t, "import", good, "--server", url)
		if code != 0 || !strings.Contains(stdout, "succeeded") {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	})
}

func TestProgressBar(t *testing.T) {
	p := ingestclient.Progress{
		Phase:      ingestclient.PhaseUploading,
		BytesSent:  40e6,
		BytesTotal: 100e6,
		Elapsed:    2 * time.Second,
		Status:     ingest.Status{ImportID: 1, RowsPerSecond: 1_093_000},
	}

	t.Run("terminal", func(t *testing.T) {
		var buf bytes.Buffer
		b := newProgressBar(&buf, true)
		b.update(p)
		got := buf.String()
		want := "\r[========>           ]  40% uploading 40.0/100.0 MB 20.0 MB/s 1.09M rows/s ETA 3s"
		if got != want {
			t.Fatalf("got  %q\nwant %q", got, want)
		}
		done := p
		done.Phase, done.BytesSent = ingest.StateSucceeded, p.BytesTotal
		b.update(done)
		b.finish()
		lines := strings.Split(buf.String(), "\r")
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "[====================] 100% succeeded") || !strings.HasSuffix(last, "\n") {
			t.Fatalf("last draw %q", last)
		}
		if len(lines) != 3 || len(lines[2]) < len(want)-1 {
			t.Fatalf("a shorter redraw does not blank the previous line: %q", buf.String())
		}
	})

	t.Run("plain", func(t *testing.T) {
		var buf bytes.Buffer
		b := newProgressBar(&buf, false)
		now := b.started
		b.now = func() time.Time { return now }
		b.update(p)
		now = now.Add(plainInterval)
		b.update(p)
		now = now.Add(time.Second)
		b.update(p)
		now = now.Add(time.Second)
		b.update(p)
		b.finish()
		want := "import: uploading 40.0/100.0 MB 20.0 MB/s 1.09M rows/s ETA 3s\n"
		if got := buf.String(); got != want+want {
			t.Fatalf("got %q, want two lines %q", got, want)
		}
	})

	t.Run("stream of unknown length", func(t *testing.T) {
		var buf bytes.Buffer
		b := newProgressBar(&buf, true)
		s := p
		s.BytesTotal = -1
		b.update(s)
		want := "\ruploading 40.0 MB 20.0 MB/s 1.09M rows/s"
		if got := buf.String(); got != want {
			t.Fatalf("got  %q\nwant %q", got, want)
		}
	})
}

func TestImportCommandCancelled(t *testing.T) {
	clearImportEnv(t)
	url := startImportServer(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"import", writeImportCSV(t, 10), "--server", url}, &stdout, &stderr)
	if !errors.Is(err, context.Canceled) || exitCode(err) != 1 {
		t.Fatalf("got %v", err)
	}
}
