package ring

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/promotion-service/promo/promotion"
)

// TestSlotIsStable pins Slot's output: it is part of the storage format.
func TestSlotIsStable(t *testing.T) {
	f := func(id string, want int) {
		t.Helper()
		pid, err := promotion.ParseID([]byte(id))
		if err != nil {
			t.Fatal(err)
		}
		if got := Slot(pid, DefaultSlots); got != want {
			t.Fatalf("Slot(%s) = %d, want %d", id, got, want)
		}
	}
	f("d018ef0b-dbd9-48f1-ac1a-eb4d90e57118", 1347)
	f("e2649ca5-7e05-4d53-a8ff-919917a4922e", 746)
	f("00000000-0000-0000-0000-000000000000", 0)
}

func TestSlotIsUniform(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n, slots = 1_000_000, 4096
	counts := make([]int, slots)
	var id promotion.ID
	for range n {
		binary.BigEndian.PutUint64(id[:8], rng.Uint64())
		binary.BigEndian.PutUint64(id[8:], rng.Uint64())
		counts[Slot(id, slots)]++
	}
	// Chi-squared against uniform: for 4095 degrees of freedom, 4400 is
	// beyond the 99.9th percentile.
	want := float64(n) / slots
	var chi2 float64
	for _, c := range counts {
		chi2 += (float64(c) - want) * (float64(c) - want) / want
	}
	if chi2 > 4400 || math.IsNaN(chi2) {
		t.Fatalf("chi-squared %.0f: slots are not uniform", chi2)
	}
}

func BenchmarkSlot(b *testing.B) {
	id := promotion.ID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	b.ReportAllocs()
	s := 0
	for b.Loop() {
		s += Slot(id, DefaultSlots)
		id[15]++
	}
	_ = s
}
