package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/promotion-service/promo/bench"
)

func runBenchLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := bench.DefaultLoadConfig()
	fs := newFlagSet("bench load", "promo bench load --target URL --ids FILE --rate R --duration D --out DIR [flags]", stderr)
	fs.StringVar(&c.Target, "target", c.Target, "base URL of the server under test")
	fs.StringVar(&c.IDsFile, "ids", "", "file of ids to look up, one per line, or a promotions CSV (required)")
	fs.IntVar(&c.Rate, "rate", c.Rate, "requests per second; 0: as fast as --connections workers go, one request each at a time")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "length of the attack")
	fs.Float64Var(&c.MissRatio, "miss-ratio", 0, "share of requests for unknown ids (their 404 is expected)")
	fs.Float64Var(&c.Zipf, "zipf", 0, "Zipf exponent (> 1) for hot keys; 0 draws ids uniformly")
	fs.StringVar(&c.Out, "out", "", "directory for report.json, results.bin, plot.html and latency.png (required)")
	fs.IntVar(&c.Connections, "connections", c.Connections, "keep-alive connections")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "timeout of each request")
	fs.StringVar(&c.Name, "name", c.Name, "label of the attack in reports")
	fs.StringVar(&c.Via, "via", bench.ViaHTTP, "how requests reach the servers: http (a fasthttp client to --target), owner (a fasthttp client to each id's primary, by the ring of --target's /cluster) or client (the Go client library seeded with --target)")
	fs.IntVar(&c.Batch, "batch", 0, "send POST /promotions/batch of this many ids (client: BatchGet) instead of single lookups")
	baseline := fs.Bool("baseline", true, "also run the same attack against a bare fasthttp server (promo bench bare-server) and report the ratio")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, rest[0])
	}
	if c.Out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	if err := c.Validate(); err != nil {
		return withFlags(fs, err)
	}
	c.Progress = stderr
	fmt.Fprintf(stderr, "attacking %s via %s at %s for %v\n", c.Target, c.Via, rateText(c.Rate), c.Duration)
	rep, err := bench.RunLoad(ctx, c)
	if err != nil {
		return err
	}
	if *baseline && (c.Via != bench.ViaHTTP || c.Batch > 1) {
		fmt.Fprintln(stderr, "no bare baseline for --via owner or client, or --batch: the bare server is one server answering single lookups")
		*baseline = false
	}
	if *baseline {
		bare, err := bareChild()
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		base, err := bench.RunBaseline(ctx, c, bare)
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		bench.Compare(&rep, base)
		if err := bench.WriteReport(filepath.Join(c.Out, "report.json"), rep); err != nil {
			return err
		}
	}
	printLoad(stdout, rep)
	if rep.Success < 1 {
		return fmt.Errorf("%.4f%% of requests did not get the expected answer", 100*(1-rep.Success))
	}
	return nil
}

func rateText(rate int) string {
	if rate == 0 {
		return "full speed"
	}
	return fmt.Sprintf("%d req/s", rate)
}

// bareChild runs this executable as promo bench bare-server: the lookup
// baseline, in a process of its own like the server it is compared with.
func bareChild() (bench.BareChildConfig, error) {
	exe, err := os.Executable()
	if err != nil {
		return bench.BareChildConfig{}, err
	}
	return bench.BareChildConfig{Path: exe, Args: []string{"bench", "bare-server"}}, nil
}

func printLoad(w io.Writer, r bench.LoadReport) {
	row := func(r bench.LoadReport) {
		fmt.Fprintf(w, "%-24s %9d %10.0f %10.0f %10.0f %8.1f %8.4f %8.3f %8.3f %8.3f %8.3f %9.3f  %v\n", r.Name, r.Requests, r.Rate, r.Throughput, r.IDsPerSecond, r.CPUPerRequestUS, r.Success,
			r.Latency.Mean, r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max, r.StatusCodes)
	}
	fmt.Fprintf(w, "%-24s %9s %10s %10s %10s %8s %8s %8s %8s %8s %8s %9s  %s\n", "", "requests", "rate", "throughput", "ids/s", "cpu us", "success", "mean ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "codes")
	row(r)
	if r.Baseline != nil {
		row(*r.Baseline)
		fmt.Fprintf(w, "throughput ratio %.3f, p99 added %.3f ms\n", r.ThroughputRatio, r.P99AddedMS)
	}
}

func runBenchImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c bench.ImportBenchConfig
	fs := newFlagSet("bench import", "promo bench import --rows N [--target URL] [flags]", stderr)
	fs.Int64Var(&c.Rows, "rows", 0, "rows of the generated file (required)")
	fs.StringVar(&c.Target, "target", "", "server to import into (default: a standalone server in this process)")
	fs.StringVar(&c.Token, "token", os.Getenv("PROMO_INGEST_TOKEN"), "the target's ingest token")
	fs.StringVar(&c.Dir, "dir", "", "directory for the generated file and the embedded store (default: a temporary one)")
	fs.Uint64Var(&c.Seed, "seed", 1, "seed of the generated file")
	out := fs.String("out", "", "write the report as JSON to this file")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the embedded import to this file")
	logLevel := fs.String("log-level", "", "log the embedded server's messages at this level to standard error: debug, info, warn or error (default: none)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, rest[0])
	}
	if c.Rows <= 0 {
		return fmt.Errorf("%w: --rows must be a positive number", errUsage)
	}
	if *logLevel != "" {
		if c.Logger, err = newLogger(stderr, *logLevel); err != nil {
			return err
		}
	}
	if *cpuProfile != "" {
		if c.Target != "" {
			return fmt.Errorf("%w: --cpuprofile profiles the embedded server only; use the target's --pprof-addr", errUsage)
		}
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		c.CPUProfile = f
	}
	fmt.Fprintf(stderr, "generating %d rows, parsing them bare, then importing into %s\n", c.Rows, orDefault(c.Target, "an embedded standalone server"))
	rep, err := bench.RunImportBench(ctx, c)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rows %d (%.1f MB) into %s\n", rep.Rows, float64(rep.Bytes)/1e6, rep.Target)
	fmt.Fprintf(stdout, "time to queryable %.3f s: %.0f rows/s, %.1f MB/s\n", rep.SecondsQueryable, rep.RowsPerSecond, rep.MBPerSecond)
	fmt.Fprintf(stdout, "bare parse %.3f s: import is %.2fx the parse\n", rep.ParseSeconds, rep.ImportToParse)
	fmt.Fprintf(stdout, "peak RSS %.0f MiB (%s)\n", float64(rep.PeakRSSBytes)/(1<<20), rep.PeakRSSHow)
	if *out != "" {
		return bench.WriteReport(*out, rep)
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func runBenchCopy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c bench.CopyBenchConfig
	fs := newFlagSet("bench copy", "promo bench copy --rows N [--postgres-url URL] [--out FILE]", stderr)
	fs.Int64Var(&c.Rows, "rows", 1_000_000, "rows of the generated file")
	fs.StringVar(&c.PostgresURL, "postgres-url", "", "PostgreSQL to use (default: a temporary local server)")
	fs.IntVar(&c.Partitions, "partitions", 0, "tables per version (default 16)")
	out := fs.String("out", "", "write the report as JSON to this file")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, rest); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "generating %d rows, timing psql \\copy, then promo ingest\n", c.Rows)
	rep, err := bench.RunCopyBench(ctx, c)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "psql \\copy (numeric, timestamptz, RFC 3339): %.3f s, %.0f rows/s\n", rep.CopySeconds, rep.CopyRowsPerSecond)
	fmt.Fprintf(stdout, "promo ingest, POST to committed:           %.3f s, %.0f rows/s\n", rep.ImportSeconds, rep.ImportRowsPerSecond)
	fmt.Fprintf(stdout, "speedup over \\copy: %.2fx; peak RSS of the importing process %.0f MiB\n", rep.Speedup, float64(rep.PeakRSSBytes)/(1<<20))
	if *out != "" {
		return bench.WriteReport(*out, rep)
	}
	return nil
}

func runBenchCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := bench.ClusterBenchConfig{Load: bench.DefaultLoadConfig()}
	c.Load.Rate = 0
	fs := newFlagSet("bench cluster", "promo bench cluster --rows N [flags]", stderr)
	fs.Int64Var(&c.Rows, "rows", 1_000_000, "rows of the dataset")
	fs.IntVar(&c.Nodes, "nodes", 3, "read nodes")
	fs.IntVar(&c.Replicas, "replicas", 2, "replicas per slot")
	fs.IntVar(&c.Load.Rate, "rate", 0, "load on node n1, requests per second (0: no load test)")
	fs.DurationVar(&c.Load.Duration, "duration", 10*time.Second, "length of each load test")
	fs.StringVar(&c.Out, "out", "", "directory for the load reports and the cluster report")
	verbose := fs.Bool("verbose", false, "log what the services do to stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the bench's process (ingest, read nodes, proxy, load) to this file")
	wrkFor := fs.Duration("wrk", 0, "also run wrk -t1 -c64 for this long against node n1, through the proxy, and against the bare baseline (needs wrk)")
	fs.IntVar(&c.OutageRate, "outage-rate", 0, "load through the proxy, req/s, while node n2 is stopped and started again (0: no outage test)")
	fs.DurationVar(&c.OutageDuration, "outage-duration", 15*time.Second, "length of the outage test")
	fs.IntVar(&c.ChangeRate, "change-rate", 0, "load through the proxy, req/s, before and while a read node joins and leaves (0: no change test)")
	fs.DurationVar(&c.ChangeDuration, "change-duration", 20*time.Second, "length of each load of the change test")
	fs.DurationVar(&c.Paths, "paths", 0, "compare the ways to a read node, each for this long: direct to n1, the Go client, the proxy (closed loop, --connections workers), batches, and the client with node n2 50ms slow (0: no comparison)")
	fs.IntVar(&c.PathsBatch, "paths-batch", 100, "ids per batch in the path comparison")
	fs.IntVar(&c.PathsRate, "paths-rate", 3000, "constant rate of the client, healthy and with n2 slow, in the path comparison")
	fs.IntVar(&c.PathsRounds, "paths-rounds", 3, "times each comparison runs in turn; rate ratios are the median of the rounds', CPU ratios over all of them")
	fs.IntVar(&c.Freshness, "freshness", 0, "instead of the other tests: import the file this many times more after a first import, with every read node running, and time each from the POST to every node serving its version (0: no freshness test)")
	fs.IntVar(&c.Load.Connections, "connections", c.Load.Connections, "keep-alive connections (workers) of each load")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, rest); err != nil {
		return err
	}
	if c.Rows <= 0 || c.Nodes < 1 || c.Replicas < 1 || c.Replicas > c.Nodes {
		return fmt.Errorf("%w: need positive rows, nodes >= replicas >= 1", errUsage)
	}
	c.Progress = stderr
	if *verbose {
		c.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	if *wrkFor > 0 {
		bare, err := bareChild()
		if err != nil {
			return err
		}
		c.WhileServing = func(node, proxy, ids string) error {
			rounds, err := bench.RunWrk(ctx, bench.WrkConfig{Node: node, Proxy: proxy, IDsFile: ids, Duration: *wrkFor, Bare: bare})
			printWrk(stdout, rounds)
			return err
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.RunClusterBench(ctx, c)
	if err != nil {
		return err
	}
	for _, f := range rep.Freshness {
		fmt.Fprintf(stdout, "freshness round %d (first %v, version %d): durable %.3f s, POST answered %.3f s, first node serving %.3f s, all serving %.3f s; CPU %.2f s bench, %.2f s PostgreSQL;",
			f.Round, f.First, f.Version, f.DurableSeconds, f.CommitSeconds, f.FirstServingSeconds, f.AllServingSeconds, f.BenchCPUSeconds, f.PostgresCPUSeconds)
		for _, n := range f.Nodes {
			fmt.Fprintf(stdout, " %s serving %.3f s (pull %.3f s, %d rows)", n.Node, n.ServingSeconds, n.PullSeconds, n.PullRows)
		}
		fmt.Fprintln(stdout)
	}
	for _, p := range rep.Pulls {
		fmt.Fprintf(stdout, "pull %s: %d rows in %.3f s, %.0f rows/s\n", p.Node, p.Rows, p.Seconds, p.RowsPerSecond)
	}
	for _, l := range rep.Loads {
		printLoad(stdout, l)
	}
	if rep.Outage != nil {
		fmt.Fprintln(stdout, "through the proxy while n2 was stopped and started again:")
		printLoad(stdout, *rep.Outage)
	}
	if ch := rep.Change; ch != nil {
		fmt.Fprintf(stdout, "membership change: a node joined in %.2f s (%d slot replicas moved) and left in %.2f s\n",
			ch.JoinSeconds, ch.SlotsMoved, ch.LeaveSeconds)
		fmt.Fprintln(stdout, "through the proxy before the change:")
		printLoad(stdout, ch.Before)
		fmt.Fprintln(stdout, "through the proxy during the change:")
		printLoad(stdout, ch.During)
	}
	if p := rep.Paths; p != nil {
		for _, l := range p.Loads {
			printLoad(stdout, l)
		}
		fmt.Fprintf(stdout, "client/direct req/s %.3f (by CPU per lookup %.3f), client/proxy req/s %.3f (by CPU %.3f); batches of %d: %.2fx the ids/s of single lookups (by CPU %.2fx)\n",
			p.ClientToDirect, p.ClientToDirectByCPU, p.ClientToProxy, p.ClientToProxyByCPU, p.Batch, p.BatchToSingle, p.BatchToSingleByCPU)
		fmt.Fprintf(stdout, "client p99 with n2 %s slow / healthy: %.2f (%d hedges, %d won, for %d lookups)\n",
			p.SlowBy, p.SlowP99ToHealthy, p.SlowHedges, p.SlowHedgeWins, p.SlowRequests)
	}
	if c.Out != "" {
		if err := os.MkdirAll(c.Out, 0o755); err != nil {
			return err
		}
		return bench.WriteReport(filepath.Join(c.Out, "cluster.json"), rep)
	}
	return nil
}

// printWrk prints the rounds of bench.RunWrk.
func printWrk(w io.Writer, rounds []bench.WrkRound) {
	for i, r := range rounds {
		fmt.Fprintf(w, "wrk round %d: read node n1 %.0f req/s, bare %.0f req/s (node/bare %.2f); through the proxy %.0f req/s (proxy/node %.2f)\n",
			i+1, r.Node, r.Bare, r.Node/r.Bare, r.Proxy, r.Proxy/r.Node)
	}
}
