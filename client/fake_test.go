package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// fakeNode is a read node of a fake cluster: it answers every id it is
// asked for with a price naming the node (node i answers i+1), after
// delay, or for one request in stallEvery after stall.
type fakeNode struct {
	name       string
	url        string
	delay      atomic.Int64
	stall      atomic.Int64
	stallEvery atomic.Int64
	status     atomic.Int64 // answered instead of 200 when set
	version    atomic.Uint64
	gets       atomic.Int64
	srv        *fasthttp.Server
	price      int64
	cluster    *atomic.Pointer[[]byte] // GET /cluster, shared by the fake cluster
}

// fakeCluster starts n fake read nodes with R replicas on loopback; every
// one serves GET /cluster describing all of them.
func fakeCluster(t testing.TB, n, replicas int) ([]*fakeNode, *ring.Assignment) {
	t.Helper()
	return fakeClusterIdle(t, n, replicas, 0)
}

// fakeClusterIdle is fakeCluster with servers that close keep-alive
// connections idle for idle (0: fasthttp's default, never).
func fakeClusterIdle(t testing.TB, n, replicas int, idle time.Duration) ([]*fakeNode, *ring.Assignment) {
	t.Helper()
	var nodes []ring.Node
	var lns []net.Listener
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		nodes = append(nodes, ring.Node{Name: fmt.Sprintf("n%d", i), URL: "http://" + ln.Addr().String()})
	}
	a, err := ring.Assign(ring.Names(nodes), replicas, ring.DefaultSlots, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(ring.Describe(1, nodes, a))
	cluster := &atomic.Pointer[[]byte]{}
	cluster.Store(&body)
	var fakes []*fakeNode
	for i, ln := range lns {
		f := &fakeNode{name: nodes[i].Name, url: nodes[i].URL, price: int64(i + 1), cluster: cluster}
		f.version.Store(1)
		f.srv = &fasthttp.Server{IdleTimeout: idle, Handler: func(ctx *fasthttp.RequestCtx) {
			// Allocation-free, so that BenchmarkGet counts the client's.
			path := ctx.Path()
			if string(path) == "/cluster" {
				ctx.SetContentType("application/json")
				ctx.SetBody(*cluster.Load())
				return
			}
			batch := string(path) == lookup.BatchPath
			id, ok := bytes.CutPrefix(path, []byte(lookup.PathPrefix))
			if !ok && !batch {
				ctx.SetStatusCode(404)
				return
			}
			k := f.gets.Add(1)
			d := time.Duration(f.delay.Load())
			if e := f.stallEvery.Load(); e > 0 && k%e == 0 {
				d = time.Duration(f.stall.Load())
			}
			if d > 0 {
				time.Sleep(d)
			}
			var buf [128]byte
			ctx.Response.Header.SetBytesV(lookup.VersionHeader, strconv.AppendUint(buf[:0], f.version.Load(), 10))
			if s := f.status.Load(); s != 0 {
				ctx.SetStatusCode(int(s))
				ctx.SetBodyString(`{"error":"fake"}`)
				return
			}
			if batch {
				f.answerBatch(ctx)
				return
			}
			pid, err := promotion.ParseID(id)
			if err != nil {
				ctx.SetStatusCode(400)
				return
			}
			ctx.SetContentType("application/json")
			r := promotion.Record{ID: pid, PriceMicros: f.price * 1_000_000, Expires: 1_533_353_551}
			ctx.SetBody(promotion.AppendJSON(buf[:0], &r))
		}}
		go f.srv.Serve(ln)
		t.Cleanup(func() { f.srv.Shutdown() })
		fakes = append(fakes, f)
	}
	return fakes, a
}

// answerBatch answers a POST /promotions/batch: every id found, priced
// as the node prices.
func (f *fakeNode) answerBatch(ctx *fasthttp.RequestCtx) {
	ids, berr := lookup.ParseBatch(ctx.PostBody(), nil)
	if berr != nil {
		ctx.SetStatusCode(400)
		return
	}
	b := append([]byte(`{"version":`), strconv.FormatUint(f.version.Load(), 10)...)
	b = append(b, `,"promotions":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		r := promotion.Record{ID: id, PriceMicros: f.price * 1_000_000, Expires: 1_533_353_551}
		b = promotion.AppendJSON(b, &r)
	}
	b = append(b, `],"missing":[]}`...)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

func mustNew(t testing.TB, cfg Config) *Client {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// idsLedBy returns n random ids whose slot's primary is node k.
func idsLedBy(a *ring.Assignment, k, n int, seed byte) []string {
	var ids []string
	for i := 0; len(ids) < n; i++ {
		id := promotion.ID{seed, byte(i), byte(i >> 8), byte(i >> 16), 0x11}
		if int(a.OwnersOf(id)[0]) == k {
			ids = append(ids, id.String())
		}
	}
	return ids
}

// setRing makes the fake cluster describe the ring of members (indexes of
// fakes) at ring version v.
func setRing(t *testing.T, fakes []*fakeNode, v uint64, replicas int, members ...int) *ring.Assignment {
	t.Helper()
	var nodes []ring.Node
	for _, k := range members {
		nodes = append(nodes, ring.Node{Name: fakes[k].name, URL: fakes[k].url})
	}
	a, err := ring.Assign(ring.Names(nodes), replicas, ring.DefaultSlots, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(ring.Describe(v, nodes, a))
	fakes[0].cluster.Store(&body)
	return a
}
