package proxy

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// idLedBy returns an id whose slot's primary is the backend named name.
func idLedBy(p *Proxy, name string) string {
	for i := 0; ; i++ {
		id := promotion.ID{byte(i), byte(i >> 8), 0x42}
		if p.rt.Load().backends[p.rt.Load().ring.OwnersOf(id)[0]].name == name {
			return id.String()
		}
	}
}

// A replica that stalls one lookup in ten: the stalled ones are answered
// by the other replica within about the hedge delay, and the hedges stay
// within 10% of the lookups (plus the budget's burst of 10).
func TestHedgedLookups(t *testing.T) {
	var lookups, stalled atomic.Int64
	answer := func(from string, stall bool) func(ctx *fasthttp.RequestCtx) {
		var n atomic.Int64
		return func(ctx *fasthttp.RequestCtx) {
			if stall && n.Add(1)%10 == 0 {
				stalled.Add(1)
				time.Sleep(150 * time.Millisecond)
			}
			ctx.Response.Header.Set("X-Dataset-Version", "7")
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"from":"` + from + `"}`)
		}
	}
	p := startProxy(t, []ring.Node{{Name: "a", URL: node(t, &lookups, answer("a", true))}, {Name: "b", URL: node(t, &lookups, answer("b", false))}})
	id := idLedBy(p, "a")
	c := &fasthttp.HostClient{Addr: p.Addr()}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + p.Addr() + "/promotions/" + id)
	const n = 400
	var lat []time.Duration
	fromB := 0
	for range n {
		start := time.Now()
		if err := c.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != 200 {
			t.Fatalf("lookup: %v %d %s", err, resp.StatusCode(), resp.Body())
		}
		lat = append(lat, time.Since(start))
		if strings.Contains(string(resp.Body()), `"b"`) {
			fromB++
		}
	}
	s := p.hedge.Stats()
	slices.Sort(lat)
	t.Logf("hedge %+v; %d answers from b, %d stalls; p50 %v p99 %v", s, fromB, stalled.Load(), lat[n/2], lat[n*99/100])
	if s.Hedges > n/10+10 || s.Wins == 0 || fromB == 0 {
		t.Fatalf("%d hedges (%d won, %d answers from b) for %d lookups: want some, at most 10%% + 10", s.Hedges, s.Wins, fromB, n)
	}
	if extra := lookups.Load() - n; extra != int64(s.Hedges) {
		t.Fatalf("%d requests beyond the %d lookups, %d hedges", extra, n, s.Hedges)
	}
	// Without hedging one lookup in ten takes 150ms, so the p99 would.
	if p99 := lat[n*99/100]; p99 > 100*time.Millisecond {
		t.Fatalf("p99 %v with a replica stalling one lookup in ten", p99)
	}
	var b strings.Builder
	p.metrics.WritePrometheus(&b)
	if !strings.Contains(b.String(), fmt.Sprintf("promo_proxy_hedges_total %d", s.Hedges)) {
		t.Fatalf("promo_proxy_hedges_total missing or wrong in\n%s", b.String())
	}
}

// BenchmarkLookup routes lookups through the proxy to a fake read node on
// loopback: the proxy's cost on top of two HTTP round trips, and its
// allocations (the fake node and the load's client allocate nothing).
func BenchmarkLookup(b *testing.B) {
	var lookups atomic.Int64
	body := []byte(`{"id":"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118","price":60.68,"expiration_date":"2018-08-04T03:32:31Z"}`)
	answer := func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Dataset-Version", "7")
		ctx.SetContentType("application/json")
		ctx.SetBody(body)
	}
	p := startProxyTB(b, []ring.Node{{Name: "a", URL: nodeTB(b, &lookups, answer)}, {Name: "b", URL: nodeTB(b, &lookups, answer)}})
	c := &fasthttp.HostClient{Addr: p.Addr(), MaxConns: 64}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + p.Addr() + "/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
		for pb.Next() {
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				b.Errorf("%v %d", err, resp.StatusCode())
				return
			}
		}
	})
}
