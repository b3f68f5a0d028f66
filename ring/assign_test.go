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

// checkValid: R distinct nodes per slot, and max/mean at most 1.02 at
// every replica position.
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
// each: balance, primary moves within 1.1x the ideal share, and failover
// to the previous second replica.
func TestMembershipChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	worst := 0.0
	defer func() { t.Logf("largest primary move, as a share of the ideal: %.3f", worst) }()
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
				gi := a.Index(gone)
				for s := range a.Slots() {
					if int(a.Owners(s)[0]) == gi {
						want := a.Nodes()[a.Owners(s)[1]]
						if got := b.Nodes()[b.Owners(s)[0]]; got != want {
							t.Fatalf("R=%d step %d: slot %d lost primary %s; new primary %s, want its second replica %s", r, step, s, gone, got, want)
						}
					}
				}
			}
			checkValid(t, b)
			a = b
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

func BenchmarkAssign(b *testing.B) {
	nodes := names(10, "n")
	for b.Loop() {
		Assign(nodes, 2, DefaultSlots, nil)
	}
}
