package bench

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/standalone/standalonetest"
)

// serverWithRows starts a standalone server holding n generated rows and
// returns its URL and the CSV file.
func serverWithRows(t *testing.T, n int64) (string, string) {
	t.Helper()
	_, url := standalonetest.Start(t)
	path := filepath.Join(t.TempDir(), "p.csv")
	if _, err := generateFile(path, gen.DefaultConfig(n)); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	resp, err := http.Post(url+"/process-csv?wait=true", "text/csv", f)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("import: %v %v", err, resp)
	}
	resp.Body.Close()
	return url, path
}

func TestRunLoad(t *testing.T) {
	url, ids := serverWithRows(t, 5000)
	out := t.TempDir()
	c := DefaultLoadConfig()
	c.Target, c.IDsFile, c.Out = url, ids, out
	c.Rate, c.Duration, c.MissRatio, c.Zipf = 500, time.Second, 0.2, 1.2
	var progress bytes.Buffer
	c.Progress = &progress
	rep, err := RunLoad(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests < 400 || rep.Success != 1 || rep.StatusCodes["200"] == 0 || rep.StatusCodes["404"] == 0 {
		t.Fatalf("report %+v: want ~500 requests, all as expected, some 404 for unknown ids", rep)
	}
	if rep.Latency.P50 <= 0 || rep.Latency.P99 < rep.Latency.P50 || rep.Latency.Max < rep.Latency.P99 {
		t.Fatalf("latencies %+v", rep.Latency)
	}
	for _, f := range []string{"report.json", "results.bin", "plot.html", "latency.png"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	Compare(&rep, rep)
	if rep.ThroughputRatio != 1 || rep.P99AddedMS != 0 {
		t.Fatalf("ratio to itself: %v, %v", rep.ThroughputRatio, rep.P99AddedMS)
	}
}

// The load drives the Go client (Via client) and batches, through HTTP
// and through the client, at a constant rate and in a closed loop.
func TestRunLoadViaClientAndBatch(t *testing.T) {
	url, ids := serverWithRows(t, 5000)
	f := func(mutate func(*LoadConfig), check func(LoadReport) bool) {
		t.Helper()
		c := DefaultLoadConfig()
		c.Target, c.IDsFile, c.Duration, c.Rate, c.Out = url, ids, time.Second, 300, t.TempDir()
		mutate(&c)
		rep, err := RunLoad(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Success != 1 || rep.Requests < 50 || !check(rep) {
			t.Fatalf("report %+v", rep)
		}
		if _, err := os.Stat(filepath.Join(c.Out, "plot.html")); err != nil {
			t.Fatal(err)
		}
	}
	f(func(c *LoadConfig) { c.Via, c.MissRatio = ViaClient, 0.2 }, func(r LoadReport) bool {
		return r.Via == ViaClient && r.StatusCodes["200"] > 0 && r.StatusCodes["404"] > 0 && r.IDsPerSecond == r.Throughput
	})
	f(func(c *LoadConfig) { c.Batch, c.Rate, c.Connections = 50, 0, 4 }, func(r LoadReport) bool {
		return r.Via == ViaHTTP && r.Batch == 50 && r.StatusCodes["200"] == int(r.Requests) && r.IDsPerSecond == 50*r.Throughput
	})
	f(func(c *LoadConfig) { c.Batch, c.Via, c.Rate = 50, ViaClient, 100 }, func(r LoadReport) bool {
		return r.Via == ViaClient && r.Batch == 50 && r.StatusCodes["200"] == int(r.Requests)
	})
}

func TestRunLoadBadInput(t *testing.T) {
	dir := t.TempDir()
	ids := filepath.Join(dir, "ids.txt")
	os.WriteFile(ids, []byte("d018ef0b-dbd9-48f1-ac1a-eb4d90e57118\n"), 0o644)
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, nil, 0o644)
	garbage := filepath.Join(dir, "garbage.txt")
	os.WriteFile(garbage, []byte("hello\n"), 0o644)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + ln.Addr().String()
	ln.Close()

	base := DefaultLoadConfig()
	base.IDsFile, base.Duration = ids, time.Second
	f := func(mutate func(*LoadConfig), want string) {
		t.Helper()
		c := base
		mutate(&c)
		start := time.Now()
		_, err := RunLoad(context.Background(), c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want an error containing %q", err, want)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the error took %v", time.Since(start))
		}
	}
	f(func(c *LoadConfig) { c.Rate = -1 }, "Rate must be positive")
	f(func(c *LoadConfig) { c.Via = "grpc" }, "Via must be")
	f(func(c *LoadConfig) { c.Batch = 1001 }, "Batch must be")
	f(func(c *LoadConfig) { c.IDsFile = filepath.Join(dir, "missing") }, "cannot read ids")
	f(func(c *LoadConfig) { c.IDsFile = empty }, "holds no ids")
	f(func(c *LoadConfig) { c.IDsFile = garbage }, "not a promotion id")
	f(func(c *LoadConfig) { c.Target = closed }, "does not answer")
	f(func(c *LoadConfig) { c.Target = "ftp://x" }, "http(s) URL")
	f(func(c *LoadConfig) { c.Zipf = 0.5 }, "Zipf")
	f(func(c *LoadConfig) { c.MissRatio = 1.5 }, "MissRatio")
}

func TestMarkdown(t *testing.T) {
	dir := t.TempDir()
	if err := WriteReport(filepath.Join(dir, "import-2.json"), ImportReport{Rows: 2, Bytes: 156, Target: "embedded standalone", SecondsQueryable: 0.5, ParseSeconds: 0.25, ImportToParse: 2}); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "load-uniform"), 0o755)
	lr := LoadReport{Name: "load-uniform", Rate: 100, Throughput: 100, Success: 1, Latency: Latencies{P99: 1.5}}
	Compare(&lr, LoadReport{Throughput: 200, Latency: Latencies{P99: 1}})
	if err := WriteReport(filepath.Join(dir, "load-uniform", "report.json"), lr); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "cluster-change"), 0o755)
	cr := ClusterReport{Rows: 2000, Nodes: 3, Replicas: 2, Change: &ChangeReport{JoinSeconds: 1.25, LeaveSeconds: 0.5, SlotsMoved: 2018,
		Before: LoadReport{Name: "proxy-before-change", Rate: 300, Success: 1, Latency: Latencies{P99: 2}},
		During: LoadReport{Name: "proxy-during-change", Rate: 300, Success: 1, Latency: Latencies{P99: 3}}}}
	if err := WriteReport(filepath.Join(dir, "cluster-change", "cluster.json"), cr); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "paths"), 0o755)
	paths := ClusterReport{Rows: 1000, Nodes: 3, Replicas: 2, Paths: &PathsReport{Batch: 100, ClientToDirect: 0.95, ClientToProxy: 1.7,
		BatchToSingle: 10.5, SlowBy: "50ms", SlowP99ToHealthy: 1.2, SlowHedges: 3, SlowRequests: 100,
		Loads: []LoadReport{{Name: "path-client-1", Via: ViaClient, Throughput: 900, IDsPerSecond: 900, CPUPerRequestUS: 30, Success: 1}}}}
	if err := WriteReport(filepath.Join(dir, "paths", "cluster.json"), paths); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "commands.txt"), []byte("import-2: bin/promo bench import --rows 2\ncluster-change: bin/promo bench cluster --change-rate 300\npaths: bin/promo bench cluster --paths 3s\n"), 0o644)
	var b bytes.Buffer
	if err := Markdown(&b, dir); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| 2 | 0 | embedded standalone | 0.50 |", "2.00x", "| load-uniform | uniform |", "+0.500", "0.500 |", "import-2: bin/promo bench import --rows 2",
		"| 2000 | 3+1 | 2 | 1.25 | 0.50 | 2018 | proxy-during-change | 300 | 1.0000 | 0.000 | 3.000 |", "cluster-change: bin/promo bench cluster --change-rate 300",
		"| path-client-1 | client | 1 | 0 | 900 | 900 | 30.0 |", "**0.950x** the req/s", "**10.50x** the ids/s", "healthy: **1.20**", "paths: bin/promo bench cluster --paths 3s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
	if err := Markdown(&b, t.TempDir()); err == nil {
		t.Fatal("no error for a directory without reports")
	}
}

func TestRunImportBench(t *testing.T) {
	rep, err := RunImportBench(context.Background(), ImportBenchConfig{Rows: 20_000})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rows != 20_000 || rep.SecondsQueryable <= 0 || rep.ParseSeconds <= 0 || rep.ImportToParse <= 0 || rep.Bytes < 20_000*70 {
		t.Fatalf("report %+v", rep)
	}
	if rep.PeakRSSBytes <= 0 {
		t.Fatalf("no peak RSS in %+v", rep)
	}
	// Into a running server over HTTP.
	_, url := standalonetest.Start(t)
	rep, err = RunImportBench(context.Background(), ImportBenchConfig{Rows: 10_000, Target: url})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Target != url || rep.SecondsQueryable <= 0 {
		t.Fatalf("remote report %+v", rep)
	}
}
