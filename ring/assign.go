package ring

import (
	"errors"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/promotion-service/promo/promotion"
)

// Assignment maps every slot to its replicas, R distinct nodes; the first
// is the slot's primary. It is immutable and safe for concurrent use.
type Assignment struct {
	slots    int
	replicas int
	nodes    []string // sorted
	owners   []uint16 // owners[s*replicas+i] is the index in nodes of replica i of slot s
}

// Errors of Assign.
var (
	ErrNoNodes     = errors.New("ring: no nodes")
	ErrTooFewNodes = errors.New("ring: fewer nodes than replicas")
)

// Assign assigns slots to nodes with the given replication factor.
// previous, when not nil, is the assignment before a membership change: the
// result then moves as few slots as balance allows, and a slot whose
// primary left is led by its previous second replica. The result depends
// only on the arguments.
//
// Balance: for every replica position, each node holds floor(S/N) or
// ceil(S/N) slots.
func Assign(nodes []string, replicas, slots int, previous *Assignment) (*Assignment, error) {
	if len(nodes) == 0 {
		return nil, ErrNoNodes
	}
	if replicas < 1 || slots < 1 || len(nodes) > 65535 {
		return nil, fmt.Errorf("ring: invalid replicas %d or slots %d", replicas, slots)
	}
	if replicas > len(nodes) {
		return nil, fmt.Errorf("%w: %d replicas need at least %d nodes, got %d", ErrTooFewNodes, replicas, replicas, len(nodes))
	}
	sorted := slices.Clone(nodes)
	slices.Sort(sorted)
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return nil, fmt.Errorf("ring: duplicate node %q", sorted[i])
		}
	}
	if previous != nil && previous.slots != slots {
		return nil, fmt.Errorf("ring: previous assignment has %d slots, not %d", previous.slots, slots)
	}
	b := newBuilder(sorted, replicas, slots)
	if previous != nil {
		b.keep(previous)
	}
	b.fill()
	for p := range replicas {
		b.balance(p)
	}
	return b.result(), nil
}

// builder holds an assignment being built: lists of node indexes per slot.
type builder struct {
	nodes    []string
	replicas int
	slots    int
	lists    [][]int
	seeds    []uint64 // per node, for rendezvous scores
	count    [][]int  // count[p][n]: slots with node n at position p
	lo, hi   int      // every count must end in [lo, hi]
	pinned   []bool   // slots whose primary is their previous second replica
}

func newBuilder(nodes []string, replicas, slots int) *builder {
	b := &builder{nodes: nodes, replicas: replicas, slots: slots, lists: make([][]int, slots)}
	b.seeds = make([]uint64, len(nodes))
	for i, n := range nodes {
		h := fnv.New64a()
		h.Write([]byte(n))
		b.seeds[i] = h.Sum64()
	}
	b.count = make([][]int, replicas)
	for p := range b.count {
		b.count[p] = make([]int, len(nodes))
	}
	b.lo, b.hi = slots/len(nodes), (slots+len(nodes)-1)/len(nodes)
	b.pinned = make([]bool, slots)
	return b
}

// score is the rendezvous (highest random weight) score of node n for
// slot s: a slot prefers the nodes with the highest scores.
func (b *builder) scoreOf(s, n int) uint64 {
	return promotion.Mix64(b.seeds[n] ^ promotion.Mix64(uint64(s)+0x9e3779b97f4a7c15))
}

// keep starts from the previous lists, without the nodes that left and
// beyond the replication factor, in their order: a replica that moves up
// keeps its data, and a slot whose primary left is led by its previous
// second replica (pinned: balancing will not move it).
func (b *builder) keep(prev *Assignment) {
	index := make(map[string]int, len(b.nodes))
	for i, n := range b.nodes {
		index[n] = i
	}
	for s := range b.slots {
		for i, pn := range prev.owners[s*prev.replicas : (s+1)*prev.replicas] {
			n, ok := index[prev.nodes[pn]]
			if !ok || len(b.lists[s]) >= b.replicas {
				continue
			}
			if len(b.lists[s]) == 0 && i == 1 {
				b.pinned[s] = true
			}
			b.add(s, n)
		}
	}
}

func (b *builder) add(s, n int) {
	b.count[len(b.lists[s])][n]++
	b.lists[s] = append(b.lists[s], n)
}

func (b *builder) has(s, n int) bool { return slices.Contains(b.lists[s], n) }

// fill completes every list to the replication factor with the slot's
// preferred nodes, those below the upper bound at that position first.
func (b *builder) fill() {
	for s := range b.slots {
		for len(b.lists[s]) < b.replicas {
			p := len(b.lists[s])
			best := -1
			for n := range b.nodes {
				if !b.has(s, n) && (best == -1 || b.better(s, p, n, best)) {
					best = n
				}
			}
			b.add(s, best)
		}
	}
}

// better reports whether slot s prefers node n to node m at position p.
func (b *builder) better(s, p, n, m int) bool {
	roomN, roomM := b.count[p][n] < b.hi, b.count[p][m] < b.hi
	if roomN != roomM {
		return roomN
	}
	return b.scoreOf(s, n) > b.scoreOf(s, m)
}

// balance moves position p of slots from nodes above the bounds to nodes
// below them until every node holds lo or hi slots at p.
func (b *builder) balance(p int) {
	for {
		over, under := -1, -1
		for n := range b.nodes {
			c := b.count[p][n]
			if c > b.hi && (over == -1 || c > b.count[p][over]) {
				over = n
			}
			if c < b.lo && (under == -1 || c < b.count[p][under]) {
				under = n
			}
		}
		if over == -1 && under == -1 {
			return
		}
		donors, receivers := []int{over}, []int{under}
		if over == -1 {
			donors = donors[:0]
			for n := range b.nodes {
				if n != under && b.count[p][n] == b.hi {
					donors = append(donors, n)
				}
			}
		}
		if under == -1 {
			receivers = receivers[:0]
			for n := range b.nodes {
				if n != over && b.count[p][n] < b.hi {
					receivers = append(receivers, n)
				}
			}
			slices.SortStableFunc(receivers, func(x, y int) int { return b.count[p][x] - b.count[p][y] })
		}
		moved := false
	search:
		for _, d := range donors {
			for _, r := range receivers {
				if b.move(p, d, r) {
					moved = true
					break search
				}
			}
		}
		if !moved {
			return // cannot happen while replicas <= nodes; stop rather than loop
		}
	}
}

// move gives position p of one slot from node from to node to: the slot
// that to prefers most among those it may take.
func (b *builder) move(p, from, to int) bool {
	best, bestScore := -1, uint64(0)
	for s := range b.slots {
		if b.lists[s][p] != from || b.has(s, to) || (p == 0 && b.pinned[s]) {
			continue
		}
		if sc := b.scoreOf(s, to); best == -1 || sc > bestScore {
			best, bestScore = s, sc
		}
	}
	if best == -1 {
		return false
	}
	b.lists[best][p] = to
	b.count[p][from]--
	b.count[p][to]++
	return true
}

func (b *builder) result() *Assignment {
	a := &Assignment{slots: b.slots, replicas: b.replicas, nodes: b.nodes, owners: make([]uint16, b.slots*b.replicas)}
	for s, l := range b.lists {
		for i, n := range l {
			a.owners[s*b.replicas+i] = uint16(n)
		}
	}
	return a
}

// Slots returns the number of slots.
func (a *Assignment) Slots() int { return a.slots }

// Replicas returns the replication factor.
func (a *Assignment) Replicas() int { return a.replicas }

// Nodes returns the node names, sorted. The caller must not modify them.
func (a *Assignment) Nodes() []string { return a.nodes }

// Owners returns the indexes (into Nodes) of the replicas of slot, primary
// first. The caller must not modify the slice. It does not allocate.
func (a *Assignment) Owners(slot int) []uint16 {
	return a.owners[slot*a.replicas : (slot+1)*a.replicas]
}

// OwnersOf returns the replicas of the slot of id. It does not allocate.
func (a *Assignment) OwnersOf(id promotion.ID) []uint16 {
	return a.Owners(Slot(id, a.slots))
}

// Holds reports whether node (an index into Nodes) holds slot at any
// replica position.
func (a *Assignment) Holds(node, slot int) bool {
	for _, n := range a.Owners(slot) {
		if int(n) == node {
			return true
		}
	}
	return false
}

// Index returns the index of a node name in Nodes, or -1.
func (a *Assignment) Index(name string) int {
	i, ok := slices.BinarySearch(a.nodes, name)
	if !ok {
		return -1
	}
	return i
}

// JSON is the form printed by promo ring assign and read by --previous.
type JSON struct {
	Slots      int        `json:"slots"`
	Assignment [][]string `json:"assignment"`
}

// ToJSON returns the assignment as node names per slot.
func (a *Assignment) ToJSON() JSON {
	out := JSON{Slots: a.slots, Assignment: make([][]string, a.slots)}
	for s := range a.slots {
		for _, n := range a.Owners(s) {
			out.Assignment[s] = append(out.Assignment[s], a.nodes[n])
		}
	}
	return out
}

// FromJSON rebuilds an assignment printed by ToJSON.
func FromJSON(j JSON) (*Assignment, error) {
	if j.Slots < 1 || len(j.Assignment) != j.Slots {
		return nil, fmt.Errorf("ring: assignment has %d lists for %d slots", len(j.Assignment), j.Slots)
	}
	replicas := len(j.Assignment[0])
	set := map[string]bool{}
	for s, l := range j.Assignment {
		if len(l) != replicas || replicas == 0 {
			return nil, fmt.Errorf("ring: slot %d has %d replicas, slot 0 has %d", s, len(l), replicas)
		}
		for _, n := range l {
			set[n] = true
		}
	}
	nodes := make([]string, 0, len(set))
	for n := range set {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	a := &Assignment{slots: j.Slots, replicas: replicas, nodes: nodes, owners: make([]uint16, j.Slots*replicas)}
	for s, l := range j.Assignment {
		for i, n := range l {
			idx, _ := slices.BinarySearch(nodes, n)
			if slices.Contains(l[:i], n) {
				return nil, fmt.Errorf("ring: slot %d lists %s twice", s, n)
			}
			a.owners[s*replicas+i] = uint16(idx)
		}
	}
	return a, nil
}
