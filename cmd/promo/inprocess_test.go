package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/promotion-service/promo/bench"
)

// runInProcess runs promo args in this process until the test cancels
// it; the returned function cancels and returns run's error.
func runInProcess(t *testing.T, args ...string) (stop func() error, stderr *lockedLog) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr = &lockedLog{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, io.Discard, stderr) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("promo %s still running 30s after its context ended", args[0])
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop, stderr
}

// waitGet polls u until it answers want, and returns the body.
func waitGet(t *testing.T, u string, want int) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(u)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == want {
				return string(b)
			}
			err = rerr
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v, want %d within 30s", u, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --pprof-addr serves the profiles on their own loopback address, never
// on the API's; a non-loopback one is refused without --insecure.
func TestPprofOnItsOwnAddress(t *testing.T) {
	api, prof := freeAddr(t), freeAddr(t)
	stop, stderr := runInProcess(t, "standalone", "--addr", api, "--data-dir", t.TempDir(), "--import-dir", t.TempDir(),
		"--pprof-addr", prof, "--memory-budget", "16MiB")
	waitGet(t, "http://"+api+"/healthz", 200)
	if body := waitGet(t, "http://"+prof+"/debug/pprof/", 200); !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof index: %q", body)
	}
	resp, err := http.Get("http://" + api + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("the API address answers pprof: %d", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatalf("promo standalone with pprof: %v\n%s", err, stderr)
	}
	if _, err := http.Get("http://" + prof + "/debug/pprof/"); err == nil {
		t.Fatal("pprof still serves after the command ended")
	}

	var out bytes.Buffer
	err = run(context.Background(), []string{"standalone", "--addr", freeAddr(t), "--data-dir", t.TempDir(),
		"--pprof-addr", "0.0.0.0:0"}, io.Discard, &out)
	if err == nil || !strings.Contains(err.Error(), "refusing to serve pprof") {
		t.Fatalf("pprof on a non-loopback address: %v", err)
	}
}

// promo bench bare-server answers the constant body until it is stopped.
func TestBenchBareServer(t *testing.T) {
	addr := freeAddr(t)
	stop, stderr := runInProcess(t, "bench", "bare-server", "--addr", addr)
	if body := waitGet(t, "http://"+addr+"/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e57118", 200); body != string(bench.ConstantBody()) {
		t.Fatalf("bare server answered %q, want the constant body", body)
	}
	if err := stop(); err != nil {
		t.Fatalf("promo bench bare-server: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr.String(), addr) {
		t.Fatalf("bare server did not announce %s: %q", addr, stderr)
	}
	if err := run(context.Background(), []string{"bench", "bare-server", "extra"}, io.Discard, io.Discard); err == nil {
		t.Fatal("bench bare-server with an argument succeeded")
	}
}
