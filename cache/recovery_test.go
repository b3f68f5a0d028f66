package cache

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
)

// After Redis failed, the cache stays out of the way for Backoff (lookups
// are bypassed without asking Redis), then uses Redis again once it is
// back: sets land and reads hit.
func TestRedisComesBackAfterTheBypassWindow(t *testing.T) {
	r := localsvctest.Redis(t)
	const backoff = 300 * time.Millisecond
	c, err := New(Config{URL: r.URL, Cluster: "0123456789abcdef", Backoff: backoff})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := promotion.ID{9, 9}
	mustSet(t, c, 1, id, `{"v":1}`)

	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	// The first Get finds Redis down and opens the window.
	failedAt := time.Now()
	if _, ok := c.Get(1, id, nil); ok {
		t.Fatal("hit with Redis down")
	}
	if c.bypasses.Get() != 1 || !c.down() {
		t.Fatalf("bypasses %d, down %v after Redis failed, want 1 and true", c.bypasses.Get(), c.down())
	}
	if err := r.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Within the window Redis is not asked, though it is back: a set is
	// not even queued, and a read is a bypass.
	c.Set(1, id, []byte(`{"v":"in the window"}`))
	misses := c.misses.Get()
	for c.down() {
		bypassed := c.bypasses.Get()
		if _, ok := c.Get(1, id, nil); ok {
			t.Fatal("hit within the bypass window")
		}
		if c.down() && c.bypasses.Get() != bypassed+1 {
			t.Fatal("a read within the bypass window was not counted as a bypass")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if waited := time.Since(failedAt); waited < backoff*3/4 {
		t.Fatalf("the bypass window ended after %v, want about Backoff (%v)", waited, backoff)
	}
	if c.misses.Get() != misses {
		t.Fatal("Redis was asked within the bypass window")
	}
	// The restarted Redis is empty: a miss from Redis, then the cache
	// works again.
	if got, ok := mustGet(t, c, 1, id); ok {
		t.Fatalf("read %s from a Redis restarted empty", got)
	}
	mustSet(t, c, 1, id, `{"v":2}`)
	hits := c.hits.Get()
	if b, ok := c.Get(1, id, nil); !ok || string(b) != `{"v":2}` || c.hits.Get() != hits+1 {
		t.Fatalf("read %q, %v once Redis is back", b, ok)
	}
}

// Sets that find the background queue full are dropped, not waited for,
// and counted in promo_cache_set_drops_total.
func TestDroppedSetsAreCounted(t *testing.T) {
	r := localsvctest.Redis(t)
	set := metrics.NewSet()
	c, err := New(Config{URL: r.URL, Cluster: "0123456789abcdef", Metrics: set, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mustSet(t, c, 1, promotion.ID{1}, `{}`) // connected
	// A frozen Redis holds the writer on its first set for 5 x Timeout:
	// the queue (4096) fills and the rest are dropped.
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	defer r.Resume()
	const sets = 6000
	for i := range sets {
		c.Set(2, promotion.ID{byte(i >> 8), byte(i)}, []byte(`{}`))
	}
	drops := int(c.setDrops.Get())
	if drops < sets-cap(c.sets)-2 || drops > sets-cap(c.sets) {
		t.Fatalf("%d sets dropped, want about %d (%d sets, a queue of %d, one or two taken by the writer)",
			drops, sets-cap(c.sets), sets, cap(c.sets))
	}
	var out strings.Builder
	set.WritePrometheus(&out)
	if !strings.Contains(out.String(), "promo_cache_set_drops_total ") {
		t.Fatalf("promo_cache_set_drops_total is not in the metrics:\n%s", out.String())
	}
}
