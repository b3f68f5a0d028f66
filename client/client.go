package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/hedge"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// ErrNotFound is returned by Get for an id the serving dataset does not
// hold.
var ErrNotFound = errors.New("client: promotion not found")

// ErrBadID is returned for an id that is not a 36-character UUID, before
// any request is sent (or when a server answers 400).
var ErrBadID = errors.New("client: malformed promotion id: want a 36-character UUID such as d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("client: closed")

// Promotion is one promotion as the service answers it.
type Promotion struct {
	// ID is the promotion's id, in lower case.
	ID string
	// Price is the price rounded half-up to two decimals, as served.
	Price float64
	// ExpirationDate is the expiration time, in UTC.
	ExpirationDate time.Time
	// Version is the dataset version the answer came from.
	Version uint64
}

// node is one server the client talks to.
type node struct {
	name, base string
	host       string
	hc         *fasthttp.HostClient // batches
	conns      *conns               // single lookups (conns.go)
	fails      atomic.Int32
	downUntil  atomic.Int64 // unix ns: asked last until then
	latency    atomic.Int64 // moving average of answers, ns
	probes     atomic.Uint32
}

// routes is what requests are routed by: the ring (nil against a
// standalone server, where nodes holds the seed alone) and its nodes,
// indexed like ring.Nodes().
type routes struct {
	version uint64
	ring    *ring.Assignment
	nodes   []*node
}

// standaloneOwners routes every id to the one node.
var standaloneOwners = []uint16{0}

func (r *routes) owners(id promotion.ID) []uint16 {
	if r.ring == nil {
		return standaloneOwners
	}
	return r.ring.OwnersOf(id)
}

// Client looks promotions up. It is safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	routes atomic.Pointer[routes]
	floor  floor
	hedge  *hedge.Policy
	bhedge *hedge.Policy    // batches: their latencies are not single lookups'
	meta   *fasthttp.Client // GET /cluster

	mu    sync.Mutex
	nodes map[string]*node // by name and URL, kept across refreshes

	calls sync.Pool // *call (get.go)
	pool  *hedge.Pool

	kick    chan struct{}
	closed  chan struct{}
	closing sync.Once
	wg      sync.WaitGroup

	requests, failovers, behind, refreshes, refreshErrors *metrics.Counter
}

// New learns the ring from the first seed that answers GET /cluster (or
// 404: a standalone server) and returns a client that follows it until
// Close.
func New(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	set := cfg.Metrics
	if set == nil {
		set = metrics.NewSet()
	}
	h, err := hedge.New(cfg.Hedge, set, "promo_client")
	if err != nil {
		return nil, err
	}
	bh, err := hedge.New(cfg.Hedge, set, "promo_client_batch")
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: cfg.Logger.With("component", "client"), hedge: h, bhedge: bh,
		meta:  &fasthttp.Client{NoDefaultUserAgentHeader: true, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, MaxResponseBodySize: 64 << 20},
		nodes: map[string]*node{}, pool: hedge.NewPool(), kick: make(chan struct{}, 1), closed: make(chan struct{})}
	c.requests = set.NewCounter("promo_client_requests_total")
	c.failovers = set.NewCounter("promo_client_failovers_total")
	c.behind = set.NewCounter("promo_client_behind_answers_total")
	c.refreshes = set.NewCounter("promo_client_ring_refreshes_total")
	c.refreshErrors = set.NewCounter("promo_client_ring_refresh_errors_total")
	set.NewGauge("promo_client_ring_version", func() float64 { return float64(c.routes.Load().version) })
	if err := c.refresh(ctx); err != nil {
		return nil, err
	}
	c.wg.Add(1)
	go c.follow()
	return c, nil
}

// Close stops following the ring and closes the idle connections. Calls
// in flight finish within TryTimeout.
func (c *Client) Close() error {
	c.closing.Do(func() {
		close(c.closed)
		c.pool.Close()
	})
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		n.hc.CloseIdleConnections()
		n.conns.close()
	}
	return nil
}

// Stats are counts of what a Client did.
type Stats struct {
	// Requests are the lookups asked of the client (a batch counts one).
	Requests uint64
	// Failovers are requests sent to another replica after a failure.
	Failovers uint64
	// Behind are answers passed over for coming from an older version.
	Behind uint64
	// Hedge holds the hedged requests and their budget, and BatchHedge
	// those of BatchGet (a request per node of a batch), which has its own
	// delay and budget.
	Hedge, BatchHedge hedge.Stats
	// RingVersion is the ring_version routed by (0: a standalone server).
	RingVersion uint64
	// Nodes are the servers routed to.
	Nodes int
}

// Stats returns the counts so far.
func (c *Client) Stats() Stats {
	r := c.routes.Load()
	return Stats{Requests: c.requests.Get(), Failovers: c.failovers.Get(), Behind: c.behind.Get(),
		Hedge: c.hedge.Stats(), BatchHedge: c.bhedge.Stats(), RingVersion: r.version, Nodes: len(r.nodes)}
}

// follow refreshes the ring every RefreshInterval and when kicked (a 421),
// at most every 100ms.
func (c *Client) follow() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-t.C:
		case <-c.kick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.refresh(ctx); err != nil {
			c.log.Warn("cannot refresh the ring; routing by the last one", "err", err)
		}
		cancel()
		select {
		case <-c.closed:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stale asks for a refresh of the ring, without waiting for it.
func (c *Client) stale() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// refresh asks the seeds, then the nodes routed to, for GET /cluster and
// routes by the first answer not older than the ring in use.
func (c *Client) refresh(ctx context.Context) error {
	var errs []error
	cur := c.routes.Load()
	bases := append([]string(nil), c.cfg.Seeds...)
	if cur != nil {
		for _, n := range cur.nodes {
			bases = append(bases, n.base)
		}
	}
	for i, base := range bases {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		r, err := c.fetch(ctx, base, i < len(c.cfg.Seeds))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if cur != nil && r.version < cur.version {
			errs = append(errs, fmt.Errorf("%s describes ring version %d, older than %d", base, r.version, cur.version))
			continue
		}
		c.refreshes.Inc()
		switch {
		case cur == nil:
			c.log.Debug("routing by the ring", "ring_version", r.version, "nodes", len(r.nodes), "standalone", r.ring == nil)
		case r.version != cur.version || len(r.nodes) != len(cur.nodes):
			c.log.Info("the ring changed", "ring_version", r.version, "was", cur.version, "nodes", len(r.nodes))
		}
		c.routes.Store(r)
		return nil
	}
	c.refreshErrors.Inc()
	return fmt.Errorf("client: no seed described the cluster: %w", errors.Join(errs...))
}

// fetch reads GET /cluster of base. A seed answering 404 is a standalone
// server, which serves every id itself.
func (c *Client) fetch(ctx context.Context, base string, seed bool) (*routes, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(strings.TrimSuffix(base, "/") + "/cluster")
	timeout := 2 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if err := c.meta.DoTimeout(req, resp, timeout); err != nil {
		return nil, fmt.Errorf("GET %s/cluster: %w", base, err)
	}
	switch resp.StatusCode() {
	case fasthttp.StatusOK:
	case fasthttp.StatusNotFound:
		if !seed {
			return nil, fmt.Errorf("GET %s/cluster: 404 from a cluster node", base)
		}
		return &routes{nodes: []*node{c.node("standalone", base)}}, nil
	default:
		return nil, fmt.Errorf("GET %s/cluster: status %d: %.200s", base, resp.StatusCode(), resp.Body())
	}
	var cl ring.Cluster
	if err := json.Unmarshal(resp.Body(), &cl); err != nil {
		return nil, fmt.Errorf("GET %s/cluster: %w", base, err)
	}
	a, urls, err := cl.Ring()
	if err != nil {
		return nil, fmt.Errorf("GET %s/cluster: %w", base, err)
	}
	r := &routes{version: cl.RingVersion, ring: a}
	for _, name := range a.Nodes() {
		r.nodes = append(r.nodes, c.node(name, urls[name]))
	}
	return r, nil
}

// node returns the node of name at base, with its pooled connections,
// creating it the first time.
func (c *Client) node(name, base string) *node {
	base = strings.TrimSuffix(base, "/")
	c.mu.Lock()
	defer c.mu.Unlock()
	key := name + " " + base
	if n, ok := c.nodes[key]; ok {
		return n
	}
	u, _ := url.Parse(base) // checked by Validate or ring.Cluster.Ring
	n := &node{name: name, base: base, host: u.Host, hc: &fasthttp.HostClient{
		Addr:                          hostPort(u),
		IsTLS:                         u.Scheme == "https",
		MaxConns:                      c.cfg.MaxConnsPerNode,
		MaxIdleConnDuration:           time.Minute,
		ReadTimeout:                   max(c.cfg.TryTimeout, c.cfg.BatchTryTimeout), // each request has its own, shorter or not
		WriteTimeout:                  max(c.cfg.TryTimeout, c.cfg.BatchTryTimeout),
		MaxConnWaitTimeout:            c.cfg.TryTimeout,
		MaxIdemponentCallAttempts:     1, // the client fails over itself, within its budget
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		Dial:                          c.cfg.Dial,
	}, conns: newConns(hostPort(u), u.Scheme == "https", u.Hostname(), c.cfg.MaxConnsPerNode, c.cfg.Dial)}
	c.nodes[key] = n
	return n
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return u.Host + ":443"
	}
	return u.Host + ":80"
}

// ok records an answer of n that took d.
func (c *Client) ok(n *node, d time.Duration) {
	if n.fails.Load() != 0 {
		n.fails.Store(0)
	}
	n.downUntil.Store(0)
	old := n.latency.Load()
	if old == 0 {
		n.latency.Store(int64(d))
	} else {
		n.latency.Store(old + (int64(d)-old)/8)
	}
}

// late records that a request to n has been out for d without an answer:
// its latency is at least d.
func (c *Client) late(n *node, d time.Duration) {
	if old := n.latency.Load(); old < int64(d) {
		n.latency.Store(old + (int64(d)-old)/2)
	}
}

// failed records a failed request to n, which is asked last for DownFor
// after FailuresToDown in a row.
func (c *Client) failed(n *node) {
	if n.fails.Add(1) >= int32(c.cfg.FailuresToDown) && n.downUntil.Load() == 0 {
		n.downUntil.Store(time.Now().Add(c.cfg.DownFor).UnixNano())
		n.hc.CloseIdleConnections()
		n.conns.closeIdle()
		c.log.Warn("node failing; asked last for a while", "node", n.name, "url", n.base, "for", c.cfg.DownFor)
	}
}

// A node whose moving average latency is above slowFactor times that of
// another replica of its slot plus slowMargin loses its turn as the first
// one asked (the margin keeps the noise of sub-millisecond latencies, a
// new connection, a pause, from moving traffic around).
const (
	slowFactor = 4
	slowMargin = int64(5 * time.Millisecond)
)

// probeEvery: a replica passed over as slow is still asked first for one
// request in probeEvery, so that its latency is measured again (and when
// it is still slow, the probe is hedged). With one of three nodes slow,
// probes are a quarter of a percent of the lookups: below the p99.
const probeEvery = 128

// next returns the index in owners of the replica to ask next, among those
// not in asked: one that is up and not much slower than another replica,
// else one that is up, else any; -1 when all were asked.
func (c *Client) next(r *routes, owners []uint16, asked uint64, now int64) int {
	// The fastest replica that is up and not asked yet; one not measured
	// yet counts as fast, so that it gets measured.
	fastest := int64(-1)
	for j, o := range owners {
		if n := r.nodes[o]; asked&(1<<j) == 0 && n.downUntil.Load() <= now {
			if l := n.latency.Load(); fastest < 0 || l < fastest {
				fastest = l
			}
		}
	}
	for pass := range 3 {
		for j, o := range owners {
			if asked&(1<<j) != 0 || j >= 64 {
				continue
			}
			n := r.nodes[o]
			up := n.downUntil.Load() <= now
			switch pass {
			case 0:
				if !up || (fastest >= 0 && n.latency.Load() > slowFactor*fastest+slowMargin && n.probes.Add(1)%probeEvery != 0) {
					continue
				}
			case 1:
				if !up {
					continue
				}
			}
			return j
		}
	}
	return -1
}

// retry paces the rounds of one lookup over the replicas, like the
// proxy's.
type retry struct {
	cfg      *Config
	deadline time.Time
	rounds   int
	pause    time.Duration
}

// outcome is how one round over a slot's replicas ended.
type outcome int

const (
	answered  outcome = iota
	behindAll         // replicas are on an older version: wait for them
	failedAll         // no replica answered usefully
)

// next returns how long to pause before another round after one that
// ended in o, or 0 to give up.
func (r *retry) next(o outcome) time.Duration {
	switch o {
	case behindAll:
		if r.deadline.IsZero() {
			r.deadline = time.Now().Add(r.cfg.CatchUpWait)
		}
		r.pause = min(max(2*r.pause, 10*time.Millisecond), 200*time.Millisecond)
		if time.Now().Add(r.pause).After(r.deadline) {
			r.pause = 0
		}
	default:
		if r.rounds++; r.rounds <= r.cfg.Retries {
			r.pause = min(max(2*r.pause, 20*time.Millisecond), 200*time.Millisecond)
		} else {
			r.pause = 0
		}
	}
	return r.pause
}

// sleep waits d, or until ctx is done or the client closed.
func (c *Client) sleep(ctx context.Context, t *time.Timer, d time.Duration) error {
	t.Reset(d)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	case <-c.closed:
		t.Stop()
		return ErrClosed
	}
}
