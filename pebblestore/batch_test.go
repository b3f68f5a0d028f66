package pebblestore

import (
	"context"
	"math/rand/v2"
	"testing"
)

// BenchmarkCommit measures a batch from the first Add to the committed
// version, with every row in memory and with a budget that spills.
func BenchmarkCommit(b *testing.B) {
	const n = 500_000
	recs := randomRecords(rand.New(rand.NewPCG(7, 8)), n, 1)
	for _, bc := range []struct {
		name   string
		budget int64
		spill  bool
	}{{"memory", 256 << 20, false}, {"spill", 20 << 20, true}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := testConfig(b.TempDir())
			cfg.MemoryBudget = bc.budget
			cfg.Workers = 2
			s := mustOpen(b, cfg)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				bt, err := s.Begin(ctx, "bench", 2)
				if err != nil {
					b.Fatal(err)
				}
				addAll(b, bt, recs, 2)
				spilled := false
				for _, p := range bt.parts {
					spilled = spilled || len(p.runs) > 0
				}
				if spilled != bc.spill {
					b.Fatalf("spilled = %v with a %d MiB budget, want %v", spilled, bc.budget>>20, bc.spill)
				}
				if rows, _, err := bt.Commit(ctx); err != nil || rows != n {
					b.Fatalf("committed %d rows, want %d: %v", rows, n, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
		})
	}
}
