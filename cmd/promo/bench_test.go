package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/promotion-service/promo/bench"
)

func TestBenchCommandsRefuseBadInput(t *testing.T) {
	dir := t.TempDir()
	ids := filepath.Join(dir, "ids.txt")
	os.WriteFile(ids, []byte("d018ef0b-dbd9-48f1-ac1a-eb4d90e57118\n"), 0o644)
	f := func(want string, args ...string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if err == nil {
			t.Fatalf("%v: no error", args)
		}
		if msg := err.Error() + stderr.String(); !strings.Contains(msg, want) {
			t.Fatalf("%v: %q does not contain %q", args, msg, want)
		}
		if exitCode(err) == 0 {
			t.Fatalf("%v: exit code 0", args)
		}
	}
	f("flag provided but not defined", "bench", "load", "--bogus")
	f("Rate (--rate, PROMO_RATE) must be positive", "bench", "load", "--ids", ids, "--rate", "-1", "--out", dir)
	f("Via (--via, PROMO_VIA) must be", "bench", "load", "--ids", ids, "--via", "grpc", "--out", dir)
	f("--out is required", "bench", "load", "--ids", ids)
	f("cannot read ids", "bench", "load", "--ids", filepath.Join(dir, "none"), "--out", dir)
	f("does not answer", "bench", "load", "--ids", ids, "--out", dir, "--target", "http://127.0.0.1:1", "--duration", "1s")
	f("--rows", "bench", "gen", "--out", filepath.Join(dir, "x.csv"))
	f("--rows", "bench", "import", "--rows", "0")
	f(`unknown drill "meteor"`, "bench", "faults", "--drills", "version-swap,meteor")
	f("Rows (--rows, PROMO_ROWS) must be at least 1,000", "bench", "faults", "--rows", "10")
	f("unexpected argument", "bench", "faults", "extra")
	f("unknown bench command", "bench", "nope")
	f("unknown command", "nope")
}

func TestBenchGenWritesRows(t *testing.T) {
	out := filepath.Join(t.TempDir(), "p.csv")
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"bench", "gen", "--rows", "1000", "--seed", "7", "--out", out}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte{'\n'}); n != 1000 {
		t.Fatalf("%d lines, want 1000", n)
	}
}

func TestRingAssign(t *testing.T) {
	dir := t.TempDir()
	var out, stderr bytes.Buffer
	if err := run(context.Background(), []string{"ring", "assign", "--nodes", "a,b,c", "--replicas", "2"}, &out, &stderr); err != nil {
		t.Fatal(err)
	}
	prev := filepath.Join(dir, "prev.json")
	if err := os.WriteFile(prev, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var j struct {
		Slots      int        `json:"slots"`
		Assignment [][]string `json:"assignment"`
	}
	if err := json.Unmarshal(out.Bytes(), &j); err != nil || j.Slots != 4096 || len(j.Assignment) != 4096 || len(j.Assignment[0]) != 2 {
		t.Fatalf("output %v: %.100s", err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"ring", "assign", "--nodes", "a,b,c,d", "--replicas", "2", "--previous", prev}, &out, &stderr); err != nil {
		t.Fatal(err)
	}
	var next struct {
		Assignment [][]string `json:"assignment"`
	}
	if err := json.Unmarshal(out.Bytes(), &next); err != nil || len(next.Assignment) != 4096 {
		t.Fatalf("assignment with --previous: %v: %.100s", err, out.String())
	}
	moved := 0
	for s := range next.Assignment {
		if next.Assignment[s][0] != j.Assignment[s][0] {
			moved++
		}
	}
	if moved > 4096/4*11/10 {
		t.Fatalf("adding a fourth node moved %d primaries", moved)
	}
	for _, bad := range [][]string{{"ring", "assign", "--nodes", "a,a"}, {"ring", "assign", "--nodes", "a", "--replicas", "2"}, {"ring"}} {
		if err := run(context.Background(), bad, &out, &stderr); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

// TestBenchLoadWithBaseline runs promo bench load against a bare server in
// this process, with the baseline in a child process (this test binary run
// as promo bench bare-server).
func TestBenchLoadWithBaseline(t *testing.T) {
	t.Setenv("PROMO_TEST_RUN_MAIN", "1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- bench.ServeConstant(ctx, ln, bench.ConstantBody()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("target: %v", err)
		}
	})
	dir := t.TempDir()
	ids := filepath.Join(dir, "ids.txt")
	if err := os.WriteFile(ids, []byte("d018ef0b-dbd9-48f1-ac1a-eb4d90e57118\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"bench", "load", "--target", "http://" + ln.Addr().String(), "--ids", ids,
		"--rate", "200", "--duration", "1s", "--out", out}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	for _, want := range []string{"bare fasthttp baseline", "throughput ratio"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "baseline: attacking http://127.0.0.1:") {
		t.Errorf("stderr does not name the baseline's address:\n%s", stderr.String())
	}
	var rep bench.LoadReport
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Baseline == nil || rep.Baseline.Requests == 0 || rep.Baseline.Success != 1 || rep.ThroughputRatio <= 0 {
		t.Fatalf("report without a baseline: %s", b)
	}
	if _, err := os.Stat(filepath.Join(out, "baseline", "report.json")); err != nil {
		t.Fatalf("the baseline's own report: %v", err)
	}
}
