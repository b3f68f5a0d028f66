package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
)

// TestMain lets tests run this test binary as the promo command itself, so
// that a server can be started as a child process and killed.
func TestMain(m *testing.M) {
	if os.Getenv("PROMO_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(localsvctest.Run(m))
}

// child is a promo standalone server in a child process.
type child struct {
	cmd *exec.Cmd
	url string
	log *strings.Builder
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startChild(t *testing.T, addr, dataDir, importDir string) *child {
	t.Helper()
	return startProcess(t, "http://"+addr+"/healthz", "standalone", "--addr", addr, "--data-dir", dataDir, "--import-dir", importDir, "--memory-budget", "16MiB")
}

// startProcess runs this test binary as promo with args and waits until
// ready answers 200.
func startProcess(t *testing.T, ready string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "PROMO_TEST_RUN_MAIN=1")
	localsvc.DieWithParent(cmd)
	log := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(ready)
	c := &child{cmd: cmd, url: "http://" + u.Host, log: log}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("promo %s did not start: %v\n%s", args[0], err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
}

func getJSON(t *testing.T, u string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET %s: %v: %s", u, err, b)
	}
	return resp.StatusCode, m
}

// writeVersion writes n rows whose prices encode tag and returns them.
func writeVersion(t *testing.T, path string, n int, tag int64) []promotion.Record {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(7, 7)) // the same ids in every version
	recs := make([]promotion.Record, n)
	var line []byte
	for i := range recs {
		r := &recs[i]
		for j := range r.ID {
			r.ID[j] = byte(rng.Uint32())
		}
		r.PriceMicros = tag*1_000_000 + int64(i%97)
		r.Expires = 1_600_000_000 + int64(i)
		line = gen.AppendRow(line[:0], r, gen.FormatGo)
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	return recs
}

// checkServes asserts that the server answers every sampled record from
// exactly one complete version: the one /datasets/current names.
func checkServes(t *testing.T, c *child, versions map[int64][]promotion.Record) int64 {
	t.Helper()
	status, cur := getJSON(t, c.url+"/datasets/current")
	if status != 200 {
		t.Fatalf("no current dataset after restart: %v\n%s", cur, c.log)
	}
	v := int64(cur["version"].(float64))
	recs, ok := versions[v]
	if !ok {
		t.Fatalf("current version %d was never completed", v)
	}
	if rows := int64(cur["rows"].(float64)); rows != int64(len(recs)) {
		t.Fatalf("version %d has %d rows, want %d", v, rows, len(recs))
	}
	for i := 0; i < len(recs); i += len(recs)/200 + 1 {
		resp, err := http.Get(c.url + "/promotions/" + recs[i].ID.String())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != string(promotion.AppendJSON(nil, &recs[i])) || resp.Header.Get("X-Dataset-Version") != fmt.Sprint(v) {
			t.Fatalf("row %d: %d %s (version %s), want %s from version %d", i, resp.StatusCode, body, resp.Header.Get("X-Dataset-Version"), promotion.AppendJSON(nil, &recs[i]), v)
		}
	}
	return v
}

func TestSIGKILLDuringImportKeepsPreviousVersion(t *testing.T) {
	dir := t.TempDir()
	dataDir, importDir := filepath.Join(dir, "data"), filepath.Join(dir, "import")
	os.MkdirAll(importDir, 0o755)
	addr := freeAddr(t)
	c := startChild(t, addr, dataDir, importDir)

	versions := map[int64][]promotion.Record{}
	versions[1] = writeVersion(t, filepath.Join(importDir, "v1.csv"), 20_000, 1)
	resp, err := http.PostForm(c.url+"/process-csv?wait=true", url.Values{"filename": {"v1.csv"}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first import: %v %v", err, resp)
	}
	resp.Body.Close()

	// Kill while an upload is half sent: the server is parsing.
	pr, pw := io.Pipe()
	go func() {
		resp, err := http.Post(c.url+"/process-csv", "text/csv", pr)
		if err == nil {
			resp.Body.Close()
		}
	}()
	half := gen.AppendRow(nil, &promotion.Record{ID: promotion.ID{1}, PriceMicros: 1, Expires: 1}, gen.FormatGo)
	for range 5000 {
		if _, err := pw.Write(half); err != nil {
			t.Fatal(err)
		}
	}
	for {
		_, st := getJSON(t, c.url+"/imports/2")
		if st["state"] == "running" && st["bytes_read"].(float64) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.kill(t)
	pw.CloseWithError(io.ErrClosedPipe)

	c = startChild(t, addr, dataDir, importDir)
	if v := checkServes(t, c, versions); v != 1 {
		t.Fatalf("serving version %d after a killed import, want 1", v)
	}
	if entries, _ := os.ReadDir(filepath.Join(dataDir, "tmp")); len(entries) != 0 {
		t.Fatalf("leftover import files after restart: %v", entries)
	}
	_, ds := getJSON(t, c.url+"/datasets")
	if n := len(ds["datasets"].([]any)); n != 1 {
		t.Fatalf("datasets after restart: %v", ds)
	}

	// Kill at random moments of a file import, sorting and ingesting
	// included: after each restart exactly one complete version serves.
	next := int64(2)
	versions[next] = writeVersion(t, filepath.Join(importDir, "next.csv"), 300_000, next)
	rng := rand.New(rand.NewPCG(1, 2))
	for attempt := range 6 {
		resp, err := http.PostForm(c.url+"/process-csv", url.Values{"filename": {"next.csv"}})
		if err != nil || resp.StatusCode != 202 {
			t.Fatalf("attempt %d: import: %v %v", attempt, err, resp)
		}
		resp.Body.Close()
		killAfter := time.Duration(rng.IntN(150)) * time.Millisecond
		time.Sleep(killAfter)
		c.kill(t)
		c = startChild(t, addr, dataDir, importDir)
		v := checkServes(t, c, versions)
		t.Logf("attempt %d: killed after %v, serving version %d", attempt, killAfter, v)
		if v == next {
			next++
			versions[next] = writeVersion(t, filepath.Join(importDir, "next.csv"), 300_000, next)
		}
	}
}
