// Package cache is the Redis read-through cache of read nodes: lookup
// answers keyed by cluster, dataset version and id
// (promo:<cluster>:v<N>:<id>), with a TTL, read with short timeouts. The
// cluster id in every key keeps apart clusters that share a Redis, and a
// cluster from its own entries of before a database reset, whose version
// numbers start again at 1. When Redis is slow or down the cache steps aside for a moment
// (every lookup is then a miss, answered from the store) and counts the
// bypass; it never fails a lookup. It implements lookup.Cache, and is built
// where a read node is wired and handed to it.
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/go-redis/v9"

	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
)

// Modes of a read node's lookup cache, as its --cache flag names them.
const (
	// ModeOff is no cache, the default: a Pebble Get answers faster than a
	// Redis round trip.
	ModeOff = "off"
	// ModeRedis reads through Redis.
	ModeRedis = "redis"
)

// ForMode returns how a read node that runs in mode builds its lookup
// cache once it knows its cluster's id: nil for ModeOff, and for ModeRedis
// a function that calls New with cfg and that id as Cluster, and returns
// no nil *Cache in a non-nil lookup.Cache. It checks mode and cfg.URL at
// once, so that a bad flag fails before anything starts.
func ForMode(mode string, cfg Config) (func(cluster string) (lookup.Cache, error), error) {
	switch {
	case mode != ModeOff && mode != ModeRedis:
		return nil, fmt.Errorf("cache: mode must be %q or %q, got %q", ModeOff, ModeRedis, mode)
	case mode == ModeRedis && cfg.URL == "":
		return nil, fmt.Errorf("cache: mode %q needs URL", ModeRedis)
	case mode == ModeOff:
		return nil, nil
	}
	if _, err := redis.ParseURL(cfg.URL); err != nil {
		return nil, errors.New("cache: invalid Redis URL: " + err.Error())
	}
	return func(cluster string) (lookup.Cache, error) {
		cfg.Cluster = cluster
		c, err := New(cfg)
		if err != nil {
			return nil, err
		}
		return c, nil
	}, nil
}

// Config configures a Cache.
type Config struct {
	// URL is the Redis URL, redis://host:port/db (required).
	URL string
	// Cluster is the id of the cluster whose answers the cache holds
	// (required; a read node takes it from pgstore.Store.ClusterID): at
	// most MaxClusterLen bytes, without ':'.
	Cluster string
	// TTL of entries (default 1h).
	TTL time.Duration
	// Timeout bounds each Redis operation (default 20ms).
	Timeout time.Duration
	// Backoff is how long the cache stays out of the way after Redis
	// failed (default 1s).
	Backoff time.Duration
	// Logger receives failures (default slog.Default()).
	Logger *slog.Logger
	// Metrics receives promo_cache_* counters (default a new set).
	Metrics *metrics.Set
}

// DefaultConfig returns the defaults of a Cache on the Redis at url.
func DefaultConfig(url string) Config {
	return Config{URL: url, TTL: time.Hour, Timeout: 20 * time.Millisecond, Backoff: time.Second}
}

// MaxClusterLen is the longest Config.Cluster, so that a key is built in
// a buffer on the stack.
const MaxClusterLen = 64

// maxKeyLen bounds a key: "promo:", the cluster, ":v", a version, ':' and
// an id.
const maxKeyLen = len("promo:") + MaxClusterLen + len(":v") + 20 + 1 + 36

// Cache is a Redis read-through cache. It is safe for concurrent use.
type Cache struct {
	cfg      Config
	prefix   string // "promo:<cluster>:v"
	rdb      *redis.Client
	log      *slog.Logger
	downTill atomic.Int64 // UnixNano until which Redis is bypassed
	sets     chan entry
	done     chan struct{}

	hits, misses, bypasses, setDrops *metrics.Counter
}

var _ lookup.Cache = (*Cache)(nil)

type entry struct {
	key  string
	body []byte
}

// New returns a cache on the Redis at cfg.URL. It does not connect: a
// Redis that is down only makes lookups miss.
func New(cfg Config) (*Cache, error) {
	switch {
	case cfg.Cluster == "":
		return nil, errors.New("cache: Cluster is required: keys without it mix the entries of clusters sharing a Redis")
	case len(cfg.Cluster) > MaxClusterLen || strings.Contains(cfg.Cluster, ":"):
		return nil, fmt.Errorf("cache: Cluster must be at most %d bytes without ':', got %q", MaxClusterLen, cfg.Cluster)
	}
	if cfg.TTL == 0 {
		cfg.TTL = time.Hour
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 20 * time.Millisecond
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	opt, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, errors.New("cache: invalid Redis URL: " + err.Error())
	}
	opt.DialTimeout = 5 * cfg.Timeout
	opt.ReadTimeout = cfg.Timeout
	opt.WriteTimeout = cfg.Timeout
	opt.PoolTimeout = cfg.Timeout
	opt.MaxRetries = -1 // no retries: a slow Redis is bypassed, not waited for
	opt.ContextTimeoutEnabled = true
	c := &Cache{cfg: cfg, prefix: "promo:" + cfg.Cluster + ":v", rdb: redis.NewClient(opt),
		log:  cfg.Logger.With("component", "cache", "cluster", cfg.Cluster),
		sets: make(chan entry, 4096), done: make(chan struct{})}
	m := cfg.Metrics
	c.hits = m.NewCounter("promo_cache_hits_total")
	c.misses = m.NewCounter("promo_cache_misses_total")
	c.bypasses = m.NewCounter("promo_cache_bypasses_total")
	c.setDrops = m.NewCounter("promo_cache_set_drops_total")
	go c.writer()
	return c, nil
}

// key returns the Redis key of id in version, promo:<cluster>:v<N>:<id>.
// It allocates the string only: the bytes are built on the stack.
func (c *Cache) key(version uint64, id promotion.ID) string {
	var buf [maxKeyLen]byte
	b := append(buf[:0], c.prefix...)
	b = strconv.AppendUint(b, version, 10)
	b = append(b, ':')
	return string(id.AppendText(b))
}

// down reports whether Redis is being bypassed.
func (c *Cache) down() bool { return time.Now().UnixNano() < c.downTill.Load() }

func (c *Cache) fail(err error) {
	c.downTill.Store(time.Now().Add(c.cfg.Backoff).UnixNano())
	c.log.Debug("redis unavailable; bypassing the cache", "err", err, "for", c.cfg.Backoff)
}

// Get implements lookup.Cache.
func (c *Cache) Get(version uint64, id promotion.ID, dst []byte) ([]byte, bool) {
	if c.down() {
		c.bypasses.Inc()
		return dst, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	b, err := c.rdb.Get(ctx, c.key(version, id)).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		c.misses.Inc()
		return dst, false
	case err != nil:
		c.bypasses.Inc()
		c.fail(err)
		return dst, false
	}
	c.hits.Inc()
	return append(dst, b...), true
}

// Set implements lookup.Cache: the write happens in the background and
// is dropped when the queue is full or Redis is down.
func (c *Cache) Set(version uint64, id promotion.ID, body []byte) {
	if c.down() {
		return
	}
	select {
	case c.sets <- entry{key: c.key(version, id), body: body}:
	default:
		c.setDrops.Inc()
	}
}

func (c *Cache) writer() {
	defer close(c.done)
	for e := range c.sets {
		if c.down() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*c.cfg.Timeout)
		err := c.rdb.Set(ctx, e.key, e.body, c.cfg.TTL).Err()
		cancel()
		if err != nil {
			c.fail(err)
		}
	}
}

// Close stops the writer and closes the connections. Call it once nothing
// uses the cache any more: a Set after Close panics.
func (c *Cache) Close() error {
	close(c.sets)
	<-c.done
	return c.rdb.Close()
}
