package bench

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/pebblestore"
)

var benchRows = flag.Int64("rows", 2_000_000, "rows of the generated file for BenchmarkImport and BenchmarkBareParse")

var (
	benchFileOnce sync.Once
	benchFile     string
	benchFileErr  error
)

// generatedFile writes the benchmark file once per process, in a temporary
// directory removed at exit.
func generatedFile(b *testing.B) string {
	benchFileOnce.Do(func() {
		dir, err := os.MkdirTemp("", "promo-bench-")
		if err != nil {
			benchFileErr = err
			return
		}
		benchFile = filepath.Join(dir, "promotions.csv")
		f, err := os.Create(benchFile)
		if err != nil {
			benchFileErr = err
			return
		}
		defer f.Close()
		_, benchFileErr = gen.Generate(f, gen.DefaultConfig(*benchRows))
	})
	if benchFileErr != nil {
		b.Fatal(benchFileErr)
	}
	return benchFile
}

// BenchmarkBareParse is the baseline of BenchmarkImport: reading and
// parsing the same file on one goroutine.
func BenchmarkBareParse(b *testing.B) {
	path := generatedFile(b)
	b.ReportAllocs()
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		n, err := BareParse(f)
		f.Close()
		if err != nil || n != *benchRows {
			b.Fatalf("parsed %d rows: %v", n, err)
		}
	}
	b.ReportMetric(float64(*benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkImport measures a whole import, file to queryable, into a fresh
// store.
func BenchmarkImport(b *testing.B) {
	path := generatedFile(b)
	b.ReportAllocs()
	for b.Loop() {
		dir := b.TempDir()
		res, err := importInProcess(context.Background(), path, dir, quietStore(dir))
		if err != nil {
			b.Fatal(err)
		}
		if res.Rows != *benchRows {
			b.Fatalf("imported %d rows, want %d", res.Rows, *benchRows)
		}
	}
	b.ReportMetric(float64(*benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(*benchRows)/float64(b.N), "ns/row")
}

// BenchmarkImportVsParse runs the bare parse and the whole import of the
// same file alternately and reports the ratio of their times, measured in
// one run (the target is at most 3, the goal 2).
func BenchmarkImportVsParse(b *testing.B) {
	path := generatedFile(b)
	var parse, imp time.Duration
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := BareParse(f); err != nil {
			b.Fatal(err)
		}
		parse += time.Since(start)
		f.Close()

		dir := b.TempDir()
		res, err := importInProcess(context.Background(), path, dir, quietStore(dir))
		if err != nil {
			b.Fatal(err)
		}
		imp += res.Elapsed
	}
	b.ReportMetric(float64(imp)/float64(parse), "import/parse")
	b.ReportMetric(float64(*benchRows)*float64(b.N)/imp.Seconds(), "import-rows/s")
	b.ReportMetric(float64(*benchRows)*float64(b.N)/parse.Seconds(), "parse-rows/s")
}

func quietStore(dir string) pebblestore.Config {
	c := pebblestore.DefaultConfig(dir)
	c.Logger = slog.New(slog.DiscardHandler)
	return c
}
