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
	"strconv"
	"strings"
	"sync"
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

// child is a promo server in a child process.
type child struct {
	cmd *exec.Cmd
	url string
	log *lockedLog
}

// lockedLog collects a child's output; the test reads it while the
// child's output is still being copied in.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// freeAddr returns an address on 127.0.0.1 that was free a moment ago,
// for a child process to bind (startProcess retries, bounded, when
// another socket took it meanwhile).
func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := localsvc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

func startChild(t *testing.T, addr, dataDir, importDir string) *child {
	t.Helper()
	return startProcess(t, "http://"+addr+"/healthz", "standalone", "--addr", addr, "--data-dir", dataDir, "--import-dir", importDir, "--memory-budget", "16MiB")
}

// startProcess runs this test binary as promo with args and waits until
// ready answers 200. The child dies with the test binary and is killed
// when the test ends. A child that exits because its address is taken
// is started again, up to 5 times with backoff; one that exits otherwise
// fails the test with its output.
func startProcess(t *testing.T, ready string, args ...string) *child {
	t.Helper()
	u, err := url.Parse(ready)
	if err != nil {
		t.Fatal(err)
	}
	pause := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "PROMO_TEST_RUN_MAIN=1")
		localsvc.DieWithParent(cmd)
		log := &lockedLog{}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
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
			if exited(cmd.Process.Pid) {
				werr := cmd.Wait()
				if strings.Contains(log.String(), "address already in use") && attempt < 5 {
					t.Logf("promo %s: its address was taken; starting it again in %v", args[0], pause)
					time.Sleep(pause)
					pause *= 2
					break
				}
				t.Fatalf("promo %s exited before it was ready: %v\n%s", args[0], werr, log)
			}
			if time.Now().After(deadline) {
				t.Fatalf("promo %s did not start: %v\n%s", args[0], err, log)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// exited reports whether the child pid has exited (a zombie not yet
// waited for), without reaping it.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
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
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, st := getJSON(t, c.url+"/imports/2")
		if st["state"] == "running" && st["bytes_read"].(float64) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upload never started parsing: %v", st)
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

	// Kill a file import in each of its phases, as they are observed in
	// its status: after each restart exactly one complete version serves.
	// A kill is only made once the import is seen running in the phase,
	// and the kills must leave the previous version serving at least
	// once in parsing and once in a later phase: otherwise, on a fast
	// machine, this would silently be a restart test.
	next := int64(2)
	versions[next] = writeVersion(t, filepath.Join(importDir, "next.csv"), 300_000, next)
	landed := map[string]int{}
	for attempt, phase := range []string{"parsing", "sorting", "ingesting", "parsing", "sorting", "ingesting"} {
		resp, err := http.PostForm(c.url+"/process-csv", url.Values{"filename": {"next.csv"}})
		if err != nil || resp.StatusCode != 202 {
			t.Fatalf("attempt %d: import: %v %v", attempt, err, resp)
		}
		var started map[string]any
		err = json.NewDecoder(resp.Body).Decode(&started)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		status := fmt.Sprintf("%s/imports/%v", c.url, started["import_id"])
		seen := waitPhase(t, status, phase)
		c.kill(t)
		c = startChild(t, addr, dataDir, importDir)
		v := checkServes(t, c, versions)
		t.Logf("attempt %d: killed in phase %q (seen: %q), serving version %d", attempt, phase, seen, v)
		if v == next {
			next++
			versions[next] = writeVersion(t, filepath.Join(importDir, "next.csv"), 300_000, next)
		} else if seen == phase {
			landed[phase]++
		}
	}
	if landed["parsing"] == 0 || landed["sorting"]+landed["ingesting"] == 0 {
		t.Fatalf("kills that left the previous version serving, by phase: %v; want at least one in parsing and one after", landed)
	}
	// The same import, not killed, serves.
	resp, err = http.PostForm(c.url+"/process-csv?wait=true", url.Values{"filename": {"next.csv"}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("import without a kill: %v %v", err, resp)
	}
	resp.Body.Close()
	if v := checkServes(t, c, versions); v != next {
		t.Fatalf("serving version %d after an import that was not killed, want %d", v, next)
	}
}

// waitPhase polls an import's status until it runs in phase, and returns
// the phase it last saw running ("" when the import ended before phase
// was seen).
func waitPhase(t *testing.T, status, phase string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		_, st := getJSON(t, status)
		if st["state"] != "running" && st["state"] != "queued" {
			return last
		}
		if p, _ := st["phase"].(string); p != "" {
			last = p
			if p == phase {
				return p
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("import %s still running after 30s, never seen in phase %s", status, phase)
	return ""
}
