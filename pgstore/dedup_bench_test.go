package pgstore

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/promotion-service/promo/localsvc/localsvctest"
)

// BenchmarkCommitDuplicates imports 1,000,000 rows of which 300,000 repeat
// an earlier id, and commits them: duplicates resolved from the filter's
// candidates, and, with MaxCandidates below their number, by reading every
// table whole. One operation is one import.
func BenchmarkCommitDuplicates(b *testing.B) {
	for _, mode := range []struct {
		name          string
		maxCandidates int
	}{{"candidates", 1 << 20}, {"full", 1000}} {
		b.Run(mode.name, func(b *testing.B) {
			cfg := testConfig(localsvctest.Database(b))
			cfg.MaxCandidates = mode.maxCandidates
			s := mustOpen(b, cfg)
			rng := rand.New(rand.NewPCG(61, 62))
			recs := randomRecords(rng, 700_000)
			for range 300_000 {
				d := recs[rng.IntN(700_000)]
				d.PriceMicros++
				recs = append(recs, d)
			}
			rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
			for b.Loop() {
				bt, err := s.Begin(context.Background(), "bench", 2)
				if err != nil {
					b.Fatal(err)
				}
				addAll(b, bt, recs, 2)
				if _, dups, err := bt.Commit(context.Background()); err != nil || dups == 0 {
					b.Fatalf("commit: %d duplicates, %v", dups, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/row")
		})
	}
}
