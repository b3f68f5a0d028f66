package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/ring"
)

func members(names ...string) []ring.Node {
	out := make([]ring.Node, len(names))
	for i, n := range names {
		out[i] = ring.Node{Name: n, URL: fmt.Sprintf("http://127.0.0.1:%d", 9001+i)}
	}
	return out
}

// The ring is seeded once, whoever seeds it and however many at once.
func TestSeedRingOnce(t *testing.T) {
	s := mustOpen(t, testConfig(localsvctest.Database(t)))
	ctx := context.Background()
	if _, err := s.Membership(ctx); !errors.Is(err, ErrNoRing) {
		t.Fatalf("membership before the seed: %v, want ErrNoRing", err)
	}
	var wg sync.WaitGroup
	seeded := make(chan bool, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.SeedRing(ctx, members("n1", "n2", "n3"), 2)
			if err != nil {
				t.Error(err)
			}
			seeded <- ok
		}()
	}
	wg.Wait()
	close(seeded)
	n := 0
	for ok := range seeded {
		if ok {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d seeds recorded a ring, want 1", n)
	}
	// A later, different list does not override it.
	if ok, err := s.SeedRing(ctx, members("x1", "x2"), 2); ok || err != nil {
		t.Fatalf("second seed: %v %v", ok, err)
	}
	m, err := s.Membership(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ring.Assign([]string{"n1", "n2", "n3"}, 2, s.cfg.Slots, nil)
	if m.Serving.Version != 1 || m.Pending != nil || len(m.Serving.Members) != 3 ||
		fmt.Sprint(m.Serving.Assignment.ToJSON()) != fmt.Sprint(want.ToJSON()) {
		t.Fatalf("membership = version %d, pending %v, members %v", m.Serving.Version, m.Pending, m.Serving.Members)
	}
	if c := m.Cluster(); c.State != ring.StateStable || c.RingVersion != 1 {
		t.Fatalf("cluster = %s %d", c.State, c.RingVersion)
	}
}

// A change is prepared, one at a time, activates once every member of the
// new ring reported it prepared for the active dataset version, and can be
// reverted while it is prepared.
func TestRingChanges(t *testing.T) {
	s := mustOpen(t, testConfig(localsvctest.Database(t)))
	ctx := context.Background()
	if _, err := s.AddNode(ctx, ring.Node{Name: "n4", URL: "http://127.0.0.1:9004"}); !errors.Is(err, ErrNoRing) {
		t.Fatalf("add before the seed: %v", err)
	}
	if _, err := s.SeedRing(ctx, members("n1", "n2", "n3"), 2); err != nil {
		t.Fatal(err)
	}
	n4 := ring.Node{Name: "n4", URL: "http://127.0.0.1:9004"}
	for _, bad := range []ring.Node{{Name: "n1", URL: "http://127.0.0.1:9999"}, {Name: "n5", URL: "http://127.0.0.1:9001"}} {
		if _, err := s.AddNode(ctx, bad); !errors.Is(err, ErrBadMember) {
			t.Fatalf("add %v: %v, want ErrBadMember", bad, err)
		}
	}
	m, err := s.AddNode(ctx, n4)
	if err != nil {
		t.Fatal(err)
	}
	if m.Pending == nil || m.Pending.Version != 2 || m.Serving.Version != 1 {
		t.Fatalf("after add: serving %d, pending %v", m.Serving.Version, m.Pending)
	}
	c := m.Cluster()
	if c.State != ring.StateRebalancing || c.Change == nil || c.Change.SlotsToMove == 0 || c.Change.SlotsMoved != 0 {
		t.Fatalf("cluster during the change: %+v", c.Change)
	}
	states := map[string]string{}
	for _, n := range c.Nodes {
		states[n.Name] = n.State
	}
	if states["n4"] != ring.NodeJoining || states["n1"] != ring.NodeActive {
		t.Fatalf("node states %v", states)
	}
	// Adding it again is a no-op; any other change waits.
	if m2, err := s.AddNode(ctx, n4); err != nil || m2.Pending.Version != 2 {
		t.Fatalf("add again: %v", err)
	}
	if _, err := s.AddNode(ctx, ring.Node{Name: "n5", URL: "http://127.0.0.1:9005"}); !errors.Is(err, ErrChangeRunning) {
		t.Fatalf("second change: %v, want ErrChangeRunning", err)
	}
	if _, err := s.RemoveNode(ctx, "n1"); !errors.Is(err, ErrChangeRunning) {
		t.Fatalf("removal during a change: %v, want ErrChangeRunning", err)
	}
	// Not activated until every member reported.
	for _, n := range []string{"n1", "n2", "n3"} {
		if err := s.ReportRingPrepared(ctx, 2, n, 0); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := s.ActivateRing(ctx); v != 0 || err != nil {
		t.Fatalf("activated %d (%v) before n4 reported", v, err)
	}
	m, _ = s.Membership(ctx)
	// The old nodes gain nothing: what moves is n4's share, about R/N of
	// the slots.
	gained := ring.Gained(m.Serving.Assignment, m.Pending.Assignment)
	if toMove, moved := m.Progress(); moved != 0 || toMove != gained["n4"] || gained["n1"]+gained["n2"]+gained["n3"] != 0 ||
		toMove < 2*s.cfg.Slots/4*98/100 {
		t.Fatalf("progress %d of %d, want 0 of %d (%v)", moved, toMove, 2*s.cfg.Slots/4, gained)
	}
	// A report for another dataset version does not count.
	if err := s.ReportRingPrepared(ctx, 2, "n4", 7); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.ActivateRing(ctx); v != 0 {
		t.Fatal("activated on a report for another dataset version")
	}
	if err := s.ReportRingPrepared(ctx, 2, "n4", 0); err != nil {
		t.Fatal(err)
	}
	if v, err := s.ActivateRing(ctx); v != 2 || err != nil {
		t.Fatalf("activate: %d %v, want 2", v, err)
	}
	m, _ = s.Membership(ctx)
	if m.Serving.Version != 2 || m.Pending != nil || len(m.Serving.Members) != 4 {
		t.Fatalf("after activation: serving %d, pending %v", m.Serving.Version, m.Pending)
	}
	// Removal, then its revert by adding the node back.
	if m, err = s.RemoveNode(ctx, "n2"); err != nil || m.Pending == nil || len(m.Pending.Members) != 3 {
		t.Fatalf("remove: %v", err)
	}
	if m, err = s.AddNode(ctx, members("n1", "n2")[1]); err != nil || m.Pending != nil || m.Serving.Version != 2 {
		t.Fatalf("add back the leaving node: %v, pending %v", err, m.Pending)
	}
	// A joiner that died is removed: the change is reverted.
	if _, err = s.AddNode(ctx, ring.Node{Name: "n5", URL: "http://127.0.0.1:9005"}); err != nil {
		t.Fatal(err)
	}
	if m, err = s.RemoveNode(ctx, "n5"); err != nil || m.Pending != nil || m.Serving.Version != 2 {
		t.Fatalf("remove the joiner: %v", err)
	}
	if _, err := s.RemoveNode(ctx, "nope"); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("remove an unknown node: %v", err)
	}
	// Never fewer nodes than replicas.
	for _, n := range []string{"n4", "n3"} {
		if _, err := s.RemoveNode(ctx, n); err != nil {
			t.Fatal(err)
		}
		m, _ := s.Membership(ctx)
		for _, mm := range m.Pending.Members {
			if err := s.ReportRingPrepared(ctx, m.Pending.Version, mm.Name, 0); err != nil {
				t.Fatal(err)
			}
		}
		if v, err := s.ActivateRing(ctx); v == 0 || err != nil {
			t.Fatalf("activate the removal of %s: %d %v", n, v, err)
		}
	}
	if _, err := s.RemoveNode(ctx, "n1"); !errors.Is(err, ErrTooFewNodes) {
		t.Fatalf("removal below R: %v, want ErrTooFewNodes", err)
	}
}
