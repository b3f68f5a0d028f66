package client

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/promotion-service/promo/hedge"
)

// Config configures a Client. Zero fields take the values of
// DefaultConfig, so Config{Seeds: ...} is a working configuration.
type Config struct {
	// Seeds are base URLs (http://host:port) of read nodes, the proxy or
	// a standalone server, asked for GET /cluster. At least one.
	Seeds []string
	// RefreshInterval is the period of GET /cluster (default 10s); a 421
	// refreshes at once, at most every 100ms.
	RefreshInterval time.Duration
	// TryTimeout bounds one request to one node (default 250ms), and
	// BatchTryTimeout one batch request of up to 1,000 ids (default 1s).
	TryTimeout      time.Duration
	BatchTryTimeout time.Duration
	// Retries is how many more rounds over a slot's replicas a lookup
	// makes, after 20ms and then doubling, when none answered (default 2).
	Retries int
	// CatchUpWait bounds how long a lookup waits for a replica to reach
	// the newest dataset version the client has returned (default 1s).
	CatchUpWait time.Duration
	// FailuresToDown is how many failed requests in a row make a node
	// asked last, for DownFor (defaults 3 and 1s).
	FailuresToDown int
	DownFor        time.Duration
	// MaxConnsPerNode bounds the keep-alive connections to one node for
	// single lookups, and apart those for batches (default 512 each).
	MaxConnsPerNode int
	// Hedge configures hedged requests (package hedge's defaults: after the
	// p95 of recent latencies, 1ms to 100ms, at most 10% extra requests).
	Hedge hedge.Config
	// Dial, if set, opens the connections to nodes, given host:port (tests
	// and benchmarks: a network made slow or faulty); default TCP.
	Dial func(addr string) (net.Conn, error)
	// Metrics receives the client's metrics (promo_client_*); nil keeps
	// them private (see Stats).
	Metrics *metrics.Set
	// Logger receives ring changes and failures (default slog.Default()).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults described on Config, without seeds.
func DefaultConfig() Config {
	return Config{RefreshInterval: 10 * time.Second, TryTimeout: 250 * time.Millisecond, BatchTryTimeout: time.Second, Retries: 2,
		CatchUpWait: time.Second, FailuresToDown: 3, DownFor: time.Second, MaxConnsPerNode: 512,
		Hedge: hedge.DefaultConfig()}
}

// withDefaults fills the zero fields of c.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.RefreshInterval == 0 {
		c.RefreshInterval = d.RefreshInterval
	}
	if c.TryTimeout == 0 {
		c.TryTimeout = d.TryTimeout
	}
	if c.BatchTryTimeout == 0 {
		c.BatchTryTimeout = d.BatchTryTimeout
	}
	if c.Retries == 0 {
		c.Retries = d.Retries
	}
	if c.CatchUpWait == 0 {
		c.CatchUpWait = d.CatchUpWait
	}
	if c.FailuresToDown == 0 {
		c.FailuresToDown = d.FailuresToDown
	}
	if c.DownFor == 0 {
		c.DownFor = d.DownFor
	}
	if c.MaxConnsPerNode == 0 {
		c.MaxConnsPerNode = d.MaxConnsPerNode
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field of c.
func (c *Config) Validate() error {
	if len(c.Seeds) == 0 {
		return errors.New("client: Seeds is required: base URLs of read nodes, the proxy or a standalone server")
	}
	for _, s := range c.Seeds {
		if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("client: seed %q is not an http(s) URL such as http://127.0.0.1:8090", s)
		}
	}
	switch {
	case c.RefreshInterval <= 0 || c.TryTimeout <= 0 || c.BatchTryTimeout <= 0 || c.DownFor <= 0:
		return errors.New("client: RefreshInterval, TryTimeout, BatchTryTimeout and DownFor must be positive")
	case c.Retries < 0 || c.CatchUpWait < 0:
		return errors.New("client: Retries and CatchUpWait must not be negative")
	case c.FailuresToDown < 1 || c.MaxConnsPerNode < 1:
		return errors.New("client: FailuresToDown and MaxConnsPerNode must be positive")
	}
	return nil
}
