package cache

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
)

func TestMain(m *testing.M) { os.Exit(localsvctest.Run(m)) }

func TestCache(t *testing.T) {
	r := localsvctest.Redis(t)
	c, err := New(Config{URL: r.URL, Cluster: "0123456789abcdef", Backoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := promotion.ID{1, 2, 3}
	if _, ok := c.Get(1, id, nil); ok {
		t.Fatal("hit in an empty cache")
	}
	mustSet(t, c, 1, id, `{"v":1}`)
	if b, ok := c.Get(1, id, []byte("x")); !ok || string(b) != `x{"v":1}` {
		t.Fatalf("Get appended %q, %v", b, ok)
	}
	if _, ok := c.Get(2, id, nil); ok {
		t.Fatal("version 2 hit an entry of version 1")
	}
	if c.hits.Get() == 0 || c.misses.Get() == 0 {
		t.Fatalf("hits %d, misses %d", c.hits.Get(), c.misses.Get())
	}
	// Redis down: misses, fast, counted as bypasses.
	r.Stop()
	start := time.Now()
	for range 100 {
		if _, ok := c.Get(1, id, nil); ok {
			t.Fatal("hit with Redis down")
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("100 lookups with Redis down took %v", d)
	}
	if c.bypasses.Get() < 100 {
		t.Fatalf("bypasses %d, want at least 100", c.bypasses.Get())
	}
}

// mustSet sets the entry of id in version to body and waits until c reads
// it. It sets again while waiting: a Redis operation slower than the
// timeout (a busy machine) makes the cache step aside and drop the set.
func mustSet(t *testing.T, c *Cache, version uint64, id promotion.ID, body string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.Set(version, id, []byte(body))
		for range 10 {
			time.Sleep(5 * time.Millisecond)
			if b, ok := c.Get(version, id, nil); ok {
				if string(b) != body {
					t.Fatalf("version %d of %s: read %s, set %s", version, id, b, body)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the set of version %d of %s never arrived", version, id)
		}
	}
}

// mustGet returns the entry of id in version, asking again while Redis is
// bypassed: a miss must come from Redis.
func mustGet(t *testing.T, c *Cache, version uint64, id promotion.ID) (string, bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		bypassed := c.bypasses.Get()
		b, ok := c.Get(version, id, nil)
		if c.bypasses.Get() == bypassed {
			return string(b), ok
		}
		if time.Now().After(deadline) {
			t.Fatal("Redis is still bypassed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClustersShareRedis: two clusters' caches on one Redis, with the same
// version number and id, each read their own entry.
func TestClustersShareRedis(t *testing.T) {
	r := localsvctest.Redis(t)
	id := promotion.ID{7}
	a, err := New(Config{URL: r.URL, Cluster: "aaaaaaaaaaaaaaaa"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(Config{URL: r.URL, Cluster: "bbbbbbbbbbbbbbbb"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	mustSet(t, a, 1, id, `{"cluster":"a"}`)
	if got, ok := mustGet(t, b, 1, id); ok {
		t.Fatalf("cluster b read cluster a's entry %s", got)
	}
	mustSet(t, b, 1, id, `{"cluster":"b"}`)
	if got, ok := mustGet(t, a, 1, id); !ok || got != `{"cluster":"a"}` {
		t.Fatalf("cluster a read %q, %v after cluster b's set", got, ok)
	}
}

func TestKey(t *testing.T) {
	c, err := New(Config{URL: "redis://127.0.0.1:1/0", Cluster: "0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := promotion.ID{0xd0, 0x18, 0xef, 0x0b}
	want := "promo:0123456789abcdef:v42:d018ef0b-0000-0000-0000-000000000000"
	if got := c.key(42, id); got != want {
		t.Fatalf("key = %q, want %q", got, want)
	}
	// The key's string is its only allocation, as before clusters.
	if a := testing.AllocsPerRun(100, func() { c.key(1<<63, id) }); a > 1 {
		t.Fatalf("key allocates %v times, want 1", a)
	}
}

func BenchmarkKey(b *testing.B) {
	c, err := New(Config{URL: "redis://127.0.0.1:1/0", Cluster: "0123456789abcdef"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	id := promotion.ID{1, 2, 3}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.key(uint64(i), id)
	}
}

func TestNewChecksConfig(t *testing.T) {
	f := func(url, cluster, wantErr string) {
		t.Helper()
		c, err := New(Config{URL: url, Cluster: cluster})
		if err == nil || !strings.HasPrefix(err.Error(), wantErr) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("New(%q, %q) = %v; want an error starting %q", url, cluster, err, wantErr)
		}
	}
	f("http://nope", "c1", "cache: invalid Redis URL")
	f("redis://127.0.0.1:1/0", "", "cache: Cluster is required")
	f("redis://127.0.0.1:1/0", "a:b", "cache: Cluster must be at most 64 bytes without ':'")
	f("redis://127.0.0.1:1/0", strings.Repeat("a", 65), "cache: Cluster must be at most 64 bytes without ':'")
}

func TestForMode(t *testing.T) {
	if build, err := ForMode(ModeOff, DefaultConfig("")); build != nil || err != nil {
		t.Fatalf("ForMode(off) = %p, %v; want no cache", build, err)
	}
	f := func(mode, url, wantErr string) {
		t.Helper()
		build, err := ForMode(mode, DefaultConfig(url))
		if err == nil || !strings.HasPrefix(err.Error(), wantErr) || build != nil {
			t.Fatalf("ForMode(%q, %q) = %p, %v; want an error starting %q", mode, url, build, err, wantErr)
		}
	}
	f("memcached", "", `cache: mode must be "off" or "redis", got "memcached"`)
	f(ModeRedis, "", `cache: mode "redis" needs URL`)
	f(ModeRedis, "http://nope", "cache: invalid Redis URL")
	// New does not connect: a Redis that is not there yet only makes
	// lookups miss.
	build, err := ForMode(ModeRedis, DefaultConfig("redis://127.0.0.1:1/0"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := build(""); err == nil || !strings.HasPrefix(err.Error(), "cache: Cluster is required") {
		t.Fatalf("a cache built without a cluster: %v", err)
	}
	c, err := build("0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	cc, ok := c.(*Cache)
	if !ok {
		t.Fatalf("ForMode(redis) built %T, want *Cache", c)
	}
	defer cc.Close()
	if cc.cfg.Cluster != "0123456789abcdef" {
		t.Fatalf("ForMode(redis) built a cache of cluster %q", cc.cfg.Cluster)
	}
}
