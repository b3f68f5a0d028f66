package bench

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/promotion-service/promo/store"
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
		_, benchFileErr = Generate(f, DefaultGenConfig(*benchRows))
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
		res, err := ImportFile(context.Background(), path, dir, store.DefaultConfig(dir))
		if err != nil {
			b.Fatal(err)
		}
		if res.Rows != *benchRows {
			b.Fatalf("imported %d rows, want %d", res.Rows, *benchRows)
		}
	}
	b.ReportMetric(float64(*benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
