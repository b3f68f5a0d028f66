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

// eventually runs check until it returns nil, and fails the test with its
// last error once d has passed.
func eventually(t *testing.T, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %v: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// switchable is a fake read node whose /readyz, lookups and
// /datasets/current can be turned bad and good while it runs.
type switchable struct {
	url     string
	ready   atomic.Bool  // /readyz answers 200, else 503
	failing atomic.Bool  // lookups and /datasets/current answer 500
	version atomic.Int64 // X-Dataset-Version of lookups
	readyz  atomic.Int64 // /readyz requests received
	lookups atomic.Int64 // other requests received
	name    string
}

func newSwitchable(t *testing.T, name string, version int64) *switchable {
	t.Helper()
	s := &switchable{name: name}
	s.ready.Store(true)
	s.version.Store(version)
	s.url = rawNode(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/readyz" {
			s.readyz.Add(1)
			if !s.ready.Load() {
				ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
				ctx.SetBodyString(`{"status":"not ready"}`)
				return
			}
			ctx.SetBodyString(`{"status":"ready"}`)
			return
		}
		s.lookups.Add(1)
		if s.failing.Load() {
			ctx.SetStatusCode(fasthttp.StatusInternalServerError)
			ctx.SetBodyString(`{"error":"broken"}`)
			return
		}
		ctx.Response.Header.Set("X-Dataset-Version", fmt.Sprint(s.version.Load()))
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"from":"` + s.name + `","path":"` + string(ctx.Path()) + `"}`)
	})
	return s
}

// rawNode serves every request, /readyz included, with h.
func rawNode(t *testing.T, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

// proxyWith starts a proxy over nodes with health checks every interval.
func proxyWith(t *testing.T, nodes []ring.Node, mutate func(*Config)) *Proxy {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Nodes = nodes
	cfg.Replicas = 2
	cfg.TryTimeout = 200 * time.Millisecond
	cfg.HealthInterval = 20 * time.Millisecond
	cfg.Logger = slog.New(slog.DiscardHandler)
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// scrape returns the value of the sample named name (with its labels) in
// the proxy's /metrics, and whether it is there.
func scrape(t *testing.T, p *Proxy, name string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + p.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("metric %s: %q: %v", name, line, err)
			}
			return f, true
		}
	}
	return 0, false
}

// upMetric waits until the proxy's promo_proxy_backend_up of node is want.
func upMetric(t *testing.T, p *Proxy, node string, want float64) {
	t.Helper()
	name := fmt.Sprintf(`promo_proxy_backend_up{node=%q}`, node)
	eventually(t, 5*time.Second, func() error {
		got, ok := scrape(t, p, name)
		if !ok {
			return fmt.Errorf("%s is not in /metrics", name)
		}
		if got != want {
			return fmt.Errorf("%s = %v, want %v", name, got, want)
		}
		return nil
	})
}

// getBody returns the status, body and X-Dataset-Version of a GET.
func getBody(t *testing.T, u string) (int, string, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header.Get("X-Dataset-Version")
}

// A node whose /readyz fails is marked down by the periodic health check,
// the proxy's /readyz answers 503 while a slot has no healthy replica, and
// the node comes back by a passing check alone: no lookup brings it back
// here, since none is made.
func TestNodeGoesDownAndComesBackThroughHealthChecks(t *testing.T) {
	a, b := newSwitchable(t, "a", 7), newSwitchable(t, "b", 7)
	p := proxyWith(t, []ring.Node{{Name: "a", URL: a.url}, {Name: "b", URL: b.url}}, nil)
	upMetric(t, p, "a", 1)
	upMetric(t, p, "b", 1)
	if code, body, _ := getBody(t, "http://"+p.Addr()+"/readyz"); code != 200 || !strings.Contains(body, `"ready"`) {
		t.Fatalf("/readyz with both nodes up: %d %s", code, body)
	}

	a.ready.Store(false)
	upMetric(t, p, "a", 0)
	// b holds every slot too (R=2 of 2): still ready.
	code, body, _ := getBody(t, "http://"+p.Addr()+"/readyz")
	var r struct {
		Status string          `json:"status"`
		Nodes  map[string]bool `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/readyz: %v: %s", err, body)
	}
	if code != 200 || r.Nodes["a"] || !r.Nodes["b"] {
		t.Fatalf("/readyz with a down: %d %s", code, body)
	}

	b.ready.Store(false)
	upMetric(t, p, "b", 0)
	code, body, _ = getBody(t, "http://"+p.Addr()+"/readyz")
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/readyz: %v: %s", err, body)
	}
	if code != 503 || !strings.Contains(r.Status, "no healthy replica") || r.Nodes["a"] || r.Nodes["b"] {
		t.Fatalf("/readyz with every node down: %d %s, want 503 naming the slots without a healthy replica", code, body)
	}

	lookupsBefore := a.lookups.Load() + b.lookups.Load()
	checksBefore := a.readyz.Load()
	a.ready.Store(true)
	upMetric(t, p, "a", 1)
	if a.readyz.Load() <= checksBefore {
		t.Fatal("a came back without a health check reaching it")
	}
	if n := a.lookups.Load() + b.lookups.Load(); n != lookupsBefore {
		t.Fatalf("%d lookups reached the nodes; a must come back through its health check alone", n-lookupsBefore)
	}
	if code, body, _ := getBody(t, "http://"+p.Addr()+"/readyz"); code != 200 {
		t.Fatalf("/readyz once a is back: %d %s", code, body)
	}
}

// A node marked down by failed requests (passive) comes back through its
// next passing health check, and lookups reach it again.
func TestNodeDownByFailuresIsBroughtBackByItsHealthCheck(t *testing.T) {
	a, b := newSwitchable(t, "a", 7), newSwitchable(t, "b", 7)
	// Health checks slow enough that the failures mark a down first. No
	// hedging: a hedge to b when a answers late (under -race) would relay
	// b's answer although a is back and asked first.
	p := proxyWith(t, []ring.Node{{Name: "a", URL: a.url}, {Name: "b", URL: b.url}}, func(c *Config) {
		c.HealthInterval = 300 * time.Millisecond
		c.Hedge.Disabled = true
	})
	upMetric(t, p, "a", 1)
	a.failing.Store(true)
	a.ready.Store(false) // and its checks fail: it stays down
	ia := p.rt.Load().ring.Index("a")
	for i := 0; p.rt.Load().backends[ia].up.Load(); i++ {
		if i == 100 {
			t.Fatal("a is still up after 100 lookups that it failed")
		}
		// An id whose primary is a, so that a is asked first.
		code, body, _ := getBody(t, "http://"+p.Addr()+"/promotions/"+idOwnedFirstBy(t, p, "a", i))
		if code != 200 || !strings.Contains(body, `"from":"b"`) {
			t.Fatalf("lookup with a failing: %d %s, want b's answer", code, body)
		}
	}
	upMetric(t, p, "a", 0)
	if n, _ := scrape(t, p, `promo_proxy_backend_errors_total{node="a"}`); n < 3 {
		t.Fatalf("%v errors counted for a, want at least FailuresToDown=3", n)
	}
	a.failing.Store(false)
	a.ready.Store(true)
	upMetric(t, p, "a", 1)
	before := a.lookups.Load()
	code, body, _ := getBody(t, "http://"+p.Addr()+"/promotions/"+idOwnedFirstBy(t, p, "a", 1000))
	if code != 200 || !strings.Contains(body, `"from":"a"`) || a.lookups.Load() == before {
		t.Fatalf("lookup once a is back: %d %s, want a's answer", code, body)
	}
}

// idOwnedFirstBy returns the i-th id (in a fixed sequence) whose slot's
// first replica is name.
func idOwnedFirstBy(t *testing.T, p *Proxy, name string, i int) string {
	t.Helper()
	want := p.rt.Load().ring.Index(name)
	for n, k := 0, 0; n < 1<<20; n++ {
		id := promotion.ID{byte(n >> 16), byte(n >> 8), byte(n), 0x42}
		if int(p.rt.Load().ring.OwnersOf(id)[0]) != want {
			continue
		}
		if k == i {
			return id.String()
		}
		k++
	}
	t.Fatalf("no id owned first by %s", name)
	return ""
}

// Once the proxy has answered version 7, a replica that stays on 6 is
// never answered from: the lookup waits CatchUpWait for a replica on 7,
// then gives up with a 503, and counts the answers held back.
func TestReplicaThatStaysBehindIsGivenUpOn(t *testing.T) {
	a, b := newSwitchable(t, "a", 7), newSwitchable(t, "b", 7)
	p := proxyWith(t, []ring.Node{{Name: "a", URL: a.url}, {Name: "b", URL: b.url}}, func(c *Config) {
		c.CatchUpWait = 300 * time.Millisecond
	})
	id := "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118"
	if code, _, v := getBody(t, "http://"+p.Addr()+"/promotions/"+id); code != 200 || v != "7" {
		t.Fatalf("first lookup: %d version %q", code, v)
	}
	a.version.Store(6)
	b.version.Store(6)
	before := a.lookups.Load() + b.lookups.Load()
	start := time.Now()
	code, body, v := getBody(t, "http://"+p.Addr()+"/promotions/"+id)
	waited := time.Since(start)
	if code != 503 || v == "6" || strings.Contains(body, `"from"`) {
		t.Fatalf("lookup with both replicas behind: %d %s (version %q), want 503 and no older answer", code, body, v)
	}
	// Backoff 10, 20, 40, 80ms: the next pause, 160ms, would end past
	// CatchUpWait, so it gives up after 150ms of waiting.
	if waited < 150*time.Millisecond {
		t.Fatalf("gave up after %v: it must wait for a replica to catch up, with backoff, within CatchUpWait (300ms)", waited)
	}
	asked := a.lookups.Load() + b.lookups.Load() - before
	if asked < 4 {
		t.Fatalf("the replicas were asked %d times: the proxy must wait for them, asking again", asked)
	}
	if n, _ := scrape(t, p, "promo_proxy_behind_answers_total"); n < float64(asked) {
		t.Fatalf("promo_proxy_behind_answers_total = %v, want every one of the %d older answers", n, asked)
	}
	if n, _ := scrape(t, p, "promo_proxy_no_replica_total"); n != 1 {
		t.Fatalf("promo_proxy_no_replica_total = %v, want 1", n)
	}
	// When one replica catches up, lookups are answered from it.
	b.version.Store(7)
	if code, body, v := getBody(t, "http://"+p.Addr()+"/promotions/"+id); code != 200 || v != "7" || !strings.Contains(body, `"from":"b"`) {
		t.Fatalf("lookup once b is on 7: %d %s (version %q)", code, body, v)
	}
}

// GET /datasets/current goes to the first healthy node, fails over to the
// next on a 5xx, and answers 503 when no node answers.
func TestDatasetsCurrentFailsOver(t *testing.T) {
	a, b := newSwitchable(t, "a", 7), newSwitchable(t, "b", 7)
	p := proxyWith(t, []ring.Node{{Name: "a", URL: a.url}, {Name: "b", URL: b.url}}, func(c *Config) {
		c.HealthInterval = time.Hour // only passive failures
	})
	first := p.rt.Load().backends[0].name
	nodes := map[string]*switchable{"a": a, "b": b}
	other := map[string]string{"a": "b", "b": "a"}[first]
	code, body, _ := getBody(t, "http://"+p.Addr()+"/datasets/current")
	if code != 200 || !strings.Contains(body, `"from":"`+first+`"`) || !strings.Contains(body, "/datasets/current") {
		t.Fatalf("/datasets/current: %d %s, want %s's answer", code, body, first)
	}
	nodes[first].failing.Store(true)
	code, body, _ = getBody(t, "http://"+p.Addr()+"/datasets/current")
	if code != 200 || !strings.Contains(body, `"from":"`+other+`"`) {
		t.Fatalf("/datasets/current with %s failing: %d %s, want %s's answer", first, code, body, other)
	}
	if n, _ := scrape(t, p, fmt.Sprintf(`promo_proxy_backend_errors_total{node=%q}`, first)); n == 0 {
		t.Fatalf("no error counted for %s", first)
	}
	nodes[other].failing.Store(true)
	code, body, _ = getBody(t, "http://"+p.Addr()+"/datasets/current")
	if code != 503 || !strings.Contains(body, "no read node answered") {
		t.Fatalf("/datasets/current with every node failing: %d %s, want 503", code, body)
	}
}
