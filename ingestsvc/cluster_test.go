package ingestsvc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/ring"
)

func clusterCall(t *testing.T, method, u, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: %d %s: not JSON", method, u, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

// The membership API: 202 with the new state, 409 while another change
// runs or below R nodes, 400 for a bad or duplicate name or URL, 401
// without the token, and the ring gauges.
func TestMembershipAPI(t *testing.T) {
	const token = "s3cret"
	e := start(t, localsvctest.Database(t), localsvctest.Kafka(t, events.Topic), func(c *Config) { c.IngestToken = token })
	nodes := e.url + "/cluster/nodes"
	if st, m := clusterCall(t, "GET", e.url+"/cluster", "", ""); st != 503 || m["error"] == nil {
		t.Fatalf("GET /cluster before the seed: %d %v", st, m)
	}
	ctx := context.Background()
	seed := []ring.Node{{Name: "n1", URL: "http://127.0.0.1:9001"}, {Name: "n2", URL: "http://127.0.0.1:9002"}, {Name: "n3", URL: "http://127.0.0.1:9003"}}
	if _, err := e.srv.Store().SeedRing(ctx, seed, 2); err != nil {
		t.Fatal(err)
	}
	st, m := clusterCall(t, "GET", e.url+"/cluster", "", "")
	if st != 200 || m["state"] != "stable" || m["ring_version"] != float64(1) || len(m["assignment"].([]any)) != ring.DefaultSlots {
		t.Fatalf("GET /cluster: %d %v %v", st, m["state"], m["ring_version"])
	}
	if st, _ := clusterCall(t, "POST", nodes, "", `{"name":"n4","url":"http://127.0.0.1:9004"}`); st != 401 {
		t.Fatalf("POST without the token: %d, want 401", st)
	}
	if st, _ := clusterCall(t, "DELETE", nodes+"/n1", "", ""); st != 401 {
		t.Fatalf("DELETE without the token: %d, want 401", st)
	}
	for _, bad := range []string{
		`{"name":"n4"}`, `{"name":"n4","url":"ftp://x"}`, `{"name":"bad name","url":"http://127.0.0.1:9004"}`,
		`{"name":"n1","url":"http://127.0.0.1:9009"}`, `{"name":"n9","url":"http://127.0.0.1:9001"}`, `{"name":`,
	} {
		if st, m := clusterCall(t, "POST", nodes, token, bad); st != 400 || m["error"] == nil {
			t.Fatalf("POST %s: %d %v, want 400", bad, st, m)
		}
	}
	st, m = clusterCall(t, "POST", nodes, token, `{"name":"n4","url":"http://127.0.0.1:9004"}`)
	if st != 202 || m["state"] != "rebalancing" || m["ring_version"] != float64(1) {
		t.Fatalf("POST n4: %d %v", st, m)
	}
	// What moves is the slots n4 gains: about R/N of them.
	a1, _ := ring.Assign([]string{"n1", "n2", "n3"}, 2, ring.DefaultSlots, nil)
	a2, _ := ring.Assign([]string{"n1", "n2", "n3", "n4"}, 2, ring.DefaultSlots, a1)
	toMove := 0
	for _, n := range ring.Gained(a1, a2) {
		toMove += n
	}
	change := m["change"].(map[string]any)
	if change["ring_version"] != float64(2) || change["slots_to_move"] != float64(toMove) ||
		toMove < 2*ring.DefaultSlots/4*98/100 || toMove > 2*ring.DefaultSlots/4*102/100 {
		t.Fatalf("change = %v, want %d slots to move", change, toMove)
	}
	if st, m := clusterCall(t, "POST", nodes, token, `{"name":"n5","url":"http://127.0.0.1:9005"}`); st != 409 {
		t.Fatalf("POST during a change: %d %v, want 409", st, m)
	}
	if st, m := clusterCall(t, "DELETE", nodes+"/n2", token, ""); st != 409 {
		t.Fatalf("DELETE during a change: %d %v, want 409", st, m)
	}
	waitGauge(t, e.url, "promo_ring_rebalancing 1")
	waitGauge(t, e.url, fmt.Sprintf("promo_ring_slots_to_move %d", toMove))
	waitGauge(t, e.url, "promo_ring_slots_moved 0")
	// Removing the joiner reverts the change.
	if st, m := clusterCall(t, "DELETE", nodes+"/n4", token, ""); st != 202 || m["state"] != "stable" {
		t.Fatalf("DELETE the joiner: %d %v", st, m)
	}
	waitGauge(t, e.url, "promo_ring_rebalancing 0")
	waitGauge(t, e.url, "promo_ring_version 1")
	if st, _ := clusterCall(t, "DELETE", nodes+"/nope", token, ""); st != 404 {
		t.Fatalf("DELETE an unknown node: %d, want 404", st)
	}
	// Remove down to R nodes: the next removal is refused.
	if st, m := clusterCall(t, "DELETE", nodes+"/n3", token, ""); st != 202 || m["state"] != "rebalancing" {
		t.Fatalf("DELETE n3: %d %v", st, m)
	}
	s := e.srv.Store()
	for _, n := range []string{"n1", "n2"} {
		if err := s.ReportRingPrepared(ctx, 3, n, 0); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := s.ActivateRing(ctx); v != 3 || err != nil {
		t.Fatalf("activate: %d %v", v, err)
	}
	if st, m := clusterCall(t, "DELETE", nodes+"/n2", token, ""); st != 409 {
		t.Fatalf("DELETE below R: %d %v, want 409", st, m)
	}
	waitGauge(t, e.url, "promo_ring_version 3")
}

// waitGauge waits until /metrics has the line want.
func waitGauge(t *testing.T, base, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(b)
			for _, l := range strings.Split(last, "\n") {
				if l == want {
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %q in /metrics:\n%s", want, last)
}
