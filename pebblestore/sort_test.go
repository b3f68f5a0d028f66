package pebblestore

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/promotion-service/promo/promotion"
)

// idRow returns a row whose ID is hi and lo as big-endian words.
func idRow(hi, lo, seq uint64) promotion.Row {
	var r promotion.Row
	binary.BigEndian.PutUint64(r.ID[:8], hi)
	binary.BigEndian.PutUint64(r.ID[8:], lo)
	r.Seq = seq
	return r
}

// TestRadixSort checks radixSort, and sortRows (wideSort on large inputs),
// against a comparison sort on IDs with shared prefixes and duplicates,
// and on random IDs.
func TestRadixSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	count := make([]int32, 1<<16+1)
	sorters := map[string]func(a, b []promotion.Row) []promotion.Row{
		"radixSort": func(a, b []promotion.Row) []promotion.Row { radixSort(a, b, 0); return a },
		"sortRows":  func(a, b []promotion.Row) []promotion.Row { return sortRows(a, b, 0, count) },
	}
	for name, sort := range sorters {
		for _, random := range []bool{false, true} {
			for _, n := range []int{0, 1, 47, 49, 1000, 20_000, 3 * wideMin} {
				a := make([]promotion.Row, n)
				for i := range a {
					if random {
						a[i] = idRow(rng.Uint64(), rng.Uint64(), uint64(i))
						continue
					}
					// Few distinct values per byte: long shared prefixes
					// and duplicates, all the way to depth 16.
					a[i] = idRow(uint64(rng.IntN(3))<<56, uint64(rng.IntN(4)), uint64(i))
				}
				rng.Shuffle(n, func(i, j int) { a[i], a[j] = a[j], a[i] })
				want := slices.Clone(a)
				slices.SortFunc(want, func(x, y promotion.Row) int {
					return cmp.Or(bytes.Compare(x.ID[:], y.ID[:]), cmp.Compare(x.Seq, y.Seq))
				})
				got := sort(a, make([]promotion.Row, n))
				// Within a run of equal IDs only the last one's place is fixed.
				for i := range got {
					if got[i].ID != want[i].ID {
						t.Fatalf("%s n=%d random=%v: position %d has id %x, want %x", name, n, random, i, got[i].ID, want[i].ID)
					}
					if i+1 == n || got[i+1].ID != got[i].ID {
						if got[i].Seq != want[i].Seq {
							t.Fatalf("%s n=%d random=%v: last of run at %d has seq %d, want %d", name, n, random, i, got[i].Seq, want[i].Seq)
						}
					}
				}
			}
		}
	}
}

// benchRecs returns n rows whose IDs share their first byte, as the rows of
// one bucket do when the builder sorts them.
func benchRecs(n int) []promotion.Row {
	rng := rand.New(rand.NewPCG(3, 4))
	a := make([]promotion.Row, n)
	for i := range a {
		a[i] = idRow(0x42<<56|rng.Uint64()>>8, rng.Uint64(), uint64(i))
		a[i].PriceMicros, a[i].Expires = int64(i), 1_500_000_000
	}
	return a
}

// BenchmarkRadixSort sorts one bucket of the size a 256 MiB budget sorts at
// once on two workers.
func BenchmarkRadixSort(b *testing.B) {
	in := benchRecs(64 << 10)
	a, scratch := make([]promotion.Row, len(in)), make([]promotion.Row, len(in))
	b.ReportAllocs()
	for b.Loop() {
		copy(a, in)
		radixSort(a, scratch, 1)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(in)), "ns/row")
}

// BenchmarkSortRows sorts the same bucket as BenchmarkRadixSort with
// sortRows, as the builder does.
func BenchmarkSortRows(b *testing.B) {
	in := benchRecs(64 << 10)
	a, scratch := make([]promotion.Row, len(in)), make([]promotion.Row, len(in))
	count := make([]int32, 1<<16+1)
	b.ReportAllocs()
	for b.Loop() {
		copy(a, in)
		sortRows(a, scratch, 1, count)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(in)), "ns/row")
}
