package ring

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDescribeRoundTrips(t *testing.T) {
	nodes := []Node{{"n1", "http://127.0.0.1:1"}, {"n2", "http://127.0.0.1:2"}, {"n3", "http://127.0.0.1:3"}}
	a, err := Assign(Names(nodes), 2, 4096, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := Describe(7, nodes, a)
	body, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"ring_version":7`, `"state":"stable"`, `"replicas":2`, `"slots":4096`, `"state":"active"`, `"assignment":[[`} {
		if !strings.Contains(string(body), field) {
			t.Errorf("GET /cluster body lacks %s: %.300s", field, body)
		}
	}
	total := 0
	for _, n := range c.Nodes {
		if n.Slots < 1365 || n.Slots > 1366 {
			t.Errorf("node %s leads %d slots, want 1365 or 1366", n.Name, n.Slots)
		}
		total += n.Slots
	}
	if total != 4096 {
		t.Errorf("nodes lead %d slots in all, want 4096", total)
	}
	var back Cluster
	if err := json.Unmarshal(body, &back); err != nil {
		t.Fatal(err)
	}
	b, urls, err := back.Ring()
	if err != nil {
		t.Fatal(err)
	}
	for s := range 4096 {
		if got, want := b.Owners(s), a.Owners(s); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
			t.Fatalf("slot %d: owners %v after the round trip, want %v", s, got, want)
		}
	}
	if urls["n2"] != "http://127.0.0.1:2" {
		t.Errorf("urls = %v", urls)
	}
}

func TestClusterRingRejectsInconsistentBodies(t *testing.T) {
	nodes := []Node{{"n1", "http://127.0.0.1:1"}, {"n2", "http://127.0.0.1:2"}}
	a, err := Assign(Names(nodes), 2, 16, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Cluster){
		"unlisted node": func(c *Cluster) { c.Nodes = c.Nodes[:1] },
		"bad url":       func(c *Cluster) { c.Nodes[0].URL = "ftp://x" },
		"replicas":      func(c *Cluster) { c.Replicas = 1 },
		"slots":         func(c *Cluster) { c.Slots = 17 },
		"no slots":      func(c *Cluster) { c.Slots = 0 },
	} {
		c := Describe(1, nodes, a)
		edit(&c)
		if _, _, err := c.Ring(); err == nil {
			t.Errorf("%s: Ring accepted an inconsistent cluster", name)
		}
	}
}
