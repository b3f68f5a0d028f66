package ring

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// maxOverMean returns the largest max/mean slot count of a node over the
// replica positions of a.
func maxOverMean(a *Assignment) float64 {
	n := len(a.Nodes())
	worst := 0.0
	for p := range a.Replicas() {
		counts := make([]int, n)
		for s := range a.Slots() {
			counts[a.Owners(s)[p]]++
		}
		worst = max(worst, float64(slices.Max(counts))/(float64(a.Slots())/float64(n)))
	}
	return worst
}

// BenchmarkRingSimulation simulates clusters of 10 to 1,000 nodes (R=2,
// slots grown to at least 64 a node as in TestAssignScale, which checks
// the same limits; and the cluster's DefaultSlots): ns/op is the time to
// assign the ring from scratch; the metrics are the balance (max/mean slots of a node), the replicas
// that adding and removing one node move as multiples of the ideal share,
// and the time those two reassignments take. OPERATIONS.md has its table:
//
//	go test -run '^$' -bench RingSimulation -benchtime 1x ./ring
func BenchmarkRingSimulation(b *testing.B) {
	const r = 2
	for _, n := range []int{10, 32, 100, 250, 1000} {
		grown := DefaultSlots
		for grown < 64*n {
			grown *= 2
		}
		for _, slots := range slices.Compact([]int{DefaultSlots, grown}) {
			simulate(b, n, r, slots)
		}
	}
}

func simulate(b *testing.B, n, r, slots int) {
	b.Run(fmt.Sprintf("nodes=%d/slots=%d", n, slots), func(b *testing.B) {
		nodes := names(n, "node-")
		var a *Assignment
		for b.Loop() {
			var err error
			if a, err = Assign(nodes, r, slots, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		t0 := time.Now()
		added, err := Assign(append(slices.Clone(nodes), "new"), r, slots, a)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		removed, err := Assign(slices.Delete(slices.Clone(nodes), n/2, n/2+1), r, slots, a)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		b.ReportMetric(maxOverMean(a), "max/mean")
		b.ReportMetric(max(maxOverMean(added), maxOverMean(removed)), "max/mean-after")
		b.ReportMetric(float64(replicaMoves(a, added))/(float64(r*slots)/float64(n+1)), "add-moved/ideal")
		b.ReportMetric(float64(replicaMoves(a, removed))/(float64(r*slots)/float64(n)), "remove-moved/ideal")
		b.ReportMetric(float64(t1.Sub(t0).Microseconds())/1000, "add-ms")
		b.ReportMetric(float64(t2.Sub(t1).Microseconds())/1000, "remove-ms")
	})
}
