package client

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkGet looks ids up on a fake cluster of 3 nodes over loopback:
// the client's cost per lookup (allocations, routing, hedging state) on
// top of the HTTP round trip.
func BenchmarkGet(b *testing.B) {
	fakes, a := fakeCluster(b, 3, 2)
	c := mustNew(b, Config{Seeds: []string{fakes[0].url}})
	ids := idsLedBy(a, 1, 64, 11)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := c.Get(ctx, ids[i%len(ids)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkDirect is BenchmarkGet's baseline: a fasthttp client asking the
// owning fake node itself, with the same ids.
func BenchmarkDirect(b *testing.B) {
	fakes, a := fakeCluster(b, 3, 2)
	ids := idsLedBy(a, 1, 64, 11)
	hc := &fasthttp.HostClient{Addr: strings.TrimPrefix(fakes[1].url, "http://"), MaxConns: 512}
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		i := 0
		for pb.Next() {
			req.SetRequestURI(fakes[1].url + "/promotions/" + ids[i%len(ids)])
			if err := hc.DoTimeout(req, resp, time.Second); err != nil || resp.StatusCode() != 200 {
				b.Errorf("%v %d", err, resp.StatusCode())
				return
			}
			i++
		}
	})
}
