package pebblestore

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRadixSort checks radixSort against a comparison sort on IDs with
// shared prefixes and duplicates.
func TestRadixSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 47, 49, 1000, 20_000} {
		a := make([]rec, n)
		for i := range a {
			// Few distinct values per byte: long shared prefixes and
			// duplicates, all the way to depth 16.
			a[i] = rec{hi: uint64(rng.IntN(3)) << 56, lo: uint64(rng.IntN(4)), seq: uint64(i)}
		}
		rng.Shuffle(n, func(i, j int) { a[i], a[j] = a[j], a[i] })
		want := slices.Clone(a)
		slices.SortFunc(want, func(x, y rec) int {
			switch {
			case less(&x, &y):
				return -1
			case less(&y, &x):
				return 1
			}
			return 0
		})
		radixSort(a, make([]rec, n), 0)
		// Within a run of equal IDs only the last one's place is fixed.
		for i := range a {
			if a[i].hi != want[i].hi || a[i].lo != want[i].lo {
				t.Fatalf("n=%d: position %d has id %x/%x, want %x/%x", n, i, a[i].hi, a[i].lo, want[i].hi, want[i].lo)
			}
			if i+1 == n || a[i+1].hi != a[i].hi || a[i+1].lo != a[i].lo {
				if a[i].seq != want[i].seq {
					t.Fatalf("n=%d: last of run at %d has seq %d, want %d", n, i, a[i].seq, want[i].seq)
				}
			}
		}
	}
}

// benchRecs returns n rows whose IDs share their first byte, as the rows of
// one bucket do when the builder sorts them.
func benchRecs(n int) []rec {
	rng := rand.New(rand.NewPCG(3, 4))
	a := make([]rec, n)
	for i := range a {
		a[i] = rec{hi: 0x42<<56 | rng.Uint64()>>8, lo: rng.Uint64(), price: int64(i), exp: 1_500_000_000, seq: uint64(i)}
	}
	return a
}

// BenchmarkRadixSort sorts one bucket of the size a 256 MiB budget sorts at
// once on two workers.
func BenchmarkRadixSort(b *testing.B) {
	in := benchRecs(64 << 10)
	a, scratch := make([]rec, len(in)), make([]rec, len(in))
	b.ReportAllocs()
	for b.Loop() {
		copy(a, in)
		radixSort(a, scratch, 1)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(in)), "ns/row")
}
