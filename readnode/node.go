package readnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/pebblestore"
	"github.com/promotion-service/promo/pgstore"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// Config configures a read node.
type Config struct {
	// Name is this node's name in Nodes (required).
	Name string
	// Addr is the listen address (default 127.0.0.1:8090).
	Addr string
	// DataDir holds the node's Pebble store (default ./data-<name>).
	DataDir string
	// PostgresURL is the write store to pull from (required).
	PostgresURL string
	// KafkaBrokers deliver the dataset events (required).
	KafkaBrokers []string
	// Nodes, when not empty, seeds the cluster's membership in
	// PostgreSQL on an empty database; the ring always comes from
	// PostgreSQL (a static list never overrides it).
	Nodes []ring.Node
	// Replicas is the replication factor of a seeded ring (default 2).
	Replicas int
	// Join adds this node to the ring on start (a change, see
	// pgstore.Store.AddNode) unless it is a member already.
	Join bool
	// URL is this node's URL in the ring, the one that the proxy and other
	// nodes reach it at (default http://<Addr>).
	URL string
	// DropGrace is how long, after a new ring serves, the node still
	// answers the slots it lost, while the proxy and clients switch
	// (default 30s).
	DropGrace time.Duration
	// Slots is the number of ring slots (default ring.DefaultSlots).
	Slots int
	// NewCache, when not nil, builds the lookup cache that is read before
	// the store and filled from it (default none: a Pebble Get is faster
	// than a Redis round trip, see README). Start calls it with the
	// cluster's id from PostgreSQL (pgstore.Store.ClusterID), which a cache
	// shared between clusters, such as package cache's Redis one, puts in
	// its keys. The node closes the cache, if it is an io.Closer, once it
	// has stopped serving, or when Start fails.
	NewCache func(cluster string) (lookup.Cache, error)
	// Metrics is the set the node declares its metrics in and serves on
	// /metrics (default a new one). Give the cache the same set to have
	// its counters served too; a set serves one node.
	Metrics *metrics.Set
	// PollInterval is how often the node checks PostgreSQL for versions
	// to prepare and activate (default 200ms); events wake it sooner.
	PollInterval time.Duration
	// PullWorkers is how many partitions are pulled at once (default
	// 4 x GOMAXPROCS: each waits on PostgreSQL as much as it works, and 8
	// streams measured 25% faster than 2 on 2 cores).
	PullWorkers int
	// PullBackoff is how long the node waits before pulling again a
	// version whose pull failed (default 1s); the wait doubles at every
	// failure in a row, up to PullBackoffMax (default 5 minutes). A change
	// of the version in PostgreSQL, or a newer version, ends the wait.
	PullBackoff    time.Duration
	PullBackoffMax time.Duration
	// KeepVersions is how many versions the local store keeps (default 2).
	KeepVersions int
	// HeartbeatInterval is how often the node reports to PostgreSQL the
	// version it serves (default 30s). Ingest's retention keeps a version
	// that a node reported within its ServingGrace (default 10 minutes),
	// so this must stay well below that grace.
	HeartbeatInterval time.Duration
	// CacheSize is the Pebble block cache (default 128 MiB).
	CacheSize int64
	// HTTP holds the server's timeouts and limits.
	HTTP httpserver.ServerConfig
	// Version is the build version, reported by /healthz.
	Version string
	// Logger receives operational messages (default slog.Default()).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of promo readnode.
func DefaultConfig() Config {
	return Config{
		Addr:              "127.0.0.1:8090",
		Replicas:          2,
		DropGrace:         30 * time.Second,
		Slots:             ring.DefaultSlots,
		PollInterval:      200 * time.Millisecond,
		PullWorkers:       4 * runtime.GOMAXPROCS(0),
		PullBackoff:       time.Second,
		PullBackoffMax:    5 * time.Minute,
		KeepVersions:      2,
		HeartbeatInterval: 30 * time.Second,
		CacheSize:         128 << 20,
		HTTP:              httpserver.DefaultServerConfig("promo-readnode"),
		Version:           "dev",
		Logger:            slog.Default(),
	}
}

// Validate reports the first invalid field of c.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("readnode: invalid Addr %q: %w", c.Addr, err)
	}
	switch {
	case c.Name == "":
		return errors.New("readnode: Name is required")
	case c.PostgresURL == "":
		return errors.New("readnode: PostgresURL is required")
	case len(c.KafkaBrokers) == 0:
		return errors.New("readnode: KafkaBrokers must name at least one broker")
	case len(c.Nodes) > 0 && (c.Replicas < 1 || c.Replicas > len(c.Nodes)):
		return fmt.Errorf("readnode: Replicas must be between 1 and the number of nodes, %d, got %d", len(c.Nodes), c.Replicas)
	case c.DropGrace < 0:
		return fmt.Errorf("readnode: DropGrace must not be negative, got %v", c.DropGrace)
	case c.PollInterval <= 0 || c.PullWorkers < 1 || c.KeepVersions < 1 || c.HeartbeatInterval <= 0:
		return errors.New("readnode: PollInterval, PullWorkers, KeepVersions and HeartbeatInterval must be positive")
	case c.PullBackoff <= 0 || c.PullBackoffMax < c.PullBackoff:
		return fmt.Errorf("readnode: PullBackoff must be positive and at most PullBackoffMax, got %v and %v", c.PullBackoff, c.PullBackoffMax)
	}
	if _, err := ring.ParseNodes(c.Name, false); err != nil {
		return fmt.Errorf("readnode: invalid Name: %w", err)
	}
	if c.URL != "" {
		if _, err := ring.ParseNodes(c.Name+"="+c.URL, true); err != nil {
			return fmt.Errorf("readnode: invalid URL: %w", err)
		}
	}
	if host, _, _ := net.SplitHostPort(c.Addr); c.Join && c.URL == "" && (host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified()) {
		return fmt.Errorf("readnode: Join needs URL, the address others reach this node at: Addr %q names no host", c.Addr)
	}
	if len(c.Nodes) > 0 && !c.Join && !slices.ContainsFunc(c.Nodes, func(n ring.Node) bool { return n.Name == c.Name }) {
		return fmt.Errorf("readnode: Name %q is not in Nodes %v (give Join to add it)", c.Name, ring.Names(c.Nodes))
	}
	return c.HTTP.Validate()
}

// Node is a running read node.
type Node struct {
	cfg     Config
	log     *slog.Logger
	store   *pebblestore.Store
	pg      *pgstore.Store
	cluster string // the cluster's id in PostgreSQL

	// gate is what lookups answer (membership.go); rs, the membership,
	// belongs to the reconcile loop; membership is its copy for /cluster.
	gate       atomic.Pointer[gate]
	rs         ringState
	membership atomic.Pointer[ring.Membership]
	// local holds the slots of each local version (membership.go).
	localMu sync.Mutex
	local   map[uint64][]bool
	cache   lookup.Cache
	lookup  *lookup.Handler

	// activated is the cluster's latest activation, as last read from
	// PostgreSQL: lookups from an older stamp answer 503.
	activated atomic.Pointer[lookup.Stamp]
	kick      chan struct{}
	retries   *retries // versions whose pull failed
	// reportMu serializes the reports of the version the node serves
	// (heartbeats and switches).
	reportMu sync.Mutex

	metrics     *metrics.Set
	pulledRows  *metrics.Counter
	pullRate    atomic.Uint64 // rows/s of the last pull, as float64 bits
	pullFailure *metrics.Counter
	beatFailure *metrics.Counter

	http    *fasthttp.Server
	ln      *httpserver.Listener
	stop    context.CancelFunc
	stopped sync.WaitGroup
}

// Start opens the local store, connects to PostgreSQL and the brokers,
// reconciles with PostgreSQL (the versions to prepare and to serve), and
// serves.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "./data-" + cfg.Name
	}
	if cfg.URL == "" {
		cfg.URL = "http://" + cfg.Addr
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.Name), local: map[uint64][]bool{}, kick: make(chan struct{}, 1),
		retries: newRetries(cfg.PullBackoff, cfg.PullBackoffMax), metrics: cfg.Metrics}
	n.gate.Store(&gate{serves: make([]bool, cfg.Slots)})
	sc := pebblestore.DefaultConfig(cfg.DataDir)
	sc.KeepVersions = cfg.KeepVersions
	sc.CacheSize = cfg.CacheSize
	sc.Logger = cfg.Logger
	if n.store, err = pebblestore.Open(ctx, sc); err != nil {
		return nil, err
	}
	pc := pgstore.DefaultConfig(cfg.PostgresURL)
	pc.Slots = cfg.Slots
	pc.Logger = cfg.Logger
	if n.pg, err = pgstore.Open(ctx, pc); err != nil {
		n.store.Close()
		return nil, err
	}
	if err := events.CheckBrokers(ctx, cfg.KafkaBrokers); err != nil {
		n.closeStores()
		return nil, err
	}
	if n.cluster, err = n.pg.ClusterID(ctx); err != nil {
		n.closeStores()
		return nil, err
	}
	if len(cfg.Nodes) > 0 {
		seeded, err := n.pg.SeedRing(ctx, cfg.Nodes, cfg.Replicas)
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("cannot seed the ring from Nodes: %w", err)
		}
		if seeded {
			n.log.Info("seeded the ring in PostgreSQL", "nodes", len(cfg.Nodes), "replicas", cfg.Replicas)
		}
	}
	if err := n.refreshRing(ctx, true); err != nil {
		n.closeStores()
		return nil, fmt.Errorf("cannot read the ring from PostgreSQL: %w", err)
	}
	if err := n.recordUnlabelledSlots(); err != nil {
		n.closeStores()
		return nil, err
	}
	n.updateGate()
	if cfg.NewCache != nil {
		if n.cache, err = cfg.NewCache(n.cluster); err != nil {
			n.closeStores()
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			closeCache(n.cache)
		}
	}()
	n.lookup = lookup.NewCluster(lookup.VersionsOf(n.store.Acquire), n, n.cache)
	n.registerMetrics()
	hc := cfg.HTTP
	hc.Logger = cfg.Logger
	n.http = httpserver.NewServer(hc, n.handler())
	if n.ln, err = httpserver.Listen(cfg.Addr); err != nil {
		n.closeStores()
		return nil, err
	}
	rctx, stop := context.WithCancel(context.Background())
	n.stop = stop
	n.stopped.Add(3)
	go func() {
		defer n.stopped.Done()
		n.reconcileLoop(rctx)
	}()
	go func() {
		defer n.stopped.Done()
		n.heartbeat(rctx)
	}()
	go func() {
		defer n.stopped.Done()
		n.consume(rctx)
	}()
	n.ln.Serve(n.http)
	n.log.Info("read node listening", "addr", n.ln.Addr(), "url", cfg.URL, "cluster", n.cluster,
		"slots_held", count(n.wantSlots()), "join", cfg.Join, "cache", n.cache != nil)
	return n, nil
}

func (n *Node) closeStores() {
	if n.pg != nil {
		n.pg.Close()
	}
	n.store.Close()
}

// Addr returns the address the node listens on.
func (n *Node) Addr() string { return n.ln.Addr() }

// Wait blocks until ctx is done or the server fails.
func (n *Node) Wait(ctx context.Context) error { return n.ln.Wait(ctx) }

// Close stops pulling and serving and closes the stores, within ctx.
func (n *Node) Close(ctx context.Context) error {
	err := n.http.ShutdownWithContext(ctx)
	n.stop()
	n.stopped.Wait()
	closeCache(n.cache)
	n.pg.Close()
	return errors.Join(err, n.store.Close())
}

// closeCache closes c if it needs closing.
func closeCache(c lookup.Cache) {
	if c, ok := c.(io.Closer); ok {
		c.Close()
	}
}

var _ lookup.Gate = (*Node)(nil)

// Holds implements lookup.Gate.
func (n *Node) Holds(id promotion.ID) bool { return n.gate.Load().serves[ring.Slot(id, n.cfg.Slots)] }

// Min implements lookup.Gate.
func (n *Node) Min() lookup.Stamp {
	if a := n.activated.Load(); a != nil {
		return *a
	}
	return lookup.Stamp{}
}

// Misdirected implements lookup.Gate: 421 with the owners of the id's slot.
func (n *Node) Misdirected(ctx *fasthttp.RequestCtx, id promotion.ID) {
	slot := ring.Slot(id, n.cfg.Slots)
	type owner struct {
		Name string `json:"name"`
		URL  string `json:"url"`
	}
	owners := []owner{}
	if g := n.gate.Load(); g.ring != nil {
		for _, o := range g.ring.Owners(slot) {
			name := g.ring.Nodes()[o]
			owners = append(owners, owner{name, g.urls[name]})
		}
	}
	httpserver.Error(ctx, fasthttp.StatusMisdirectedRequest, "this node does not hold the slot of this id; ask one of its owners",
		"id", id.String(), "slot", slot, "node", n.cfg.Name, "owners", owners)
}

func (n *Node) trigger() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// consume wakes the reconcile loop on every dataset event. Events only say
// "look now": the state to reach is read from PostgreSQL, so duplicates,
// reordering and missed events are harmless.
func (n *Node) consume(ctx context.Context) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     n.cfg.KafkaBrokers,
		Topic:       events.Topic,
		GroupID:     "promo-readnode-" + n.cfg.Name,
		MinBytes:    1,
		MaxBytes:    1 << 20,
		MaxWait:     500 * time.Millisecond,
		StartOffset: kafka.LastOffset,
	})
	defer r.Close()
	for {
		msg, err := r.ReadMessage(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			n.log.Debug("cannot read dataset events; polling PostgreSQL meanwhile", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if e, err := events.Decode(msg.Value); err == nil {
			n.log.Debug("dataset event", "version", e.Version)
		}
		n.trigger()
	}
}

func (n *Node) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.PollInterval)
	defer t.Stop()
	for {
		if err := n.reconcile(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("cannot reconcile with PostgreSQL; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-n.kick:
		case <-t.C:
		}
	}
}

// reportTimeout bounds each report of the served version to PostgreSQL: a
// stalled server delays the next heartbeat, it does not stop them.
const reportTimeout = 5 * time.Second

// heartbeat reports every HeartbeatInterval that the node serves its
// current version, so that ingest's retention keeps that version. It runs
// apart from the reconcile loop: a pull may take longer than the
// retention grace.
func (n *Node) heartbeat(ctx context.Context) {
	t := time.NewTicker(n.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		n.beat(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Node) beat(ctx context.Context) {
	n.reportMu.Lock()
	defer n.reportMu.Unlock()
	cur, ok := n.store.Current()
	if !ok {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	if err := n.pg.ReportServing(rctx, n.cfg.Name, cur.Version, cur.Epoch); err != nil && ctx.Err() == nil {
		n.beatFailure.Inc()
		n.log.Warn("cannot report the version this node serves; retrying at the next heartbeat",
			"version", cur.Version, "err", err)
	}
}

// reconcile brings the node to the cluster's state: it prepares the
// version the cluster serves, the one to activate next (an operator's
// target, or the newest committed one unless the activation guard held
// it) and the newest committed one (even held: activating it later is
// then quick); it activates the next one for the cluster when every slot
// is prepared on one of its replicas, serves the active one at its epoch,
// and records when every slot serves it.
func (n *Node) reconcile(ctx context.Context) error {
	defer n.updateGate()
	if err := n.refreshRing(ctx, false); err != nil {
		return err
	}
	if n.rs.mem == nil {
		return nil // no ring yet: nothing to hold
	}
	act, err := n.pg.Activation(ctx)
	if err != nil {
		return err
	}
	latest, hasLatest, err := n.pg.Latest(ctx)
	if err != nil {
		return err
	}
	pending, hasPending, err := n.pg.Pending(ctx, act, latest, hasLatest)
	if err != nil {
		return err
	}
	var active pgstore.Version
	hasActive := act.Version != 0
	if hasActive {
		if active, err = n.pg.Version(ctx, act.Version); err != nil {
			return err
		}
		n.serve(ctx, act, latest, hasLatest, pending.Version)
	}
	want := []pgstore.Version{}
	if hasActive {
		want = append(want, active)
	}
	if hasPending && pending.Version != act.Version {
		want = append(want, pending)
		// Retention must not drop it before it serves: a rollback
		// target is older than what this node serves.
		n.store.SetPending(pending.Version)
	} else {
		n.store.SetPending()
	}
	if hasLatest && latest.Version != act.Version && latest.Version != pending.Version && (!hasActive || latest.Version > act.Version) {
		want = append(want, latest)
	}
	n.pullWanted(ctx, want, latest.Version)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := n.reportRing(ctx, act.Version, latest.Version); err != nil {
		return err
	}
	if hasPending && pending.Version != act.Version && n.prepared(pending.Version) {
		ok, err := n.covered(ctx, pending.Version)
		if err != nil {
			return err
		}
		if ok {
			if err := n.pg.Activate(ctx, pending.Version); err != nil {
				return err
			}
			if act, err = n.pg.Activation(ctx); err != nil {
				return err
			}
			n.log.Info("every slot is prepared: the cluster activated the version", "version", act.Version, "epoch", act.Epoch)
		}
	}
	if act.Version != 0 {
		n.serve(ctx, act, latest, hasLatest, pending.Version)
		if err := n.checkServed(ctx, act); err != nil {
			return err
		}
	}
	n.forgetLocalSlots()
	return nil
}

// pullWanted pulls the versions of want not prepared yet. A version whose
// pull failed waits for its retry while the others go on: a bad version
// stops neither the pull of a newer one nor the activation and serving
// of the others. latest is the newest committed version.
func (n *Node) pullWanted(ctx context.Context, want []pgstore.Version, latest uint64) {
	var failing []uint64
	slots := n.wantSlots()
	for _, v := range want {
		if n.hasSlots(v.Version, slots) {
			continue
		}
		if !n.retries.due(v, latest, time.Now()) {
			failing = append(failing, v.Version)
			continue
		}
		err := n.pull(ctx, v, slots)
		if err == nil || ctx.Err() != nil {
			continue
		}
		n.pullFailure.Inc()
		failing = append(failing, v.Version)
		wait := n.retries.failed(v, latest, err, time.Now())
		n.log.Warn("cannot pull a version; pulling it again later", "version", v.Version, "err", err,
			"retry_in", wait.Round(time.Millisecond))
	}
	n.retries.keep(failing)
}

// serve switches the store to the active version, at the cluster's epoch,
// when it is prepared, and only then raises the stamp lookups accept: a
// node that holds the version never refuses a lookup during the switch,
// and one that does not have it yet (a rollback to a version it dropped)
// answers 503, so that the proxy asks a replica that has it. pending is
// the version to activate next, whose report must stay.
func (n *Node) serve(ctx context.Context, act pgstore.Activation, latest pgstore.Version, hasLatest bool, pending uint64) {
	want := lookup.Stamp{Epoch: act.Epoch, Version: act.Version}
	if cur, ok := n.store.Current(); (!ok || cur.Version != act.Version || cur.Epoch != act.Epoch) && n.prepared(act.Version) {
		n.switchTo(ctx, want, latest, hasLatest, pending)
	}
	if a := n.activated.Load(); a == nil || *a != want {
		n.activated.Store(&want)
	}
}

// switchTo makes the store serve version to.Version at epoch to.Epoch,
// reports it and forgets the node's reports of the versions it no longer
// keeps. It holds reportMu so that a heartbeat of the version it leaves
// never lands after the Forget.
func (n *Node) switchTo(ctx context.Context, to lookup.Stamp, latest pgstore.Version, hasLatest bool, pending uint64) {
	n.reportMu.Lock()
	defer n.reportMu.Unlock()
	if _, err := n.store.ActivateEpoch(to.Version, to.Epoch); err != nil {
		n.log.Error("cannot switch to the active version", "version", to.Version, "epoch", to.Epoch, "err", err)
		return
	}
	// The gate follows at once, before serve raises the stamp that makes
	// the node ready: a first version would otherwise answer 421 for its
	// own slots until the end of this reconcile.
	n.updateGate()
	n.log.Info("serving version", "version", to.Version, "epoch", to.Epoch)
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	if err := n.pg.ReportServing(ctx, n.cfg.Name, to.Version, to.Epoch); err != nil {
		// The next heartbeat reports it.
		n.log.Warn("cannot report the version this node serves", "version", to.Version, "err", err)
		return
	}
	keep := []uint64{to.Version}
	if hasLatest {
		keep = append(keep, latest.Version)
	}
	if pending != 0 {
		keep = append(keep, pending)
	}
	_ = n.pg.Forget(ctx, n.cfg.Name, keep...)
}

// checkServed records in PostgreSQL that every slot serves the active
// version at its epoch, once the nodes' reports show it: an operator's
// POST /datasets/{version}/activate?wait=true waits for that.
func (n *Node) checkServed(ctx context.Context, act pgstore.Activation) error {
	if act.ServedEpoch >= act.Epoch {
		return nil
	}
	if cur, ok := n.store.Current(); !ok || cur.Version != act.Version || cur.Epoch != act.Epoch {
		return nil // not serving it yet: another node will, or this one later
	}
	nodes, err := n.pg.ServingAt(ctx, act.Version, act.Epoch)
	if err != nil {
		return err
	}
	if !n.coveredBy(nodes) {
		return nil
	}
	return n.pg.MarkServed(ctx, act.Epoch)
}

// prepared reports whether the local store holds version v complete,
// with every slot this node holds in the serving ring.
func (n *Node) prepared(v uint64) bool {
	if n.rs.mem == nil {
		return false
	}
	return n.hasSlots(v, ring.Held(n.rs.mem.Serving.Assignment, n.cfg.Name, n.cfg.Slots))
}

// covered reports whether every slot of version v is prepared on at least
// one of its replicas.
func (n *Node) covered(ctx context.Context, v uint64) (bool, error) {
	nodes, err := n.pg.Reported(ctx, v)
	if err != nil {
		return false, err
	}
	return n.coveredBy(nodes), nil
}

// coveredBy reports whether every slot of the serving ring has one of
// nodes among its replicas.
func (n *Node) coveredBy(nodes []string) bool {
	a := n.rs.mem.Serving.Assignment
	ready := make([]bool, len(a.Nodes()))
	for _, name := range nodes {
		if i := a.Index(name); i >= 0 {
			ready[i] = true
		}
	}
	for s := range n.cfg.Slots {
		if !slices.ContainsFunc(a.Owners(s), func(o uint16) bool { return ready[o] }) {
			return false
		}
	}
	return true
}
