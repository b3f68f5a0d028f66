package ring

import (
	"fmt"
	"net/url"
)

// States of a cluster and of its nodes, as GET /cluster reports them.
const (
	StateStable      = "stable"      // the serving ring is the latest one
	StateRebalancing = "rebalancing" // a membership change is being prepared

	NodeActive  = "active"  // serves its slots of the serving ring
	NodeJoining = "joining" // gains slots in the ring being prepared
	NodeLeaving = "leaving" // loses all its slots in the ring being prepared
)

// Cluster is the membership and the serving ring, the body of GET /cluster
// on ingest, every read node and the proxy; clients route by it.
type Cluster struct {
	RingVersion uint64        `json:"ring_version"`
	State       string        `json:"state"`
	Replicas    int           `json:"replicas"`
	Slots       int           `json:"slots"`
	Nodes       []ClusterNode `json:"nodes"`
	// Assignment lists every slot's replicas, primary first (index = slot).
	Assignment [][]string `json:"assignment"`
	// Change is the membership change being prepared, while State is
	// rebalancing.
	Change *ClusterChange `json:"change,omitempty"`
}

// ClusterChange is the progress of a membership change: the ring version
// it prepares, the slots that nodes must pull for it (a slot gained by two
// nodes counts twice), how many of those are pulled, and which members
// have reported all of theirs prepared.
type ClusterChange struct {
	RingVersion uint64   `json:"ring_version"`
	SlotsToMove int      `json:"slots_to_move"`
	SlotsMoved  int      `json:"slots_moved"`
	Prepared    []string `json:"prepared"`
}

// ClusterNode is one member of a Cluster. Slots counts the slots it leads
// (is the primary of) in the serving ring.
type ClusterNode struct {
	Name  string `json:"name"`
	URL   string `json:"url"`
	State string `json:"state"`
	Slots int    `json:"slots"`
}

// Describe returns the stable cluster of nodes serving assignment a, at
// ring version ringVersion.
func Describe(ringVersion uint64, nodes []Node, a *Assignment) Cluster {
	j := a.ToJSON()
	c := Cluster{RingVersion: ringVersion, State: StateStable, Replicas: a.Replicas(), Slots: a.Slots(),
		Assignment: j.Assignment}
	primaries := map[string]int{}
	for _, l := range j.Assignment {
		primaries[l[0]]++
	}
	for _, n := range nodes {
		c.Nodes = append(c.Nodes, ClusterNode{Name: n.Name, URL: n.URL, State: NodeActive, Slots: primaries[n.Name]})
	}
	return c
}

// Ring checks c and returns its serving assignment and the URL of every
// node it names.
func (c Cluster) Ring() (*Assignment, map[string]string, error) {
	if c.Slots < 1 || c.Replicas < 1 {
		return nil, nil, fmt.Errorf("ring: cluster has %d slots and %d replicas", c.Slots, c.Replicas)
	}
	a, err := FromJSON(JSON{Slots: c.Slots, Assignment: c.Assignment})
	if err != nil {
		return nil, nil, err
	}
	if a.Replicas() != c.Replicas {
		return nil, nil, fmt.Errorf("ring: cluster says %d replicas, its assignment has %d", c.Replicas, a.Replicas())
	}
	urls := make(map[string]string, len(c.Nodes))
	for _, n := range c.Nodes {
		u, err := url.Parse(n.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, nil, fmt.Errorf("ring: cluster node %s has no http(s) URL: %q", n.Name, n.URL)
		}
		urls[n.Name] = n.URL
	}
	for _, name := range a.Nodes() {
		if _, ok := urls[name]; !ok {
			return nil, nil, fmt.Errorf("ring: the assignment names node %s, which the cluster does not list", name)
		}
	}
	return a, urls, nil
}
