// Package proxy is the hash-routing proxy of the cluster: it sends each
// lookup to the first healthy replica of the id's slot (the same ring as
// the read nodes), over pooled keep-alive connections, and fails over to
// the next replica on a connection error, a timeout or a 5xx, within the
// same request. Nodes are marked down by active health checks and by
// passive failures, and come back when their health check passes.
//
// The client sees the read node's answer as it was: status, body,
// Content-Type and X-Dataset-Version.
//
// A batch (POST /promotions/batch) is split by owner, the owners are asked
// in parallel, and their answers are merged into one, from one version
// (batch.go).
package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/hedge"
	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// Config configures a Proxy.
type Config struct {
	// Addr is the listen address (default 127.0.0.1:8080).
	Addr string
	// Nodes are the seeds: the proxy asks them, and then the members of
	// the ring, for GET /cluster, and follows the ring it describes. When
	// none answers at start, it routes by the ring of Nodes computed
	// locally until one does.
	Nodes []ring.Node
	// Replicas is the replication factor of that local ring (default 2).
	Replicas int
	// RefreshInterval is how often the proxy asks for GET /cluster
	// (default 2s); a 421 from a node asks at once.
	RefreshInterval time.Duration
	// Slots is the number of ring slots (default ring.DefaultSlots).
	Slots int
	// HealthInterval is the period of active health checks (default 1s).
	HealthInterval time.Duration
	// TryTimeout bounds one attempt on one replica (default 250ms).
	TryTimeout time.Duration
	// FailuresToDown is how many failed requests in a row mark a node
	// down until its health check passes (default 3).
	FailuresToDown int
	// CatchUpWait bounds how long a lookup waits for a replica on the
	// newest version the proxy has seen, during a version switch
	// (default 1s).
	CatchUpWait time.Duration
	// Retries is how many more rounds over a slot's replicas a lookup
	// makes, with a backoff from 20ms, when none answered (errors,
	// timeouts, 503 without a version); default 2.
	Retries int
	// Hedge configures hedged lookups (package hedge's defaults: a lookup
	// not answered within the p95 of recent latencies, 1ms to 100ms, also
	// goes to the next replica, at most 10% extra requests).
	Hedge hedge.Config
	// HTTP holds the server's timeouts and limits.
	HTTP httpserver.ServerConfig
	// Version is the build version, reported by /healthz.
	Version string
	// Logger receives operational messages (default slog.Default()).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of promo proxy.
func DefaultConfig() Config {
	return Config{
		Addr:            "127.0.0.1:8080",
		Replicas:        2,
		Slots:           ring.DefaultSlots,
		HealthInterval:  time.Second,
		RefreshInterval: 2 * time.Second,
		TryTimeout:      250 * time.Millisecond,
		FailuresToDown:  3,
		CatchUpWait:     time.Second,
		Retries:         2,
		Hedge:           hedge.DefaultConfig(),
		HTTP:            httpserver.DefaultServerConfig("promo-proxy"),
		Version:         "dev",
		Logger:          slog.Default(),
	}
}

// Validate reports the first invalid field of c.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("proxy: invalid Addr %q: %w", c.Addr, err)
	}
	switch {
	case len(c.Nodes) == 0:
		return errors.New("proxy: Nodes, the cluster membership, is required")
	case c.Replicas < 1 || c.Replicas > len(c.Nodes):
		return fmt.Errorf("proxy: Replicas must be between 1 and the number of nodes, %d, got %d", len(c.Nodes), c.Replicas)
	case c.Replicas > 64:
		return fmt.Errorf("proxy: Replicas must be at most 64, got %d", c.Replicas)
	case c.HealthInterval <= 0 || c.TryTimeout <= 0 || c.FailuresToDown < 1 || c.RefreshInterval <= 0:
		return errors.New("proxy: HealthInterval, RefreshInterval, TryTimeout and FailuresToDown must be positive")
	case c.Retries < 0 || c.CatchUpWait < 0:
		return errors.New("proxy: Retries and CatchUpWait must not be negative")
	}
	for _, n := range c.Nodes {
		if n.URL == "" {
			return fmt.Errorf("proxy: node %s in Nodes has no URL", n.Name)
		}
	}
	return c.HTTP.Validate()
}

// backend is one read node.
type backend struct {
	name    string
	base    string
	client  *fasthttp.HostClient
	up      atomic.Bool
	fails   atomic.Int32
	answers *metrics.Counter
	errors  *metrics.Counter
}

// routing is the ring the proxy routes by and its backends, swapped whole
// when the ring changes: lookups load it once, with no lock.
type routing struct {
	cluster  ring.Cluster
	static   bool // computed from the seeds, not learned from GET /cluster
	ring     *ring.Assignment
	backends []*backend // indexed like ring.Nodes()
	// batches holds the state of batch lookups (batch.go), built for
	// these backends.
	batches sync.Pool
}

// Proxy is a running proxy.
type Proxy struct {
	cfg       Config
	log       *slog.Logger
	rt        atomic.Pointer[routing]
	metrics   *metrics.Set
	failovers *metrics.Counter
	exhausted *metrics.Counter
	behind    *metrics.Counter
	// seen is the newest (epoch, version) in any answer: no lookup is
	// answered from an older one, so a client of this proxy never sees
	// versions go back, even while read nodes switch one after the other,
	// and follows a rollback (a higher epoch) once it has seen it.
	seen  lookup.Seen
	http  *fasthttp.Server
	ln    *httpserver.Listener
	stop  context.CancelFunc
	loops sync.WaitGroup
	// known holds every backend built, by name, so that a new ring keeps
	// the connections and health of the nodes it keeps; the refresh loop
	// alone changes it.
	known   map[string]*backend
	refresh chan struct{}
	fetch   *fasthttp.Client
	// calls holds the state of lookups, pool runs their tries and hedge
	// decides when to hedge them (hedge.go).
	calls sync.Pool
	pool  *hedge.Pool
	hedge *hedge.Policy
}

// Start learns the ring from the seeds (or computes it from them when
// none answers), checks the nodes once and serves.
func Start(ctx context.Context, cfg Config) (*Proxy, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Slots == 0 {
		cfg.Slots = ring.DefaultSlots
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = DefaultConfig().RefreshInterval
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a, err := ring.Assign(ring.Names(cfg.Nodes), cfg.Replicas, cfg.Slots, nil)
	if err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger.With("component", "proxy"), metrics: metrics.NewSet(),
		known: map[string]*backend{}, refresh: make(chan struct{}, 1),
		fetch: &fasthttp.Client{ReadTimeout: time.Second, WriteTimeout: time.Second, NoDefaultUserAgentHeader: true}}
	p.failovers = p.metrics.NewCounter("promo_proxy_failovers_total")
	p.exhausted = p.metrics.NewCounter("promo_proxy_no_replica_total")
	p.behind = p.metrics.NewCounter("promo_proxy_behind_answers_total")
	if p.hedge, err = hedge.New(cfg.Hedge, p.metrics, "promo_proxy"); err != nil {
		return nil, err
	}
	p.pool = hedge.NewPool()
	p.metrics.NewGauge("promo_proxy_slots_uncovered", func() float64 { return float64(p.rt.Load().uncovered()) })
	p.metrics.NewGauge("promo_proxy_ring_version", func() float64 { return float64(p.rt.Load().cluster.RingVersion) })
	rt, err := p.build(ring.Describe(1, cfg.Nodes, a))
	if err != nil {
		return nil, err
	}
	rt.static = true
	p.rt.Store(rt)
	p.follow()
	for _, b := range p.rt.Load().backends {
		p.check(b)
	}
	hc := cfg.HTTP
	hc.Logger = cfg.Logger
	p.http = httpserver.NewServer(hc, p.handler())
	if p.ln, err = httpserver.Listen(cfg.Addr); err != nil {
		return nil, err
	}
	cctx, stop := context.WithCancel(context.Background())
	p.stop = stop
	p.loops.Add(2)
	go func() {
		defer p.loops.Done()
		p.healthLoop(cctx)
	}()
	go func() {
		defer p.loops.Done()
		p.refreshLoop(cctx)
	}()
	p.ln.Serve(p.http)
	rt = p.rt.Load()
	p.log.Info("proxy listening", "addr", p.ln.Addr(), "ring_version", rt.cluster.RingVersion, "learned", !rt.static,
		"nodes", len(rt.backends), "replicas", rt.ring.Replicas())
	return p, nil
}

// build returns the routing of cluster c, reusing the backends of nodes
// it keeps at the same URL.
func (p *Proxy) build(c ring.Cluster) (*routing, error) {
	a, urls, err := c.Ring()
	if err != nil {
		return nil, err
	}
	if a.Slots() != p.cfg.Slots || a.Replicas() > 64 {
		return nil, fmt.Errorf("proxy: the ring has %d slots and %d replicas; the proxy routes %d slots and at most 64 replicas",
			a.Slots(), a.Replicas(), p.cfg.Slots)
	}
	rt := &routing{cluster: c, ring: a}
	for _, name := range a.Nodes() {
		if b, ok := p.known[name]; ok && b.base == urls[name] {
			rt.backends = append(rt.backends, b)
			continue
		}
		u, err := url.Parse(urls[name])
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", name, err)
		}
		b := &backend{name: name, base: urls[name], client: &fasthttp.HostClient{
			Addr:                u.Host,
			IsTLS:               u.Scheme == "https",
			MaxConns:            1024,
			MaxIdleConnDuration: time.Minute,
			ReadTimeout:         p.cfg.TryTimeout,
			WriteTimeout:        p.cfg.TryTimeout,
			MaxConnWaitTimeout:  p.cfg.TryTimeout,
			// The proxy fails over itself, within its own budget.
			MaxIdemponentCallAttempts: 1,
			NoDefaultUserAgentHeader:  true,
		}}
		b.up.Store(true)
		b.answers = p.metrics.GetOrCreateCounter(fmt.Sprintf(`promo_proxy_backend_answers_total{node=%q}`, name))
		b.errors = p.metrics.GetOrCreateCounter(fmt.Sprintf(`promo_proxy_backend_errors_total{node=%q}`, name))
		p.metrics.GetOrCreateGauge(fmt.Sprintf(`promo_proxy_backend_up{node=%q}`, name), func() float64 {
			for _, b := range p.rt.Load().backends {
				if b.name == name && b.up.Load() {
					return 1
				}
			}
			return 0
		})
		rt.backends = append(rt.backends, b)
	}
	return rt, nil
}

// install makes rt the routing of every new lookup.
func (p *Proxy) install(rt *routing) {
	for _, b := range rt.backends {
		p.known[b.name] = b
	}
	p.rt.Store(rt)
}

// follow asks the members of the current ring, then the seeds, for GET
// /cluster, and installs the first ring newer than the current one (any
// learned ring replaces the one computed from the seeds).
func (p *Proxy) follow() {
	cur := p.rt.Load()
	seen := map[string]bool{}
	var bases []string
	for _, b := range cur.backends {
		if b.up.Load() {
			bases = append(bases, b.base)
		}
	}
	for _, b := range cur.backends {
		bases = append(bases, b.base)
	}
	for _, n := range p.cfg.Nodes {
		bases = append(bases, n.URL)
	}
	for _, base := range bases {
		if seen[base] {
			continue
		}
		seen[base] = true
		c, err := p.getCluster(base)
		if err != nil {
			continue
		}
		if !cur.static && c.RingVersion <= cur.cluster.RingVersion {
			return
		}
		rt, err := p.build(c)
		if err != nil {
			p.log.Warn("ignoring a ring that does not fit", "from", base, "err", err)
			continue
		}
		p.install(rt)
		if !cur.static || rt.cluster.RingVersion != cur.cluster.RingVersion {
			p.log.Info("routing by a new ring", "ring_version", c.RingVersion, "state", c.State, "nodes", len(rt.backends), "from", base)
		}
		for _, b := range rt.backends {
			if !slices.Contains(cur.backends, b) {
				p.check(b)
			}
		}
		return
	}
}

func (p *Proxy) getCluster(base string) (ring.Cluster, error) {
	var c ring.Cluster
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(base + "/cluster")
	if err := p.fetch.DoTimeout(req, resp, time.Second); err != nil {
		return c, err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return c, fmt.Errorf("GET %s/cluster: status %d", base, resp.StatusCode())
	}
	err := json.Unmarshal(resp.Body(), &c)
	return c, err
}

// refreshLoop follows the ring every RefreshInterval, and at once when a
// node answered 421 (refreshSoon).
func (p *Proxy) refreshLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.refresh:
		}
		p.follow()
	}
}

// refreshSoon asks the refresh loop to follow the ring now.
func (p *Proxy) refreshSoon() {
	select {
	case p.refresh <- struct{}{}:
	default:
	}
}

// Addr returns the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr() }

// Wait blocks until ctx is done or the server fails.
func (p *Proxy) Wait(ctx context.Context) error { return p.ln.Wait(ctx) }

// Close stops serving, the health checks and the ring refresh, within ctx.
func (p *Proxy) Close(ctx context.Context) error {
	err := p.http.ShutdownWithContext(ctx)
	p.stop()
	p.loops.Wait()
	p.pool.Close()
	return err
}

// healthLoop checks the nodes of the current ring every HealthInterval,
// all at once.
func (p *Proxy) healthLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var wg sync.WaitGroup
		for _, b := range p.rt.Load().backends {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.check(b)
			}()
		}
		wg.Wait()
	}
}

// check marks b up when its /readyz answers 200 in time, down otherwise.
func (p *Proxy) check(b *backend) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(b.base + "/readyz")
	err := b.client.DoTimeout(req, resp, max(p.cfg.TryTimeout, time.Second))
	ok := err == nil && resp.StatusCode() == fasthttp.StatusOK
	if !ok {
		// Kept-alive connections to a node that fails its check are
		// likely dead (a killed process): each would cost a lookup one
		// failed try, and enough of them would mark the node down again
		// after it is back.
		b.client.CloseIdleConnections()
	}
	if was := b.up.Swap(ok); was != ok {
		if ok {
			p.log.Info("node is back", "node", b.name)
		} else {
			p.log.Warn("node is down", "node", b.name, "err", err, "status", resp.StatusCode())
		}
	}
	if ok {
		b.fails.Store(0)
	}
}

// failed records a failed request on b, which goes down after
// FailuresToDown in a row.
func (p *Proxy) failed(b *backend) {
	b.errors.Inc()
	if b.fails.Add(1) >= int32(p.cfg.FailuresToDown) && b.up.Swap(false) {
		b.client.CloseIdleConnections()
		p.log.Warn("node is down after failed requests", "node", b.name)
	}
}

// lookup routes one GET /promotions/{id}.
func (p *Proxy) lookup(ctx *fasthttp.RequestCtx) {
	raw := ctx.Path()[len(lookup.PathPrefix):]
	id, err := promotion.ParseID(raw)
	if err != nil {
		lookup.BadID(ctx, raw)
		return
	}
	rt := p.rt.Load()
	owners := rt.ring.OwnersOf(id)
	l := p.acquireCall(ctx)
	defer l.release()
	tries := 0
	r := retry{cfg: &p.cfg}
	for {
		o := p.round(ctx, l, rt, owners, &tries)
		if o == answered {
			return
		}
		pause := r.next(o)
		if pause == 0 {
			break
		}
		time.Sleep(pause)
	}
	p.exhausted.Inc()
	names := make([]string, len(owners))
	for i, o := range owners {
		names[i] = rt.backends[o].name
	}
	httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, "no replica of this id's slot answered", "id", id.String(),
		"slot", ring.Slot(id, p.cfg.Slots), "replicas", strings.Join(names, ","))
}

// retry paces the rounds of one request over the replicas.
type retry struct {
	cfg      *Config
	deadline time.Time
	rounds   int
	pause    time.Duration
}

// next returns how long to pause before another round after one that
// ended in o (behind or failed), or 0 to give up.
func (r *retry) next(o outcome) time.Duration {
	switch o {
	case behind:
		// A replica holds an older version than the cluster's: it
		// switches within moments, so wait for it, with a backoff, up to
		// CatchUpWait.
		if r.deadline.IsZero() {
			r.deadline = time.Now().Add(r.cfg.CatchUpWait)
		}
		r.pause = min(max(2*r.pause, 10*time.Millisecond), 200*time.Millisecond)
		if time.Now().Add(r.pause).After(r.deadline) {
			r.pause = 0
		}
	case failed:
		// Errors, timeouts and 503s without a version (a node with no
		// dataset at all, or in trouble) get Retries more rounds: asking
		// again and again only adds load where a node is weakest.
		if r.rounds++; r.rounds <= r.cfg.Retries {
			r.pause = min(max(2*r.pause, 20*time.Millisecond), 200*time.Millisecond)
		} else {
			r.pause = 0
		}
	}
	return r.pause
}

// outcome is how one round over a slot's replicas ended.
type outcome int

const (
	answered outcome = iota // the client has its answer
	behind                  // a replica is on an older version: wait for it
	failed                  // no replica answered usefully
)

// round asks the replicas of a slot, healthy ones first in ring order,
// then the others in case the health checks are behind, and relays the
// first good answer: the next replica is asked when one fails, or also
// when none answered within the hedge delay (hedge.go). tries counts the
// requests of the whole lookup.
func (p *Proxy) round(ctx *fasthttp.RequestCtx, l *lookupCall, rt *routing, owners []uint16, tries *int) outcome {
	l.used = 0
	result := failed
	// asked is by index in owners: a replica that goes down is not asked
	// twice in a round.
	var asked uint64
	launch := func(j int, hedged bool) {
		asked |= 1 << j
		if *tries > 0 && !hedged {
			p.failovers.Inc()
		}
		*tries++
		l.launch(rt.backends[owners[j]], hedged)
	}
	launch(rt.nextReplica(owners, 0), false)
	inflight := 1
	p.hedge.Primary()
	l.timer.Reset(p.hedge.Delay())
	defer l.timer.Stop()
	for inflight > 0 {
		select {
		case <-l.timer.C:
			if j := rt.nextReplica(owners, asked); j >= 0 && p.hedge.Allow() {
				launch(j, true)
				inflight++
			}
			continue
		case t := <-l.done:
			inflight--
			b, resp := t.b, &t.resp
			v := lookup.ParseStamp(resp.Header.Peek(lookup.VersionHeader), resp.Header.Peek(lookup.EpochHeader))
			switch {
			case t.err == nil && resp.StatusCode() == fasthttp.StatusMisdirectedRequest:
				// The node follows a newer ring than this proxy: ask the
				// next replica, and learn the new ring now.
				p.refreshSoon()
			case t.err != nil || resp.StatusCode() >= 500:
				p.failed(b)
				// A read node catching up with the active version answers
				// 503 with the older version it holds.
				if t.err == nil && resp.StatusCode() == fasthttp.StatusServiceUnavailable && v.Version > 0 {
					result = behind
				}
			default:
				b.fails.Store(0)
				if !b.up.Load() {
					b.up.Store(true) // it answers: the health check was behind
				}
				if p.seen.Behind(v) {
					// This replica has not switched to the newest version
					// yet: ask another one, or wait a moment.
					p.behind.Inc()
					result = behind
					break
				}
				p.seen.Raise(v)
				b.answers.Inc()
				if t.hedged {
					p.hedge.Won()
				}
				ctx.SetStatusCode(resp.StatusCode())
				ctx.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
				if hv := resp.Header.Peek(lookup.VersionHeader); len(hv) > 0 {
					ctx.Response.Header.SetBytesV(lookup.VersionHeader, hv)
				}
				if he := resp.Header.Peek(lookup.EpochHeader); len(he) > 0 {
					ctx.Response.Header.SetBytesV(lookup.EpochHeader, he)
				}
				ctx.SetBody(resp.Body())
				return answered
			}
			if inflight == 0 {
				if j := rt.nextReplica(owners, asked); j >= 0 {
					launch(j, false)
					inflight++
				}
			}
		}
	}
	return result
}

// forward sends a read to the first healthy node and relays its answer.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethodBytes(ctx.Method())
	req.SetRequestURIBytes(ctx.RequestURI())
	for pass := range 2 {
		for _, b := range p.rt.Load().backends {
			if b.up.Load() != (pass == 0) {
				continue
			}
			resp.Reset()
			req.Header.SetHost(b.client.Addr)
			if err := b.client.DoTimeout(req, resp, max(p.cfg.TryTimeout, time.Second)); err != nil || resp.StatusCode() >= 500 {
				p.failed(b)
				continue
			}
			ctx.SetStatusCode(resp.StatusCode())
			ctx.Response.Header.SetContentTypeBytes(resp.Header.ContentType())
			ctx.SetBody(resp.Body())
			return
		}
	}
	httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, "no read node answered")
}

// uncovered counts the slots that have no replica marked up.
func (rt *routing) uncovered() int {
	n := 0
	for s := range rt.ring.Slots() {
		if !slices.ContainsFunc(rt.ring.Owners(s), func(o uint16) bool { return rt.backends[o].up.Load() }) {
			n++
		}
	}
	return n
}

func (p *Proxy) handler() fasthttp.RequestHandler {
	r := httpserver.NewRouter(httpserver.NewMetrics(p.metrics), "")
	r.Read("/datasets/current", p.forward)
	r.Read("/cluster", func(ctx *fasthttp.RequestCtx) {
		httpserver.WriteJSON(ctx, fasthttp.StatusOK, p.rt.Load().cluster)
	})
	r.Probe("/healthz", httpserver.Healthz(p.cfg.Version))
	r.Probe("/readyz", func(ctx *fasthttp.RequestCtx) {
		rt := p.rt.Load()
		up := map[string]bool{}
		for _, b := range rt.backends {
			up[b.name] = b.up.Load()
		}
		if rt.uncovered() > 0 {
			httpserver.WriteJSON(ctx, fasthttp.StatusServiceUnavailable, map[string]any{"status": "not ready: some slots have no healthy replica", "nodes": up})
			return
		}
		httpserver.WriteJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "ready", "nodes": up})
	})
	r.Probe("/metrics", func(ctx *fasthttp.RequestCtx) { httpserver.WriteMetrics(ctx, p.metrics) })
	return lookup.Routes(r, p.lookup, p.batch)
}
