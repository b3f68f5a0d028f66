// Command promo is the promotion service: one binary with a subcommand per
// role. Run "promo help" for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/VictoriaMetrics/metrics"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// Prometheus metadata (HELP and TYPE lines) on every /metrics.
	metrics.ExposeMetadata(true)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if path := os.Getenv("PROMO_CPUPROFILE"); path != "" {
		// A developer's switch: profile a whole command.
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "promo:", err)
		}
		pprof.StopCPUProfile()
		os.Exit(exitCode(err))
	}
}

const usage = `promo is the promotion service.

Usage:
  promo standalone [flags]            the embedded server: imports and lookups in one process
  promo ingest --postgres-url URL --kafka-brokers B
                                      the cluster write service: imports into PostgreSQL, events on Kafka
  promo readnode --name N --nodes a=URL,... --postgres-url URL --kafka-brokers B
                                      a read node: pulls its shard of each version, serves lookups
  promo proxy --nodes a=URL,... [--replicas R]
                                      the hash-routing proxy in front of the read nodes
  promo devcluster --dir DIR [--nodes N] [--port P] [--import-dir D]
                                      the whole cluster on this machine, without Docker
  promo import FILE|- --server URL    stream a CSV file (- for standard input) to a server, with progress
  promo ring assign --nodes a,b,c --replicas R [--previous FILE]
                                      print the slot assignment as JSON
  promo bench gen --rows N --out F    write a generated promotions file
  promo version                       print the version

Run "promo COMMAND -h" for the flags of a command. Every flag can also be set
with an environment variable: --data-dir is PROMO_DATA_DIR.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "standalone":
		return runStandalone(ctx, args[1:], stdout, stderr)
	case "ingest":
		return runIngest(ctx, args[1:], stdout, stderr)
	case "readnode":
		return runReadnode(ctx, args[1:], stdout, stderr)
	case "proxy":
		return runProxy(ctx, args[1:], stdout, stderr)
	case "devcluster":
		return runDevcluster(ctx, args[1:], stdout, stderr)
	case "import":
		return runImport(ctx, args[1:], stdout, stderr)
	case "ring":
		return runRing(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "promo", version)
		return nil
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// errUsage is a usage error already explained to the user.
var errUsage = errors.New("usage error")

func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, errUsage) {
		return 2
	}
	return 1
}
