package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
)

// lookupsServe waits until base answers every sampled record of recs
// from version v, and fails the test with the last difference after 60s.
func lookupsServe(t *testing.T, base string, recs []promotion.Record, v int) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < len(recs); {
		want := string(promotion.AppendJSON(nil, &recs[i]))
		resp, err := client.Get(base + "/promotions/" + recs[i].ID.String())
		var got string
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			got, err = string(b), rerr
			if err == nil && (resp.StatusCode != 200 || got != want || resp.Header.Get("X-Dataset-Version") != strconv.Itoa(v)) {
				err = fmt.Errorf("%d %s (version %q), want %s from version %d", resp.StatusCode, got, resp.Header.Get("X-Dataset-Version"), want, v)
			}
		}
		if err == nil {
			i += len(recs)/50 + 1
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookup of row %d through %s: %v", i, base, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopChild sends SIGTERM and wants a clean exit within 30s.
func stopChild(t *testing.T, c *child, name string) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("promo %s after SIGTERM: %v\n%s", name, err, c.log)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("promo %s still running 30s after SIGTERM\n%s", name, c.log)
	}
}

// promo ingest, two promo readnode and promo proxy, each a process of its
// own as in production: an import through ingest is served through the
// proxy, and each stops cleanly on SIGTERM.
func TestProxyAndReadnodesAsChildProcesses(t *testing.T) {
	pgURL := localsvctest.Database(t)
	k := localsvctest.Kafka(t, events.Topic)
	importDir := t.TempDir()
	ingest := startIngestChild(t, freeAddr(t), pgURL, k.Addr(), importDir)
	a1, a2, pa := freeAddr(t), freeAddr(t), freeAddr(t)
	nodes := fmt.Sprintf("n1=http://%s,n2=http://%s", a1, a2)
	var readnodes []*child
	for i, addr := range []string{a1, a2} {
		name := fmt.Sprintf("n%d", i+1)
		readnodes = append(readnodes, startProcess(t, "http://"+addr+"/healthz", "readnode", "--name", name, "--addr", addr,
			"--data-dir", t.TempDir(), "--postgres-url", pgURL, "--kafka-brokers", k.Addr(), "--nodes", nodes, "--replicas", "2",
			"--cache-size", "16MiB"))
	}
	proxy := startProcess(t, "http://"+pa+"/healthz", "proxy", "--addr", pa, "--nodes", nodes, "--replicas", "2",
		"--health-interval", "100ms")

	recs := writeVersion(t, filepath.Join(importDir, "v1.csv"), 5_000, 1)
	resp, err := http.PostForm(ingest.url+"/process-csv?wait=true", url.Values{"filename": {"v1.csv"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("import through promo ingest: %d\n%s", resp.StatusCode, ingest.log)
	}
	lookupsServe(t, proxy.url, recs, 1)
	// Every read node holds every slot (R=2 of 2): each answers directly.
	for _, n := range readnodes {
		lookupsServe(t, n.url, recs, 1)
	}
	status, ready := getJSON(t, proxy.url+"/readyz")
	if status != 200 || ready["status"] != "ready" {
		t.Fatalf("proxy /readyz once the nodes serve: %d %v", status, ready)
	}

	// One read node stops: the proxy answers from the other.
	stopChild(t, readnodes[0], "readnode")
	lookupsServe(t, proxy.url, recs, 1)
	stopChild(t, proxy, "proxy")
	stopChild(t, readnodes[1], "readnode")
	stopChild(t, ingest, "ingest")
}

// freePortRun returns a port p such that p, p+1 and p+10 up to p+9+nodes
// are free on 127.0.0.1 a moment ago: promo devcluster --port p binds them.
func freePortRun(t *testing.T, nodes int) int {
	t.Helper()
	for range 50 {
		p, err := localsvc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports := []int{p, p + 1}
		for i := range nodes {
			ports = append(ports, p+10+i)
		}
		free := true
		for _, q := range ports {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(q)))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return p
		}
	}
	t.Fatal("no free run of ports for promo devcluster")
	return 0
}

// promo devcluster as a child process: it starts PostgreSQL, Redis, the
// broker, ingest, the read nodes and the proxy; an import is served
// through the proxy; SIGTERM stops it cleanly, PostgreSQL with it.
func TestDevclusterAsChildProcess(t *testing.T) {
	if _, err := localsvc.FindPostgres(); err != nil {
		localsvctest.Unavailable(t, err)
	}
	dir, importDir := t.TempDir(), t.TempDir()
	port := freePortRun(t, 2)
	c := startProcess(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", port), "devcluster", "--dir", dir, "--nodes", "2",
		"--port", strconv.Itoa(port), "--import-dir", importDir)
	recs := writeVersion(t, filepath.Join(importDir, "v1.csv"), 5_000, 1)
	resp, err := http.PostForm(fmt.Sprintf("http://127.0.0.1:%d/process-csv?wait=true", port+1), url.Values{"filename": {"v1.csv"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("import through the devcluster's ingest: %d\n%s", resp.StatusCode, c.log)
	}
	lookupsServe(t, c.url, recs, 1)
	pidFile := filepath.Join(dir, "postgres", "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("PostgreSQL of the devcluster: %v", err)
	}
	pgPID, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	stopChild(t, c, "devcluster")
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pgPID, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("PostgreSQL (pid %d) still runs 30s after promo devcluster stopped", pgPID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
