package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// fakeVersions is a dataset that holds every id but those whose last byte
// is 0xff, with a price that encodes its version: 0 means no version.
type fakeVersions struct{ version atomic.Uint64 }

func (s *fakeVersions) Acquire() lookup.View {
	if v := s.version.Load(); v > 0 {
		return fakeView(v)
	}
	return nil
}

type fakeView uint64

func (v fakeView) Version() uint64     { return uint64(v) }
func (v fakeView) VersionText() []byte { return strconv.AppendUint(nil, uint64(v), 10) }
func (v fakeView) Release()            {}
func (v fakeView) Get(id promotion.ID, r *promotion.Record) (bool, error) {
	if id[15] == 0xff {
		return false, nil
	}
	*r = fakeRecord(id, uint64(v))
	return true, nil
}

func fakeRecord(id promotion.ID, version uint64) promotion.Record {
	return promotion.Record{ID: id, PriceMicros: int64(version)*1_000_000 + int64(id[0])*10_000, Expires: 1_600_000_000 + int64(id[1])}
}

// fakeGate holds the slots the ring gives node self.
type fakeGate struct {
	ring    *ring.Assignment
	self    int
	min     atomic.Uint64
	nothing atomic.Bool // misdirect every id
}

func (g *fakeGate) Holds(id promotion.ID) bool {
	return !g.nothing.Load() && g.ring.Holds(g.self, ring.Slot(id, g.ring.Slots()))
}
func (g *fakeGate) Misdirected(*fasthttp.RequestCtx, promotion.ID) {}
func (g *fakeGate) Min() lookup.Stamp                              { return lookup.Stamp{Version: g.min.Load()} }

// fakeNode is a read node over fakeVersions: the real batch handler, with
// a hook that may answer instead, and counters.
type fakeNode struct {
	name     string
	url      string
	versions fakeVersions
	gate     fakeGate
	batches  atomic.Int64 // batch requests received
	ids      atomic.Int64 // ids received
	foreign  atomic.Int64 // ids received of slots it does not hold
	hook     atomic.Pointer[func(*fasthttp.RequestCtx) bool]
}

func (n *fakeNode) setHook(h func(*fasthttp.RequestCtx) bool) { n.hook.Store(&h) }

// batchCluster starts read nodes named names at version 7, R=2, and a proxy
// in front of them, configured by mutate.
func batchCluster(t *testing.T, names []string, mutate func(*Config)) (*Proxy, map[string]*fakeNode) {
	t.Helper()
	a, err := ring.Assign(names, 2, ring.DefaultSlots, nil)
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*fakeNode{}
	var members []ring.Node
	for _, name := range names {
		n := &fakeNode{name: name}
		n.versions.version.Store(7)
		n.gate.ring, n.gate.self = a, a.Index(name)
		h := lookup.NewCluster(&n.versions, &n.gate, nil)
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
				ctx.SetStatusCode(fasthttp.StatusNotFound) // the proxy routes by the seeds' ring
				return
			}
			n.batches.Add(1)
			if ids, err := lookup.ParseBatch(ctx.PostBody(), nil); err == nil {
				n.ids.Add(int64(len(ids)))
				for _, id := range ids {
					if !a.Holds(n.gate.self, ring.Slot(id, a.Slots())) {
						n.foreign.Add(1)
					}
				}
			}
			if hook := n.hook.Load(); hook != nil && (*hook)(ctx) {
				return
			}
			h.HandleBatch(ctx)
		}}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Shutdown() })
		n.url = "http://" + ln.Addr().String()
		nodes[name] = n
		members = append(members, ring.Node{Name: name, URL: n.url})
	}
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Nodes = members
	cfg.Replicas = 2
	cfg.TryTimeout = 500 * time.Millisecond
	cfg.HealthInterval = time.Hour // only passive failures in these tests
	cfg.Logger = slog.New(slog.DiscardHandler)
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p, nodes
}

// batchIDs returns n random ids, one in ten unknown (last byte 0xff), and
// a few given twice.
func batchIDs(n int, seed uint64) []promotion.ID {
	rng := rand.New(rand.NewPCG(seed, 1))
	ids := make([]promotion.ID, n)
	for i := range ids {
		for j := range ids[i] {
			ids[i][j] = byte(rng.Uint32())
		}
		ids[i][15] &= 0xfe
		if i%10 == 3 {
			ids[i][15] = 0xff
		}
		if i%50 == 49 {
			ids[i] = ids[i/2]
		}
	}
	return ids
}

// wantBatch is the proxy's answer to ids, all from version v.
func wantBatch(ids []promotion.ID, v uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"version":%d,"promotions":[`, v)
	first := true
	for _, id := range ids {
		if id[15] != 0xff {
			if !first {
				b.WriteByte(',')
			}
			first = false
			r := fakeRecord(id, v)
			b.Write(promotion.AppendJSON(nil, &r))
		}
	}
	b.WriteString(`],"missing":[`)
	first = true
	for _, id := range ids {
		if id[15] == 0xff {
			if !first {
				b.WriteByte(',')
			}
			first = false
			fmt.Fprintf(&b, "%q", id.String())
		}
	}
	b.WriteString("]}")
	return b.String()
}

func postBatch(t *testing.T, p *Proxy, ids []promotion.ID) (int, string, string) {
	t.Helper()
	resp, err := http.Post("http://"+p.Addr()+lookup.BatchPath, "application/json", strings.NewReader(string(lookup.AppendBatchRequest(nil, ids))))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get(lookup.VersionHeader), string(body)
}

// expectBatch posts ids and expects the answer of version v.
func expectBatch(t *testing.T, p *Proxy, ids []promotion.ID, v uint64) {
	t.Helper()
	status, header, body := postBatch(t, p, ids)
	if want := wantBatch(ids, v); status != 200 || header != fmt.Sprint(v) || body != want {
		t.Fatalf("%d (version %q)\n%s\nwant version %d\n%s", status, header, body, v, want)
	}
}

// TestBatchSplitsByOwner: with every node up, each id goes to the primary
// of its slot only, each node gets one request, and the merged answer
// keeps the request's order.
func TestBatchSplitsByOwner(t *testing.T) {
	p, nodes := batchCluster(t, []string{"n1", "n2", "n3"}, nil)
	ids := batchIDs(600, 1)
	expectBatch(t, p, ids, 7)
	primaries := map[string]int64{}
	for _, id := range ids {
		primaries[p.rt.Load().ring.Nodes()[p.rt.Load().ring.OwnersOf(id)[0]]]++
	}
	for name, n := range nodes {
		if n.batches.Load() != 1 || n.ids.Load() != primaries[name] || n.foreign.Load() != 0 {
			t.Errorf("%s got %d requests with %d ids (%d of slots it does not hold), want 1 with the %d ids it is the primary of",
				name, n.batches.Load(), n.ids.Load(), n.foreign.Load(), primaries[name])
		}
	}
	if got := p.failovers.Get(); got != 0 {
		t.Errorf("%d failovers with every node answering", got)
	}
}

// TestBatchAsksOwnersInParallel: every node holds its answer until the
// three requests have arrived, which happens only if the proxy sends them
// at once.
func TestBatchAsksOwnersInParallel(t *testing.T) {
	p, nodes := batchCluster(t, []string{"n1", "n2", "n3"}, func(c *Config) { c.TryTimeout = 5 * time.Second })
	var arrived, alone atomic.Int64
	for _, n := range nodes {
		n.setHook(func(*fasthttp.RequestCtx) bool {
			arrived.Add(1)
			deadline := time.Now().Add(3 * time.Second)
			for arrived.Load() < 3 {
				if time.Now().After(deadline) {
					alone.Add(1)
					break
				}
				time.Sleep(time.Millisecond)
			}
			return false
		})
	}
	expectBatch(t, p, batchIDs(300, 2), 7)
	if alone.Load() != 0 || arrived.Load() != 3 {
		t.Fatalf("%d of %d requests waited in vain for the others: the owners were not asked in parallel", alone.Load(), arrived.Load())
	}
}

// TestBatchFailsOverPerOwnerGroup: when a node fails in any way, the ids it
// was asked for go to the other replicas of their slots, and the batch is
// answered whole, without waiting more than a try timeout.
func TestBatchFailsOverPerOwnerGroup(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hook    func(*fasthttp.RequestCtx) bool
		misdir  bool
		downing bool // counts as a failure of the node
	}{
		{name: "hanging", downing: true, hook: func(*fasthttp.RequestCtx) bool { time.Sleep(time.Second); return false }},
		{name: "500", downing: true, hook: func(ctx *fasthttp.RequestCtx) bool { ctx.SetStatusCode(500); return true }},
		{name: "503 without a version", downing: true, hook: func(ctx *fasthttp.RequestCtx) bool { ctx.SetStatusCode(503); return true }},
		{name: "garbage answer", downing: true, hook: func(ctx *fasthttp.RequestCtx) bool {
			ctx.Response.Header.Set(lookup.VersionHeader, "7")
			ctx.SetBodyString(`{"version":7,"promotions":[{"id":`)
			return true
		}},
		{name: "answer of other ids", downing: true, hook: func(ctx *fasthttp.RequestCtx) bool {
			ctx.Response.Header.Set(lookup.VersionHeader, "7")
			ctx.SetBodyString(`{"version":7,"promotions":[],"missing":["00000000-0000-0000-0000-000000000000"]}`)
			return true
		}},
		{name: "no batch route (an older build)", hook: func(ctx *fasthttp.RequestCtx) bool {
			ctx.SetStatusCode(404)
			ctx.SetBodyString(`{"error":"no such endpoint"}`)
			return true
		}},
		{name: "misdirects every id", misdir: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, nodes := batchCluster(t, []string{"n1", "n2", "n3"}, func(c *Config) { c.TryTimeout = 300 * time.Millisecond })
			bad := nodes["n2"]
			if tc.hook != nil {
				bad.setHook(tc.hook)
			}
			bad.gate.nothing.Store(tc.misdir)
			ids := batchIDs(600, 3)
			start := time.Now()
			expectBatch(t, p, ids, 7)
			if d := time.Since(start); d > time.Second {
				t.Fatalf("the batch took %v: a failing owner must cost at most one try timeout", d)
			}
			// n2's ids were answered by the other replicas of their slots.
			var others int64
			for name, n := range nodes {
				if name != "n2" {
					others += n.ids.Load()
				}
			}
			if bad.batches.Load() == 0 || others != int64(len(ids)) {
				t.Fatalf("n2 asked %d times, the others for %d ids, want once and all %d ids", bad.batches.Load(), others, len(ids))
			}
			if p.failovers.Get() == 0 {
				t.Fatal("no failover counted")
			}
			if got := p.rt.Load().backends[p.rt.Load().ring.Index("n2")].fails.Load() > 0; got != tc.downing {
				t.Fatalf("n2's answer counted as a failure of the node: %v, want %v", got, tc.downing)
			}
		})
	}
}

// TestBatchAnswersFromOneVersion: owners on different versions, during a
// switch: the ids answered from the older one are asked again until the
// whole batch comes from the newer one, or the batch is refused when they
// cannot catch up within CatchUpWait.
func TestBatchAnswersFromOneVersion(t *testing.T) {
	ids := batchIDs(600, 4)
	t.Run("the others catch up", func(t *testing.T) {
		p, nodes := batchCluster(t, []string{"n1", "n2", "n3"}, func(c *Config) { c.CatchUpWait = 3 * time.Second })
		nodes["n1"].versions.version.Store(8)
		// n2 and n3 switch 300ms after the first request reaches them.
		for _, name := range []string{"n2", "n3"} {
			n := nodes[name]
			var first atomic.Bool
			n.setHook(func(*fasthttp.RequestCtx) bool {
				if !first.Swap(true) {
					time.AfterFunc(300*time.Millisecond, func() { n.versions.version.Store(8) })
				}
				return false
			})
		}
		expectBatch(t, p, ids, 8)
		if nodes["n2"].batches.Load() < 2 && nodes["n3"].batches.Load() < 2 {
			t.Fatal("no owner was asked again")
		}
	})
	t.Run("they do not", func(t *testing.T) {
		p, nodes := batchCluster(t, []string{"n1", "n2", "n3"}, func(c *Config) { c.CatchUpWait = 300 * time.Millisecond })
		nodes["n1"].versions.version.Store(8)
		start := time.Now()
		status, header, body := postBatch(t, p, ids)
		if status != 503 || header != "" || !strings.Contains(body, "did not reach the newest dataset version") {
			t.Fatalf("%d (version %q) %s, want 503", status, header, body)
		}
		if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
			t.Fatalf("refused after %v, want it to wait for the replicas, up to the catch-up wait, 300ms", d)
		}
		// Version 8 has been seen: a batch of ids whose replicas are both
		// on version 7 is refused too, not answered from 7.
		var old []promotion.ID
		for _, id := range ids {
			if !p.rt.Load().ring.Holds(p.rt.Load().ring.Index("n1"), ring.Slot(id, ring.DefaultSlots)) {
				old = append(old, id)
			}
		}
		if status, _, body := postBatch(t, p, old[:10]); status != 503 {
			t.Fatalf("a batch of ids on version 7 only after 8 was seen: %d %s", status, body)
		}
	})
	t.Run("a node catching up answers 503 with its version", func(t *testing.T) {
		p, nodes := batchCluster(t, []string{"n1", "n2", "n3"}, nil)
		for _, n := range nodes {
			n.versions.version.Store(8)
			n.gate.min.Store(8)
		}
		nodes["n2"].versions.version.Store(7) // behind the active version, 8
		expectBatch(t, p, ids, 8)
		if p.behind.Get() != 0 {
			t.Fatal("a 503 was taken for an answer from an older version")
		}
	})
}

// Replicas that fail are asked a bounded number of times.
func TestBatchRetriesAreBounded(t *testing.T) {
	p, nodes := batchCluster(t, []string{"n1", "n2", "n3"}, nil)
	for _, n := range nodes {
		n.versions.version.Store(0) // no dataset yet: 503 without a version
	}
	status, _, body := postBatch(t, p, batchIDs(300, 5))
	if status != 503 || !strings.Contains(body, "no replica answered") {
		t.Fatalf("%d %s, want 503", status, body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil || m["unanswered"] != float64(300) || m["id"] == "" {
		t.Fatalf("%s: want the count of unanswered ids and the first of them", body)
	}
	const retries = 2 // the default
	for name, n := range nodes {
		// Each round asks each node at most twice: once as a primary, once
		// for the ids of a failed one.
		if got, most := n.batches.Load(), int64(2*(1+retries)); got > most {
			t.Errorf("%s was asked %d times, want at most %d", name, got, most)
		}
	}
}

func TestBatchRequestErrorsOnProxy(t *testing.T) {
	p, nodes := batchCluster(t, []string{"n1", "n2"}, nil)
	f := func(body string, status int, has string) {
		t.Helper()
		resp, err := http.Post("http://"+p.Addr()+lookup.BatchPath, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != status || !strings.Contains(string(b), has) {
			t.Fatalf("%.40s: %d %s, want %d %s", body, resp.StatusCode, b, status, has)
		}
	}
	f(`{"ids":["d018ef0b-dbd9-48f1-ac1a-eb4d90e57118","nope"]}`, 400, `"id":"nope","index":1`)
	f(string(lookup.AppendBatchRequest(nil, batchIDs(1001, 6))), 413, "at most 1000")
	f(`{"ids":[]}`, 400, "empty")
	f(`{"ids":[`, 400, "malformed batch request")
	for name, n := range nodes {
		if n.batches.Load() != 0 {
			t.Fatalf("%s was asked for a refused batch", name)
		}
	}
	// 1,000 ids go through.
	expectBatch(t, p, batchIDs(1000, 7), 7)
}
