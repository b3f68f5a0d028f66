package ring

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/promotion-service/promo/promotion"
)

func names(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%02d", prefix, i)
	}
	return out
}

func mustAssign(t testing.TB, nodes []string, r int, prev *Assignment) *Assignment {
	t.Helper()
	a, err := Assign(nodes, r, DefaultSlots, prev)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// checkValid: R distinct nodes per slot, and max/mean at most 1.02 (and
// min/mean at least 0.98) at every replica position.
func checkValid(t *testing.T, a *Assignment) {
	t.Helper()
	n := len(a.Nodes())
	for p := range a.Replicas() {
		counts := make([]int, n)
		for s := range a.Slots() {
			counts[a.Owners(s)[p]]++
		}
		mean := float64(a.Slots()) / float64(n)
		if ratio := float64(slices.Max(counts)) / mean; ratio > 1.02 {
			t.Fatalf("%d nodes, position %d: max/mean %.4f > 1.02 (%v)", n, p, ratio, counts)
		}
		if ratio := float64(slices.Min(counts)) / mean; ratio < 0.98 {
			t.Fatalf("%d nodes, position %d: min/mean %.4f < 0.98 (%v)", n, p, ratio, counts)
		}
	}
	for s := range a.Slots() {
		o := a.Owners(s)
		for i := range o {
			if slices.Contains(o[:i], o[i]) {
				t.Fatalf("slot %d lists node %d twice", s, o[i])
			}
		}
	}
}

func primaryChanges(a, b *Assignment) int {
	n := 0
	for s := range a.Slots() {
		if a.Nodes()[a.Owners(s)[0]] != b.Nodes()[b.Owners(s)[0]] {
			n++
		}
	}
	return n
}

func TestAssignBalanced(t *testing.T) {
	for _, n := range []int{1, 2, 3, 4, 5, 7, 10, 16, 33, 50} {
		for _, r := range []int{1, 2, 3} {
			if r > n {
				continue
			}
			checkValid(t, mustAssign(t, names(n, "node-"), r, nil))
		}
	}
}

func TestAssignDeterministic(t *testing.T) {
	nodes := names(7, "n")
	a := mustAssign(t, nodes, 2, nil)
	shuffled := slices.Clone(nodes)
	rand.New(rand.NewPCG(1, 1)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	b := mustAssign(t, shuffled, 2, nil)
	if !slices.Equal(a.owners, b.owners) {
		t.Fatal("the same membership in another order gave another assignment")
	}
	c := mustAssign(t, nodes, 2, a)
	if !slices.Equal(a.owners, c.owners) {
		t.Fatal("reassigning the same membership moved slots")
	}
}

// TestMembershipChanges walks random adds and removes and checks after
// each: balance, and primary and replica moves within 1.1x the ideal
// share.
func TestMembershipChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	worst, worstReplicas := 0.0, 0.0
	defer func() {
		t.Logf("largest move, as a share of the ideal: primaries %.3f, replicas %.3f", worst, worstReplicas)
	}()
	for _, r := range []int{2, 3} {
		nodes := names(4, "a")
		a := mustAssign(t, nodes, r, nil)
		next := 0
		for step := range 40 {
			var b *Assignment
			add := len(nodes) <= r+1 || (len(nodes) < 30 && rng.IntN(2) == 0)
			if add {
				nodes = append(nodes, fmt.Sprintf("b%03d", next))
				next++
				b = mustAssign(t, nodes, r, a)
				ideal := float64(DefaultSlots) / float64(len(nodes))
				moved := primaryChanges(a, b)
				worst = max(worst, float64(moved)/ideal)
				if float64(moved) > 1.1*ideal {
					t.Fatalf("R=%d step %d: adding a node to %d moved %d primaries, more than 1.1 x %.0f", r, step, len(nodes)-1, moved, ideal)
				}
			} else {
				gone := nodes[rng.IntN(len(nodes))]
				old := len(nodes)
				nodes = slices.DeleteFunc(nodes, func(n string) bool { return n == gone })
				b = mustAssign(t, nodes, r, a)
				ideal := float64(DefaultSlots) / float64(old)
				moved := primaryChanges(a, b)
				worst = max(worst, float64(moved)/ideal)
				if float64(moved) > 1.1*ideal {
					t.Fatalf("R=%d step %d: removing one of %d nodes moved %d primaries, more than 1.1 x %.0f", r, step, old, moved, ideal)
				}
			}
			if moved, ideal := replicaMoves(a, b), float64(r*DefaultSlots)/float64(max(len(a.Nodes()), len(b.Nodes()))); float64(moved) > 1.1*ideal {
				t.Fatalf("R=%d step %d: %d slot replicas moved, more than 1.1 x %.0f", r, step, moved, ideal)
			} else {
				worstReplicas = max(worstReplicas, float64(moved)/ideal)
			}
			checkValid(t, b)
			a = b
		}
	}
}

// replicaMoves counts the (slot, node) replicas of b that a did not have:
// the data a change from a to b moves.
func replicaMoves(a, b *Assignment) int {
	n := 0
	for s := range b.Slots() {
		for _, o := range b.Owners(s) {
			if i := a.Index(b.Nodes()[o]); i < 0 || !a.Holds(i, s) {
				n++
			}
		}
	}
	return n
}

// TestAssignScale checks balance and movement from a few nodes to 1,000:
// max/mean at most 1.02 at every replica position, and adding or removing
// one node moves at most 1.1x the ideal share of primaries and of replicas.
// Slots grow with the nodes (64 per node at least): with fewer, whole slots
// cannot be balanced within 2%.
func TestAssignScale(t *testing.T) {
	for _, n := range []int{3, 4, 10, 32, 81, 100, 250, 1000} {
		slots := DefaultSlots
		for slots < 64*n {
			slots *= 2
		}
		for _, r := range []int{2, 3} {
			if r == 3 && n > 100 {
				continue // R=3 at scale adds time, not coverage
			}
			nodes := names(n, "node-")
			a, err := Assign(nodes, r, slots, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkValid(t, a)
			check := func(what string, b *Assignment, ideal float64) {
				t.Helper()
				checkValid(t, b)
				prim, repl := float64(primaryChanges(a, b))/(ideal/float64(r)), float64(replicaMoves(a, b))/ideal
				if prim > 1.1 || repl > 1.1 {
					t.Fatalf("N=%d R=%d S=%d, %s: moved %.3fx the ideal share of primaries and %.3fx of replicas, want at most 1.1x",
						n, r, slots, what, prim, repl)
				}
				t.Logf("N=%d R=%d S=%d, %s: moved %.3fx the ideal primaries, %.3fx the ideal replicas", n, r, slots, what, prim, repl)
			}
			if n > r {
				b, err := Assign(slices.Delete(slices.Clone(nodes), n/2, n/2+1), r, slots, a)
				if err != nil {
					t.Fatal(err)
				}
				check("removing one", b, float64(r*slots)/float64(n))
			}
			b, err := Assign(append(slices.Clone(nodes), "new"), r, slots, a)
			if err != nil {
				t.Fatal(err)
			}
			check("adding one", b, float64(r*slots)/float64(n+1))
		}
	}
}

func TestAssignErrors(t *testing.T) {
	if _, err := Assign(nil, 1, DefaultSlots, nil); err == nil {
		t.Fatal("no nodes: no error")
	}
	if _, err := Assign([]string{"a", "b"}, 3, DefaultSlots, nil); err == nil {
		t.Fatal("3 replicas on 2 nodes: no error")
	}
	if _, err := Assign([]string{"a", "a"}, 1, DefaultSlots, nil); err == nil {
		t.Fatal("duplicate nodes: no error")
	}
}

func TestJSONRoundTrip(t *testing.T) {
	a := mustAssign(t, names(5, "n"), 2, nil)
	b, err := FromJSON(a.ToJSON())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.owners, b.owners) || !slices.Equal(a.nodes, b.nodes) {
		t.Fatal("JSON round trip changed the assignment")
	}
	if _, err := FromJSON(JSON{Slots: 2, Assignment: [][]string{{"a"}}}); err == nil {
		t.Fatal("short assignment: no error")
	}
	if _, err := FromJSON(JSON{Slots: 1, Assignment: [][]string{{"a", "a"}}}); err == nil {
		t.Fatal("a node twice in a slot: no error")
	}
}

func BenchmarkOwnersOf(b *testing.B) {
	a, _ := Assign(names(10, "n"), 2, DefaultSlots, nil)
	id := promotion.ID{1, 2, 3}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n += int(a.OwnersOf(id)[0])
		id[15]++
	}
	_ = n
}

// BenchmarkRemoveOneOf32 reports the movement of removing one node of 32
// (R=2, 4096 slots) as multiples of the ideal share.
func BenchmarkRemoveOneOf32(b *testing.B) {
	nodes := names(32, "n")
	a, _ := Assign(nodes, 2, DefaultSlots, nil)
	var c *Assignment
	for b.Loop() {
		c, _ = Assign(nodes[1:], 2, DefaultSlots, a)
	}
	b.ReportMetric(float64(primaryChanges(a, c))/(float64(DefaultSlots)/32), "primaries/ideal")
	b.ReportMetric(float64(replicaMoves(a, c))/(float64(2*DefaultSlots)/32), "replicas/ideal")
}

func BenchmarkAssign(b *testing.B) {
	nodes := names(10, "n")
	for b.Loop() {
		Assign(nodes, 2, DefaultSlots, nil)
	}
}
