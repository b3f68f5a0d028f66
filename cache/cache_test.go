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
	c, err := New(Config{URL: r.URL, Backoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := promotion.ID{1, 2, 3}
	if _, ok := c.Get(1, id, nil); ok {
		t.Fatal("hit in an empty cache")
	}
	c.Set(1, id, []byte(`{"v":1}`))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, ok := c.Get(1, id, []byte("x")); ok {
			if string(b) != `x{"v":1}` {
				t.Fatalf("Get appended %q", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the set never arrived")
		}
		time.Sleep(5 * time.Millisecond)
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

func TestInvalidURL(t *testing.T) {
	if _, err := New(Config{URL: "http://nope"}); err == nil {
		t.Fatal("no error for a non-redis URL")
	}
}

func TestForMode(t *testing.T) {
	if c, err := ForMode(ModeOff, DefaultConfig("")); c != nil || err != nil {
		t.Fatalf("ForMode(off) = %v, %v; want a nil lookup.Cache", c, err)
	}
	f := func(mode, url, wantErr string) {
		t.Helper()
		c, err := ForMode(mode, DefaultConfig(url))
		if err == nil || !strings.HasPrefix(err.Error(), wantErr) || c != nil {
			t.Fatalf("ForMode(%q, %q) = %v, %v; want an error starting %q", mode, url, c, err, wantErr)
		}
	}
	f("memcached", "", `cache: mode must be "off" or "redis", got "memcached"`)
	f(ModeRedis, "", `cache: mode "redis" needs URL`)
	f(ModeRedis, "http://nope", "cache: invalid Redis URL")
	// New does not connect: a Redis that is not there yet only makes
	// lookups miss.
	c, err := ForMode(ModeRedis, DefaultConfig("redis://127.0.0.1:1/0"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*Cache); !ok {
		t.Fatalf("ForMode(redis) = %T, want *Cache", c)
	}
	c.(*Cache).Close()
}
