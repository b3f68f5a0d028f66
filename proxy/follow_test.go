package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// ringNodes are fake read nodes that follow one shared ring, as real ones
// follow PostgreSQL: GET /cluster describes it, and a lookup of a slot the
// node does not hold in it gets 421.
type ringNodes struct {
	t       *testing.T
	urls    map[string]string
	cluster atomic.Pointer[ring.Cluster]
	ring    atomic.Pointer[ring.Assignment]
}

func newRingNodes(t *testing.T, names ...string) *ringNodes {
	rn := &ringNodes{t: t, urls: map[string]string{}}
	for _, name := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
			switch path := string(ctx.Path()); {
			case path == "/readyz":
				ctx.SetBodyString(`{"status":"ready"}`)
			case path == "/cluster":
				b, _ := json.Marshal(rn.cluster.Load())
				ctx.SetContentType("application/json")
				ctx.SetBody(b)
			case strings.HasPrefix(path, "/promotions/"):
				id, err := promotion.ParseID([]byte(path[len("/promotions/"):]))
				a := rn.ring.Load()
				if err != nil || !a.Holds(a.Index(name), ring.Slot(id, a.Slots())) {
					ctx.SetStatusCode(fasthttp.StatusMisdirectedRequest)
					ctx.SetBodyString(`{"error":"not mine"}`)
					return
				}
				ctx.Response.Header.Set("X-Dataset-Version", "7")
				ctx.SetBodyString(`{"from":"` + name + `"}`)
			default:
				ctx.SetStatusCode(fasthttp.StatusNotFound)
			}
		}}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Shutdown() })
		rn.urls[name] = "http://" + ln.Addr().String()
	}
	return rn
}

// set makes names, at ring version v, the ring every node follows.
func (rn *ringNodes) set(v uint64, names ...string) *ring.Assignment {
	var members []ring.Node
	for _, n := range names {
		members = append(members, ring.Node{Name: n, URL: rn.urls[n]})
	}
	a, err := ring.Assign(names, 2, ring.DefaultSlots, rn.ring.Load())
	if err != nil {
		rn.t.Fatal(err)
	}
	c := ring.Describe(v, members, a)
	rn.ring.Store(a)
	rn.cluster.Store(&c)
	return a
}

func proxyRing(t *testing.T, p *Proxy) ring.Cluster {
	t.Helper()
	resp, err := http.Get("http://" + p.Addr() + "/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c ring.Cluster
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// The proxy routes by the ring its seeds describe, learns a new one at
// once when a node answers 421 (the lookup still answers 200, from another
// replica), and periodically otherwise.
func TestProxyFollowsTheRing(t *testing.T) {
	rn := newRingNodes(t, "a", "b", "c")
	v1 := rn.set(1, "a", "b")
	start := func(refresh time.Duration) *Proxy {
		cfg := DefaultConfig()
		cfg.Addr = "127.0.0.1:0"
		cfg.Nodes = []ring.Node{{Name: "a", URL: rn.urls["a"]}} // one seed is enough
		cfg.Replicas = 1
		cfg.RefreshInterval = refresh
		cfg.HealthInterval = time.Hour
		cfg.Logger = slog.New(slog.DiscardHandler)
		p, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		return p
	}
	p := start(time.Hour) // only 421s refresh it
	if c := proxyRing(t, p); c.RingVersion != 1 || len(c.Nodes) != 2 || c.Replicas != 2 {
		t.Fatalf("the proxy did not learn the seeds' ring: %+v", c.Nodes)
	}
	v2 := rn.set(2, "a", "b", "c")
	// An id whose slot a led in ring 1 and no longer holds, led by c now.
	var id promotion.ID
	for i := 0; ; i++ {
		id = promotion.ID{byte(i), byte(i >> 8), 7}
		s := ring.Slot(id, ring.DefaultSlots)
		if v1.Nodes()[v1.Owners(s)[0]] == "a" && v2.Nodes()[v2.Owners(s)[0]] == "c" && !v2.Holds(v2.Index("a"), s) {
			break
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + p.Addr() + "/promotions/" + id.String())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 && resp.StatusCode != 503 {
			t.Fatalf("lookup: %d %s", resp.StatusCode, body)
		}
		if proxyRing(t, p).RingVersion == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a 421 did not make the proxy learn ring 2")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get("http://" + p.Addr() + "/promotions/" + id.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"from":"c"}` {
		t.Fatalf("after ring 2: %d %s, want 200 from c, the slot's primary", resp.StatusCode, body)
	}
	metrics := get(t, "http://"+p.Addr()+"/metrics")
	for _, want := range []string{"promo_proxy_ring_version 2", "promo_proxy_slots_uncovered 0"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Fatalf("no %q in /metrics", want)
		}
	}

	// Another proxy learns without lookups, every RefreshInterval.
	q := start(20 * time.Millisecond)
	rn.set(3, "b", "c")
	deadline = time.Now().Add(5 * time.Second)
	for proxyRing(t, q).RingVersion != 3 {
		if time.Now().After(deadline) {
			t.Fatal("the proxy did not learn ring 3 periodically")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c := proxyRing(t, q); fmt.Sprint(ring.Names(nodesOf(c))) != "[b c]" {
		t.Fatalf("ring 3 nodes %v", c.Nodes)
	}
}

func nodesOf(c ring.Cluster) []ring.Node {
	var out []ring.Node
	for _, n := range c.Nodes {
		out = append(out, ring.Node{Name: n.Name, URL: n.URL})
	}
	return out
}

func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
