package readnode_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/readnode"
	"github.com/promotion-service/promo/ring"
)

// waitRing waits until ingest and every running node describe ring
// version v, stable, and returns it.
func (c *cluster) waitRing(v uint64) (*ring.Assignment, ring.Cluster) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	bases := []string{"http://" + c.ingest.Addr()}
	for name := range c.run {
		bases = append(bases, c.url(name))
	}
	var cl ring.Cluster
	for _, base := range bases {
		for {
			resp, err := http.Get(base + "/cluster")
			if err == nil {
				cl = ring.Cluster{}
				json.NewDecoder(resp.Body).Decode(&cl)
				resp.Body.Close()
				if cl.RingVersion == v && cl.State == ring.StateStable {
					break
				}
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("%s does not describe ring %d: %d %s %+v", base, v, cl.RingVersion, cl.State, cl.Change)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	a, _, err := cl.Ring()
	if err != nil {
		c.t.Fatal(err)
	}
	return a, cl
}

// startNew starts a node that was not in the cluster (one configured to
// join), on a free port.
func (c *cluster) startNew(name string, replicas int) {
	c.t.Helper()
	port, err := localsvc.FreePort()
	if err != nil {
		c.t.Fatal(err)
	}
	c.nodes = append(c.nodes, ring.Node{Name: name, URL: fmt.Sprintf("http://127.0.0.1:%d", port)})
	c.dirs[name] = c.t.TempDir()
	c.start(name, replicas)
}

// checkOwners asserts that every owner of each sampled record in a answers
// it from version v, and, when strict, that every other node answers 421.
func (c *cluster) checkOwners(a *ring.Assignment, recs []promotion.Record, v int, strict bool) {
	c.t.Helper()
	client := &http.Client{}
	for i := 0; i < len(recs); i += 23 {
		r := recs[i]
		for name := range c.run {
			status, version, body := get(c.t, client, c.url(name)+"/promotions/"+r.ID.String())
			owner := a.Index(name) >= 0 && a.Holds(a.Index(name), ring.Slot(r.ID, a.Slots()))
			switch {
			case owner && (status != 200 || version != fmt.Sprint(v) || body != string(promotion.AppendJSON(nil, &r))):
				c.t.Fatalf("owner %s of %s: %d version %s %s, want version %d", name, r.ID, status, version, body, v)
			case !owner && strict && status != 421:
				c.t.Fatalf("%s, which does not hold %s, answers %d %s", name, r.ID, status, body)
			}
		}
	}
}

// A node joins (--join) and another leaves: the new owners pull their
// slots and answer them, for the serving version and for one imported
// after the change; the nodes that lost slots stop answering them after
// the drop grace.
func TestJoinAndLeave(t *testing.T) {
	const grace = 500 * time.Millisecond
	c := newCluster(t, []string{"n1", "n2", "n3"}, 2, func(cfg *readnode.Config) {
		cfg.DropGrace = grace
		cfg.Join = cfg.Name == "n4"
	})
	recs := c.importVersion(6000, 1)
	c.waitServing(1)
	c.startNew("n4", 2)
	a, cl := c.waitRing(2)
	if cl.Nodes[len(cl.Nodes)-1].Name != "n4" || a.Index("n4") < 0 {
		t.Fatalf("ring 2 nodes %+v", cl.Nodes)
	}
	c.checkOwners(a, recs, 1, false)
	time.Sleep(grace + 300*time.Millisecond) // past the grace, and a poll
	c.checkOwners(a, recs, 1, true)
	// Each node says which ring it follows and how many slots it answers.
	for name := range c.run {
		resp, err := http.Get(c.url(name) + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		served := 0
		for s := range a.Slots() {
			if a.Holds(a.Index(name), s) {
				served++
			}
		}
		for _, want := range []string{"promo_readnode_ring_version 2\n", fmt.Sprintf("promo_readnode_slots_served %d\n", served)} {
			if !strings.Contains(string(b), want) {
				t.Fatalf("%s /metrics lacks %q", name, want)
			}
		}
	}

	// A version imported after the change is pulled by the new owners.
	recs2 := c.importVersion(6000, 2)
	c.waitServing(2)
	c.checkOwners(a, recs2, 2, true)

	req, _ := http.NewRequest("DELETE", "http://"+c.ingest.Addr()+"/cluster/nodes/n1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("DELETE n1: %d", resp.StatusCode)
	}
	a, cl = c.waitRing(3)
	for _, n := range cl.Nodes {
		if n.Name == "n1" || n.State != ring.NodeActive {
			t.Fatalf("ring 3 nodes %+v", cl.Nodes)
		}
	}
	time.Sleep(grace + 300*time.Millisecond)
	c.checkOwners(a, recs2, 2, true)
	// n1 holds nothing now: every lookup gets 421, with the owners.
	status, _, body := get(t, &http.Client{}, c.url("n1")+"/promotions/"+recs2[0].ID.String())
	if status != 421 || !strings.Contains(body, `"owners":[{`) {
		t.Fatalf("n1 after leaving: %d %s", status, body)
	}
}

// A node that died is removed: the change completes on the survivors,
// which pull its slots, and every slot is answered again by R nodes.
func TestRemoveDeadNode(t *testing.T) {
	c := newCluster(t, []string{"n1", "n2", "n3"}, 2, nil)
	recs := c.importVersion(6000, 1)
	c.waitServing(1)
	c.stop("n3")
	req, _ := http.NewRequest("DELETE", "http://"+c.ingest.Addr()+"/cluster/nodes/n3", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("DELETE n3: %d", resp.StatusCode)
	}
	a, cl := c.waitRing(2)
	if len(cl.Nodes) != 2 || a.Index("n3") >= 0 {
		t.Fatalf("ring 2 nodes %+v", cl.Nodes)
	}
	// With 2 nodes and R=2, both hold every slot.
	c.checkOwners(a, recs, 1, true)
}

// A joiner answers the slots the pending ring gives it as soon as it has
// pulled them, before the ring activates: a client that learned the new
// ring from a node that switched first is not told 421 by a gainer that
// has not seen the switch yet. Here the ring cannot activate (n3 is down
// and never reports), so n4 answers only from the pending ring.
func TestJoinerAnswersPreparedSlots(t *testing.T) {
	c := newCluster(t, []string{"n1", "n2", "n3"}, 2, func(cfg *readnode.Config) { cfg.Join = cfg.Name == "n4" })
	recs := c.importVersion(6000, 1)
	c.waitServing(1)
	c.stop("n3")
	c.startNew("n4", 2)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + c.ingest.Addr() + "/cluster")
		if err != nil {
			t.Fatal(err)
		}
		var cl ring.Cluster
		json.NewDecoder(resp.Body).Decode(&cl)
		resp.Body.Close()
		if cl.RingVersion != 1 || cl.Change == nil {
			t.Fatalf("the join must leave ring 1 serving and ring 2 pending: %+v", cl)
		}
		if len(cl.Change.Prepared) > 0 && strings.Contains(strings.Join(cl.Change.Prepared, ","), "n4") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n4 did not prepare its slots: %+v", cl.Change)
		}
		time.Sleep(20 * time.Millisecond)
	}
	client := &http.Client{}
	answered := 0
	for i := range recs {
		r := recs[i]
		status, version, body := get(t, client, c.url("n4")+"/promotions/"+r.ID.String())
		switch {
		case status == 200 && (version != "1" || body != string(promotion.AppendJSON(nil, &r))):
			t.Fatalf("n4 answers %s with version %s %s", r.ID, version, body)
		case status == 200:
			answered++
		case status != 421:
			t.Fatalf("n4 answers %s: %d %s", r.ID, status, body)
		}
	}
	// With 4 nodes and R=2, n4 holds about half of the slots.
	if answered < len(recs)*3/10 || answered > len(recs)*7/10 {
		t.Fatalf("n4 answered %d of %d ids from its prepared slots, want about half", answered, len(recs))
	}
}
