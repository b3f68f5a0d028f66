package client

import (
	"context"
	"testing"
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
