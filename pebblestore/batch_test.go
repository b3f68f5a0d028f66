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

// BenchmarkSpill measures the spill files alone: adding rows with a budget
// that spills them, then reading every bucket back into a sort buffer, as
// a commit does before it sorts.
func BenchmarkSpill(b *testing.B) {
	const n = 500_000
	recs := randomRecords(rand.New(rand.NewPCG(7, 8)), n, 1)
	cfg := testConfig(b.TempDir())
	cfg.MemoryBudget = 20 << 20
	cfg.Workers = 1
	s := mustOpen(b, cfg)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		// Begin and Abort write metadata with fsync: not what is measured.
		b.StopTimer()
		bt, err := s.Begin(ctx, "bench", 1)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		addAll(b, bt, recs, 1)
		if len(bt.parts[0].runs) == 0 {
			b.Fatal("nothing spilled")
		}
		srcs, total, err := bt.sources()
		if err != nil || total != n {
			b.Fatalf("sources hold %d rows, want %d: %v", total, n, err)
		}
		w := bt.newTableWriter(s.writerOptions())
		for k := range srcs {
			if _, err := w.load(&srcs[k]); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		bt.Abort()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
}
