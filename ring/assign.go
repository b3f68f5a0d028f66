package ring

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
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
// result then moves as few slots as balance allows (the replicas that stay
// keep their slots and positions; the data to move is balanced first, then
// the positions by swapping replicas within a slot, which moves no data).
// The result depends only on the arguments.
//
// Balance: for every replica position, each node holds floor(S/N) or
// ceil(S/N) slots without previous, and within 1.5% of S/N after a change
// (max/mean at most 1.02 when S/N is at least about 64).
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
		b.allowSlack()
	}
	b.fill()
	b.balanceTotals()
	b.swapPositions()
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
	total    []int    // total[n]: slots node n holds at any position
	loT, hiT int      // every total should end in [loT, hiT]
	prevPrim []int    // per slot, its previous primary if it stays, else -1
}

func newBuilder(nodes []string, replicas, slots int) *builder {
	b := &builder{nodes: nodes, replicas: replicas, slots: slots, lists: make([][]int, slots)}
	for s := range b.lists {
		b.lists[s] = make([]int, replicas)
		for p := range b.lists[s] {
			b.lists[s][p] = -1 // a hole
		}
	}
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
	b.total = make([]int, len(nodes))
	b.loT, b.hiT = slots*replicas/len(nodes), (slots*replicas+len(nodes)-1)/len(nodes)
	b.prevPrim = make([]int, slots)
	for s := range b.prevPrim {
		b.prevPrim[s] = -1
	}
	return b
}

// score is the rendezvous (highest random weight) score of node n for
// slot s: a slot prefers the nodes with the highest scores.
func (b *builder) scoreOf(s, n int) uint64 {
	return promotion.Mix64(b.seeds[n] ^ promotion.Mix64(uint64(s)+0x9e3779b97f4a7c15))
}

// keep starts from the previous lists, without the nodes that left: each
// replica that stays keeps its slot at its position, so that the counts of
// the nodes that stay do not change, and the holes are filled in place.
func (b *builder) keep(prev *Assignment) {
	index := make(map[string]int, len(b.nodes))
	for i, n := range b.nodes {
		index[n] = i
	}
	for s := range b.slots {
		for i, pn := range prev.owners[s*prev.replicas : (s+1)*prev.replicas] {
			n, ok := index[prev.nodes[pn]]
			if !ok || i >= b.replicas {
				continue
			}
			if i == 0 {
				b.prevPrim[s] = n
			}
			b.set(s, i, n)
		}
	}
}

// primaryCost is how many more slots change primary (against the previous
// assignment) when slot s is led by n instead of m.
func (b *builder) primaryCost(s, n, m int) int {
	c := 0
	if p := b.prevPrim[s]; p >= 0 {
		if n != p {
			c++
		}
		if m != p {
			c--
		}
	}
	return c
}

// slack is how far above the mean a count may end after a change: within
// it, balance moves no data (the target is max/mean at most 1.02).
const slack = 1.015

// allowSlack widens the bounds from floor and ceil of the mean to slack
// around it, where that is wider: a change then moves only the data that
// balance needs, not the data that exact balance would.
func (b *builder) allowSlack() {
	widen := func(total int, lo, hi *int) {
		mean := float64(total) / float64(len(b.nodes))
		*hi = max(*hi, int(mean*slack))
		*lo = min(*lo, int(math.Ceil(mean*(2-slack))))
	}
	widen(b.slots, &b.lo, &b.hi)
	widen(b.slots*b.replicas, &b.loT, &b.hiT)
}

// set puts node n at position p of slot s, a hole.
func (b *builder) set(s, p, n int) {
	b.count[p][n]++
	b.total[n]++
	b.lists[s][p] = n
}

func (b *builder) has(s, n int) bool { return slices.Contains(b.lists[s], n) }

// fill fills the holes of every list with the slot's preferred nodes,
// those below the upper bounds (total, then at that position) first.
func (b *builder) fill() {
	for s := range b.slots {
		for p, n := range b.lists[s] {
			if n >= 0 {
				continue
			}
			best := -1
			for n := range b.nodes {
				if !b.has(s, n) && (best == -1 || b.better(s, p, n, best)) {
					best = n
				}
			}
			b.set(s, p, best)
		}
	}
}

// better reports whether slot s prefers node n to node m at position p:
// nodes with room in their total first, then with room at p, then by
// rendezvous score.
func (b *builder) better(s, p, n, m int) bool {
	roomN, roomM := b.total[n] < b.hiT, b.total[m] < b.hiT
	if roomN != roomM {
		return roomN
	}
	roomN, roomM = b.count[p][n] < b.hi, b.count[p][m] < b.hi
	if roomN != roomM {
		return roomN
	}
	return b.scoreOf(s, n) > b.scoreOf(s, m)
}

// balanceTotals moves replicas, whatever their position, from nodes that
// hold more than hiT slots to nodes that hold fewer than loT, until every
// node holds loT or hiT: this is the data a change moves, so only what
// balance needs moves.
func (b *builder) balanceTotals() {
	for {
		over, under := -1, -1
		for n := range b.nodes {
			c := b.total[n]
			if c > b.hiT && (over == -1 || c > b.total[over]) {
				over = n
			}
			if c < b.loT && (under == -1 || c < b.total[under]) {
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
				if n != under && b.total[n] > b.loT {
					donors = append(donors, n)
				}
			}
			// Donors that can give the position the receiver lacks most
			// without falling below lo there come first.
			need := 0
			for p := range b.replicas {
				if b.count[p][under] < b.count[need][under] {
					need = p
				}
			}
			slices.SortStableFunc(donors, func(x, y int) int {
				if d := b.total[y] - b.total[x]; d != 0 {
					return d
				}
				return b.count[need][y] - b.count[need][x]
			})
		}
		if under == -1 {
			receivers = receivers[:0]
			for n := range b.nodes {
				if n != over && b.total[n] < b.hiT {
					receivers = append(receivers, n)
				}
			}
			slices.SortStableFunc(receivers, func(x, y int) int { return b.total[x] - b.total[y] })
		}
		moved := false
	search:
		for _, d := range donors {
			for _, r := range receivers {
				if b.moveAny(d, r) {
					moved = true
					break search
				}
			}
		}
		if !moved {
			return
		}
	}
}

// moveAny gives one replica of node from, at the position where from has
// the most slots, to node to: the slot to prefers most among those it
// may take.
func (b *builder) moveAny(from, to int) bool {
	best, bestP, bestKey := -1, 0, [3]uint64{}
	for s := range b.slots {
		if b.has(s, to) {
			continue
		}
		for p, n := range b.lists[s] {
			if n != from {
				continue
			}
			// Prefer the position where from is over and to under the
			// bound, then a slot whose primary does not change (again),
			// then the slot to prefers.
			fit := uint64(0)
			switch c := b.count[p][from]; {
			case c > b.hi:
				fit += 2
			case c > b.lo:
				fit++
			}
			switch c := b.count[p][to]; {
			case c < b.lo:
				fit += 2
			case c < b.hi:
				fit++
			}
			cost := uint64(1)
			if p == 0 && b.primaryCost(s, to, from) > 0 {
				cost = 0
			}
			key := [3]uint64{fit, cost, b.scoreOf(s, to)}
			if best == -1 || cmpKey(key, bestKey) > 0 {
				best, bestP, bestKey = s, p, key
			}
		}
	}
	if best == -1 {
		return false
	}
	b.lists[best][bestP] = to
	b.count[bestP][from]--
	b.count[bestP][to]++
	b.total[from]--
	b.total[to]++
	return true
}

// excess measures how far the count c at a position is outside [lo, hi].
func (b *builder) excess(c int) int {
	switch {
	case c > b.hi:
		return c - b.hi
	case c < b.lo:
		return b.lo - c
	}
	return 0
}

// swapPositions balances the replica positions without moving data: it
// swaps the positions of two replicas of a slot wherever that brings the
// counts closer to [lo, hi], sweeping until no swap helps (a bounded
// number of sweeps): first only swaps that change no more primaries than
// they restore, then any.
func (b *builder) swapPositions() {
	if b.replicas < 2 {
		return
	}
	for _, anyPrimary := range []bool{false, true} {
		b.swapSweeps(anyPrimary)
	}
}

func (b *builder) swapSweeps(anyPrimary bool) {
	for sweep := 0; sweep < 64; sweep++ {
		swapped := false
		for s := range b.slots {
			l := b.lists[s]
			for i := range b.replicas {
				for j := i + 1; j < b.replicas; j++ {
					if i == 0 && !anyPrimary && b.primaryCost(s, l[j], l[i]) > 0 {
						continue
					}
					x, y := l[i], l[j]
					ci, cj := b.count[i], b.count[j]
					before := b.excess(ci[x]) + b.excess(cj[x]) + b.excess(ci[y]) + b.excess(cj[y])
					after := b.excess(ci[x]-1) + b.excess(cj[x]+1) + b.excess(ci[y]+1) + b.excess(cj[y]-1)
					if after >= before {
						continue
					}
					l[i], l[j] = y, x
					ci[x]--
					cj[x]++
					ci[y]++
					cj[y]--
					swapped = true
				}
			}
		}
		if !swapped {
			return
		}
	}
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
				if n != under && b.count[p][n] > b.lo {
					donors = append(donors, n)
				}
			}
			slices.SortStableFunc(donors, func(x, y int) int { return b.count[p][y] - b.count[p][x] })
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
	bestCost := 0
	for s := range b.slots {
		if b.lists[s][p] != from || b.has(s, to) {
			continue
		}
		cost := 0
		if p == 0 {
			cost = b.primaryCost(s, to, from)
		}
		if sc := b.scoreOf(s, to); best == -1 || cost < bestCost || (cost == bestCost && sc > bestScore) {
			best, bestScore, bestCost = s, sc, cost
		}
	}
	if best == -1 {
		return false
	}
	b.lists[best][p] = to
	b.count[p][from]--
	b.count[p][to]++
	b.total[from]--
	b.total[to]++
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

func cmpKey(a, b [3]uint64) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] > b[i] {
				return 1
			}
			return -1
		}
	}
	return 0
}
