package proxy

import (
	"context"
	"encoding/json"
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

// fake starts a listener whose connections are handled by serve.
func fake(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return "http://" + ln.Addr().String()
}

// good is a read node that holds every id: 200 with version 7.
func good(t *testing.T) string {
	t.Helper()
	return node(t, new(atomic.Int64), func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Dataset-Version", "7")
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"from":"good","path":"` + string(ctx.Path()) + `"}`)
	})
}

func startProxy(t *testing.T, nodes []ring.Node) *Proxy {
	t.Helper()
	return startProxyTB(t, nodes)
}

func startProxyTB(t testing.TB, nodes []ring.Node) *Proxy {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Nodes = nodes
	cfg.Replicas = 2
	cfg.TryTimeout = 200 * time.Millisecond
	cfg.HealthInterval = time.Hour // only passive failures in this test
	cfg.Logger = slog.New(slog.DiscardHandler)
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	for _, b := range p.rt.Load().backends {
		b.up.Store(true) // as if their health checks had passed
	}
	return p
}

func TestFailoverFromHangingAndGarbageNodes(t *testing.T) {
	hang := fake(t, func(c net.Conn) { time.Sleep(5 * time.Second); c.Close() })
	garbage := fake(t, func(c net.Conn) {
		io.WriteString(c, "this is not HTTP\r\n\r\n")
		c.Close()
	})
	for name, bad := range map[string]string{"hanging": hang, "garbage": garbage} {
		t.Run(name, func(t *testing.T) {
			p := startProxy(t, []ring.Node{{Name: "bad", URL: bad}, {Name: "good", URL: good(t)}})
			client := &http.Client{Timeout: 5 * time.Second}
			for i := range 20 {
				id := promotion.ID{byte(i), byte(i * 7), 3}
				start := time.Now()
				resp, err := client.Get("http://" + p.Addr() + "/promotions/" + id.String())
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.Contains(string(body), `"from":"good"`) || resp.Header.Get("X-Dataset-Version") != "7" {
					t.Fatalf("lookup %d: %d %s", i, resp.StatusCode, body)
				}
				if d := time.Since(start); d > time.Second {
					t.Fatalf("lookup %d took %v: a bad node must cost at most one try timeout", i, d)
				}
			}
			if p.rt.Load().backends[p.rt.Load().ring.Index("bad")].errors.Get() == 0 {
				t.Fatal("no error counted for the bad node")
			}
			if p.rt.Load().backends[p.rt.Load().ring.Index("bad")].up.Load() {
				t.Fatal("the bad node is still marked up after failing requests")
			}
		})
	}
}

func TestNoReplicaAnswers(t *testing.T) {
	hang := fake(t, func(c net.Conn) { time.Sleep(5 * time.Second); c.Close() })
	p := startProxy(t, []ring.Node{{Name: "a", URL: hang}, {Name: "b", URL: hang}})
	start := time.Now()
	resp, err := http.Get("http://" + p.Addr() + "/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "no replica") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the client waited %v", d)
	}
	resp, _ = http.Get("http://" + p.Addr() + "/promotions/not-an-id")
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("malformed id: %d", resp.StatusCode)
	}
}

func TestConfigErrors(t *testing.T) {
	f := func(nodes string, replicas int, want string) {
		t.Helper()
		members, err := ring.ParseNodes(nodes, true)
		if err == nil {
			cfg := DefaultConfig()
			cfg.Addr = "127.0.0.1:0"
			cfg.Nodes, cfg.Replicas = members, replicas
			_, err = Start(context.Background(), cfg)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q R=%d: %v, want %q", nodes, replicas, err, want)
		}
	}
	f("a=http://127.0.0.1:1,a=http://127.0.0.1:2", 1, "twice")
	f("a=http://127.0.0.1:1", 2, "Replicas must be between 1 and the number of nodes")
	f("a=not-a-url", 1, "not an http(s) URL")
	f("", 1, "no nodes")
}

// node is a fake read node: /readyz answers 200, /cluster 404, and every lookup is
// counted and answered by answer.
func node(t *testing.T, lookups *atomic.Int64, answer func(ctx *fasthttp.RequestCtx)) string {
	t.Helper()
	return nodeTB(t, lookups, answer)
}

func nodeTB(t testing.TB, lookups *atomic.Int64, answer func(ctx *fasthttp.RequestCtx)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/readyz" {
			ctx.SetBodyString(`{"status":"ready"}`)
			return
		}
		if string(ctx.Path()) == "/cluster" {
			// No ring to learn: the proxy routes by the seeds'.
			ctx.SetStatusCode(fasthttp.StatusNotFound)
			return
		}
		lookups.Add(1)
		answer(ctx)
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

// Replicas that answer 503 without a version (no dataset yet, or in
// trouble) are asked a bounded number of times, not every 10ms for the
// catch-up wait: one lookup must not become a hundred requests to nodes
// that are already failing.
func TestFailingReplicasAreAskedABoundedNumberOfTimes(t *testing.T) {
	var lookups atomic.Int64
	unavailable := func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetBodyString(`{"error":"this node serves no dataset version yet"}`)
	}
	p := startProxy(t, []ring.Node{{Name: "a", URL: node(t, &lookups, unavailable)}, {Name: "b", URL: node(t, &lookups, unavailable)}})
	resp, err := http.Get("http://" + p.Addr() + "/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != fasthttp.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
	const retries = 2 // the default
	if got, most := lookups.Load(), int64(2*(1+retries)); got > most {
		t.Fatalf("one lookup sent %d requests to the replicas, want at most %d (2 replicas, %d retries)", got, most, retries)
	}
}

// A replica that answers 503 with an older version is catching up with
// the active one: the proxy waits for it, with a backoff, and answers from
// the new version once it has switched.
func TestCatchingUpReplicaIsWaitedForWithBackoff(t *testing.T) {
	var lookups atomic.Int64
	var switched atomic.Bool
	catchingUp := func(ctx *fasthttp.RequestCtx) {
		if !switched.Load() {
			ctx.Response.Header.Set("X-Dataset-Version", "6")
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			ctx.SetBodyString(`{"error":"this node is catching up with the active dataset version","version":7}`)
			return
		}
		ctx.Response.Header.Set("X-Dataset-Version", "7")
		ctx.SetBodyString(`{"from":"switched"}`)
	}
	p := startProxy(t, []ring.Node{{Name: "a", URL: node(t, &lookups, catchingUp)}, {Name: "b", URL: node(t, &lookups, catchingUp)}})
	// The replicas switch 400ms after the first lookup reaches them, as a
	// node that activates while lookups wait.
	go func() {
		for lookups.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(400 * time.Millisecond)
		switched.Store(true)
	}()
	resp, err := http.Get("http://" + p.Addr() + "/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Dataset-Version") != "7" || !strings.Contains(string(body), "switched") {
		t.Fatalf("%d %s (version %q), want the switched replica's answer", resp.StatusCode, body, resp.Header.Get("X-Dataset-Version"))
	}
	// Waiting with backoff from 10ms doubling to 200ms asks each replica
	// at most 9 times within the whole CatchUpWait; polling every 10ms
	// asked it 40 times in these 400ms.
	if got := lookups.Load(); got > 18 {
		t.Fatalf("%d requests while waiting for a replica to catch up, want at most 18", got)
	}
}

func TestClusterDescribesTheRing(t *testing.T) {
	nodes := []ring.Node{{Name: "a", URL: good(t)}, {Name: "b", URL: good(t)}, {Name: "c", URL: good(t)}}
	p := startProxy(t, nodes)
	resp, err := http.Get("http://" + p.Addr() + "/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c ring.Cluster
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /cluster: %d %v", resp.StatusCode, err)
	}
	a, urls, err := c.Ring()
	if err != nil {
		t.Fatal(err)
	}
	if c.State != ring.StateStable || len(c.Nodes) != 3 || urls["b"] != nodes[1].URL {
		t.Fatalf("cluster = %+v", c)
	}
	for s := range c.Slots {
		if a.Nodes()[a.Owners(s)[0]] != p.rt.Load().ring.Nodes()[p.rt.Load().ring.Owners(s)[0]] {
			t.Fatalf("slot %d: /cluster names primary %s, the proxy routes to %s", s,
				a.Nodes()[a.Owners(s)[0]], p.rt.Load().ring.Nodes()[p.rt.Load().ring.Owners(s)[0]])
		}
	}
}
