package ring

import "slices"

// Version is one version of the ring: its members and the assignment of
// slots to them.
type Version struct {
	Version    uint64
	Members    []Node
	Assignment *Assignment
}

// Membership is the ring that serves and, during a membership change, the
// one being prepared. It is immutable once built.
type Membership struct {
	Serving Version
	// Pending is the ring being prepared, nil when the cluster is stable.
	Pending *Version
	// Prepared names the members of Pending that reported their slots
	// prepared for the active dataset version.
	Prepared []string
}

// Gained returns, for every node of to, how many slots it holds (at any
// replica position) in to and not in from: the slots it must pull before
// to can serve. from may be nil (everything is gained).
func Gained(from, to *Assignment) map[string]int {
	out := make(map[string]int, len(to.Nodes()))
	for _, name := range to.Nodes() {
		out[name] = 0
	}
	for s := range to.Slots() {
		for _, o := range to.Owners(s) {
			name := to.Nodes()[o]
			if from == nil || s >= from.Slots() {
				out[name]++
				continue
			}
			if i := from.Index(name); i < 0 || !from.Holds(i, s) {
				out[name]++
			}
		}
	}
	return out
}

// Held returns, per slot, whether node holds it in a at any replica
// position; all false when a is nil or does not list node.
func Held(a *Assignment, node string, slots int) []bool {
	out := make([]bool, slots)
	if a == nil {
		return out
	}
	i := a.Index(node)
	if i < 0 {
		return out
	}
	for s := range min(slots, a.Slots()) {
		out[s] = a.Holds(i, s)
	}
	return out
}

// Progress returns the slots the pending change moves (summed over the
// nodes that gain them) and how many of those its prepared members hold
// already; 0, 0 when the cluster is stable.
func (m Membership) Progress() (toMove, moved int) {
	if m.Pending == nil {
		return 0, 0
	}
	for name, n := range Gained(m.Serving.Assignment, m.Pending.Assignment) {
		toMove += n
		if slices.Contains(m.Prepared, name) {
			moved += n
		}
	}
	return toMove, moved
}

// Cluster returns the body of GET /cluster: the serving ring, with the
// members of a pending change marked joining or leaving, and the change's
// progress.
func (m Membership) Cluster() Cluster {
	c := Describe(m.Serving.Version, m.Serving.Members, m.Serving.Assignment)
	if m.Pending == nil {
		return c
	}
	c.State = StateRebalancing
	in := func(nodes []Node, name string) bool {
		return slices.ContainsFunc(nodes, func(n Node) bool { return n.Name == name })
	}
	for i := range c.Nodes {
		if !in(m.Pending.Members, c.Nodes[i].Name) {
			c.Nodes[i].State = NodeLeaving
		}
	}
	for _, n := range m.Pending.Members {
		if !in(m.Serving.Members, n.Name) {
			c.Nodes = append(c.Nodes, ClusterNode{Name: n.Name, URL: n.URL, State: NodeJoining})
		}
	}
	toMove, moved := m.Progress()
	c.Change = &ClusterChange{RingVersion: m.Pending.Version, SlotsToMove: toMove, SlotsMoved: moved,
		Prepared: slices.Clone(m.Prepared)}
	if c.Change.Prepared == nil {
		c.Change.Prepared = []string{}
	}
	return c
}
