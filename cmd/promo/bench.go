package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/promotion-service/promo/bench"
	"github.com/promotion-service/promo/bench/gen"
)

const benchUsage = `Usage:
  promo bench gen --rows N --out FILE [--seed S] [--dup-rate F] [--bad-rate F] [--format go|rfc3339]
  promo bench load --target URL --ids FILE --rate R --duration D [--miss-ratio F] [--zipf S] [--via http|owner|client] [--batch N] --out DIR
  promo bench import --rows N [--target URL] [--out FILE]
  promo bench copy --rows N [--postgres-url URL]      cluster import into PostgreSQL against psql \copy
  promo bench cluster --rows N [--nodes 3 --replicas 2] [--rate R --duration D --out DIR]
                                                      a local cluster: pull rate per read node, load on one node
  promo bench faults [--quick] [--rows N --rate R --hold D] [--drills a,b] [--out FAULTS.md] [--report-only]
                                                      fault drills against a local cluster under load; writes FAULTS.md
  promo bench report DIR                              BENCHMARKS.md from the reports in DIR
  promo bench bare-server [--addr 127.0.0.1:8099]   the lookup baseline: a constant body, same server settings
`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return errUsage
	}
	switch args[0] {
	case "gen":
		return runBenchGen(ctx, args[1:], stdout, stderr)
	case "bare-server":
		return runBareServer(ctx, args[1:], stderr)
	case "load":
		return runBenchLoad(ctx, args[1:], stdout, stderr)
	case "import":
		return runBenchImport(ctx, args[1:], stdout, stderr)
	case "copy":
		return runBenchCopy(ctx, args[1:], stdout, stderr)
	case "cluster":
		return runBenchCluster(ctx, args[1:], stdout, stderr)
	case "faults":
		return runBenchFaults(ctx, args[1:], stdout, stderr)
	case "report":
		if len(args) != 2 {
			fmt.Fprint(stderr, benchUsage)
			return errUsage
		}
		return bench.Markdown(stdout, args[1])
	}
	fmt.Fprint(stderr, benchUsage)
	return fmt.Errorf("unknown bench command %q", args[0])
}

func runBenchGen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := gen.DefaultConfig(0)
	fs := newFlagSet("bench gen", "promo bench gen --rows N --out FILE [flags]", stderr)
	fs.Int64Var(&cfg.Rows, "rows", 0, "number of rows (required)")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "random seed: the same seed writes the same file")
	fs.Float64Var(&cfg.DupRate, "dup-rate", 0, "share of rows that repeat an earlier id (0 to 1)")
	fs.Float64Var(&cfg.BadRate, "bad-rate", 0, "share of malformed rows (0 to 1)")
	fs.StringVar(&cfg.Format, "format", cfg.Format, "date format: go (2018-08-04 05:32:31 +0200 CEST) or rfc3339")
	out := fs.String("out", "", `output file ("-" for standard output; required)`)
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("unexpected argument %q", rest[0])
	}
	if cfg.Rows <= 0 {
		return errors.New("--rows must be a positive number")
	}
	if *out == "" {
		return errors.New("--out is required")
	}
	if err := cfg.Validate(); err != nil {
		return withFlags(fs, err)
	}
	var w io.Writer = stdout
	var f *os.File
	if *out != "-" {
		if f, err = os.Create(*out); err != nil {
			return err
		}
		w = f
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	start := time.Now()
	n, err := gen.Generate(bw, cfg)
	if err == nil {
		err = bw.Flush()
	}
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", *out, err)
	}
	el := time.Since(start)
	if *out != "-" {
		fmt.Fprintf(stderr, "wrote %d rows (%.1f MB) to %s in %v (%.0f rows/s)\n",
			cfg.Rows, float64(n)/1e6, *out, el.Round(time.Millisecond), float64(cfg.Rows)/el.Seconds())
	}
	return nil
}

func runBareServer(ctx context.Context, args []string, stderr io.Writer) error {
	c := bench.DefaultBareServerConfig()
	fs := newFlagSet("bench bare-server", "promo bench bare-server [--addr ADDR]", stderr)
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen address")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("unexpected argument %q", rest[0])
	}
	c.Announce = stderr
	return bench.RunBareServer(ctx, c)
}

func runBenchFaults(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := bench.DefaultFaultsConfig()
	fs := newFlagSet("bench faults", "promo bench faults [flags]", stderr)
	fs.Int64Var(&c.Rows, "rows", c.Rows, "rows of every dataset version; all of them are looked up after each drill")
	fs.IntVar(&c.Rate, "rate", c.Rate, "lookups per second through the proxy during each drill")
	fs.DurationVar(&c.Hold, "hold", c.Hold, "how long each fault lasts")
	fs.DurationVar(&c.Warm, "warm", c.Warm, "load before each fault and after its recovery")
	fs.BoolVar(&c.Quick, "quick", false, "only the drills that fit CI: "+strings.Join(bench.QuickDrills(), ", "))
	drills := fs.String("drills", "", "comma-separated drills to run (default all): "+strings.Join(bench.DrillNames(), ", "))
	fs.StringVar(&c.Binary, "binary", "", "promo executable to run as ingest and read node n3 (default this one)")
	fs.StringVar(&c.Dir, "dir", "", "directory for the cluster's data (default a temporary one, removed afterwards)")
	out := fs.String("out", "FAULTS.md", "the report to write (\"-\" for standard output, empty for none)")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file")
	reportOnly := fs.Bool("report-only", false, "exit 0 even when an expectation fails")
	verbose := fs.Bool("verbose", false, "log what the in-process services do to stderr")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, rest); err != nil {
		return err
	}
	if *drills != "" {
		c.Drills = strings.Split(*drills, ",")
	}
	if err := c.Validate(); err != nil {
		return withFlags(fs, err)
	}
	c.Progress = stderr
	if *verbose {
		c.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	} else {
		// The in-process read nodes' Redis client logs every failed dial
		// while a drill has Redis down; the report says what matters.
		redis.SetLogger(quietRedis{})
	}
	rep, err := bench.RunFaults(ctx, c)
	if err != nil && !errors.Is(err, bench.ErrExpectations) {
		return err
	}
	command := strings.TrimSpace("promo bench faults " + strings.Join(args, " "))
	if *out != "" {
		if err := writeFaults(*out, stdout, rep, command); err != nil {
			return err
		}
	}
	if *jsonOut != "" {
		if err := bench.WriteReport(*jsonOut, rep); err != nil {
			return err
		}
	}
	failures := rep.Failures()
	for _, f := range failures {
		fmt.Fprintln(stderr, "FAIL", f)
	}
	fmt.Fprintf(stderr, "%d drills, %d failed expectations\n", len(rep.Drills), len(failures))
	if len(failures) > 0 && !*reportOnly {
		return fmt.Errorf("%d expectations failed (--report-only exits 0 all the same)", len(failures))
	}
	return nil
}

// quietRedis discards go-redis's own log lines.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// writeFaults writes the Markdown report to path, or to stdout for "-".
func writeFaults(path string, stdout io.Writer, rep bench.FaultsReport, command string) error {
	if path == "-" {
		return bench.WriteFaultsMarkdown(stdout, rep, command)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := bench.WriteFaultsMarkdown(f, rep, command); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
