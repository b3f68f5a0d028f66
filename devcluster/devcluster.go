// Package devcluster runs the whole cluster on one machine without
// Docker: PostgreSQL (initdb on the first run, reused after), redis-server,
// the in-process Kafka-protocol broker, the ingest service, N read nodes and
// the proxy. Data lives under one directory and survives a restart; the
// broker's messages do not, which the read nodes do not need (they
// reconcile with PostgreSQL).
package devcluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/promotion-service/promo/cache"
	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/ingestsvc"
	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/proxy"
	"github.com/promotion-service/promo/readnode"
	"github.com/promotion-service/promo/ring"
)

// Config configures a cluster.
type Config struct {
	// Dir holds PostgreSQL's data, the read nodes' stores and the logs.
	Dir string
	// Nodes is the number of read nodes (default 3).
	Nodes int
	// Replicas per slot (default 2, at most Nodes).
	Replicas int
	// Port is the proxy's port; ingest listens on Port+1 and the read
	// nodes on Port+10, Port+11, ... Zero picks free ports for all, for
	// tests.
	Port int
	// ImportDir is the directory POST /process-csv filename=... reads
	// (default .).
	ImportDir string
	// Cache is the read nodes' cache mode (cache.ModeOff by default).
	Cache string
	// NodePrefix names the read nodes NodePrefix1, NodePrefix2, ...
	// (default "node"). Names place slots on the ring, so a prefix gives
	// the same assignment every time.
	NodePrefix string
	// NodesStopped leaves the read nodes stopped after Start; StartNode
	// starts each. A benchmark starts them one at a time, after an import,
	// so that each pull has the machine to itself.
	NodesStopped bool
	// NoIngest leaves the ingest service out: the caller runs its own
	// (promo ingest as a process, say) against Endpoints' Postgres and
	// Kafka, and Endpoints().Ingest is empty.
	NoIngest bool
	// ProxyTryTimeout bounds one attempt of the proxy on one replica
	// (default, and when zero, the proxy's: 250ms). Tests under the race
	// detector on a busy machine give it more.
	ProxyTryTimeout time.Duration
	// ProxyCatchUpWait bounds how long the proxy waits for a replica on
	// the newest version it has seen during a switch (default, and when
	// zero, the proxy's: 1s). A node loaded enough to take longer than
	// that to switch makes the proxy answer 503.
	ProxyCatchUpWait time.Duration
	// Ephemeral runs PostgreSQL without fsync, for a cluster whose Dir is
	// thrown away afterwards; by default the data survives a crash.
	Ephemeral bool
	// Logger receives the services' messages (default slog.Default()).
	Logger *slog.Logger
}

// Cluster is a running cluster.
type Cluster struct {
	cfg     Config
	dir     string // cfg.Dir, absolute
	log     *slog.Logger
	pg      *localsvc.Postgres
	redis   *localsvc.Redis
	kafka   *localsvc.Kafka
	ingest  *ingestsvc.Server
	nodes   []*readnode.Node
	members []ring.Node
	joined  []*readnode.Node // started by AddNode
	proxy   *proxy.Proxy
	ports   []int // proxy, ingest, read nodes
}

// Endpoints are the addresses of a running cluster.
type Endpoints struct {
	Proxy, Ingest, Postgres, Redis, Kafka string
	Nodes                                 []ring.Node
}

// Validate reports the first invalid field of c, once defaults are
// applied.
func (c *Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("devcluster: Dir is required")
	case c.Nodes < 1 || c.Replicas < 1 || c.Replicas > c.Nodes:
		return fmt.Errorf("devcluster: need 1 <= replicas (%d) <= nodes (%d)", c.Replicas, c.Nodes)
	case c.Port < 0 || c.Port+10+c.Nodes > 65535:
		return fmt.Errorf("devcluster: port %d leaves no room for the services after it", c.Port)
	}
	return nil
}

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Replicas == 0 {
		c.Replicas = min(2, c.Nodes)
	}
	if c.ImportDir == "" {
		c.ImportDir = "."
	}
	if c.Cache == "" {
		c.Cache = cache.ModeOff
	}
	if c.NodePrefix == "" {
		c.NodePrefix = "node"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Start starts every service (the read nodes unless cfg.NodesStopped), in
// dependency order, and returns once they listen. On error, what was
// started is stopped.
func Start(ctx context.Context, cfg Config) (c *Cluster, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// PostgreSQL runs as its own user when this process is root.
	_ = os.Chmod(dir, 0o755)
	c = &Cluster{cfg: cfg, dir: dir, log: cfg.Logger.With("component", "devcluster")}
	if c.ports, err = pickPorts(cfg); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Close(context.Background())
			c = nil
		}
	}()
	if err := c.startDependencies(ctx); err != nil {
		return c, err
	}
	if !cfg.NoIngest {
		if err := c.startIngest(ctx); err != nil {
			return c, err
		}
	}
	for i := range cfg.Nodes {
		c.members = append(c.members, ring.Node{Name: fmt.Sprintf("%s%d", cfg.NodePrefix, i+1), URL: fmt.Sprintf("http://127.0.0.1:%d", c.ports[2+i])})
	}
	c.nodes = make([]*readnode.Node, cfg.Nodes)
	if !cfg.NodesStopped {
		for i := range cfg.Nodes {
			if err := c.StartNode(ctx, i); err != nil {
				return c, err
			}
		}
	}
	return c, c.startProxy(ctx)
}

// pickPorts returns the ports of the proxy, ingest and the read nodes, in
// that order.
func pickPorts(cfg Config) ([]int, error) {
	ports := make([]int, 2+cfg.Nodes)
	for i := range ports {
		switch {
		case cfg.Port == 0:
			p, err := localsvc.FreePort()
			if err != nil {
				return nil, err
			}
			ports[i] = p
		case i < 2:
			ports[i] = cfg.Port + i
		default:
			ports[i] = cfg.Port + 10 + i - 2
		}
	}
	return ports, nil
}

// startDependencies starts PostgreSQL, Redis and the broker.
func (c *Cluster) startDependencies(ctx context.Context) (err error) {
	if c.pg, err = localsvc.StartPostgres(ctx, localsvc.PostgresConfig{Dir: filepath.Join(c.dir, "postgres"), Durable: !c.cfg.Ephemeral}); err != nil {
		return err
	}
	if c.redis, err = localsvc.StartRedis(ctx, localsvc.RedisConfig{Dir: c.dir}); err != nil {
		return err
	}
	c.kafka, err = localsvc.StartKafka(0, events.Topic)
	return err
}

func (c *Cluster) startIngest(ctx context.Context) (err error) {
	ic := ingestsvc.DefaultConfig()
	ic.Addr = fmt.Sprintf("127.0.0.1:%d", c.ports[1])
	ic.PostgresURL, ic.KafkaBrokers, ic.ImportDir = c.pg.URL, []string{c.kafka.Addr()}, c.cfg.ImportDir
	ic.Logger = c.cfg.Logger.With("service", "ingest")
	c.ingest, err = ingestsvc.Start(ctx, ic)
	return err
}

func (c *Cluster) startProxy(ctx context.Context) (err error) {
	pc := proxy.DefaultConfig()
	pc.Addr = fmt.Sprintf("127.0.0.1:%d", c.ports[0])
	pc.Nodes, pc.Replicas = c.members, c.cfg.Replicas
	pc.HealthInterval = 500 * time.Millisecond
	if c.cfg.ProxyTryTimeout > 0 {
		pc.TryTimeout = c.cfg.ProxyTryTimeout
	}
	if c.cfg.ProxyCatchUpWait > 0 {
		pc.CatchUpWait = c.cfg.ProxyCatchUpWait
	}
	pc.Logger = c.cfg.Logger.With("service", "proxy")
	c.proxy, err = proxy.Start(ctx, pc)
	return err
}

func (c *Cluster) startNode(ctx context.Context, i int, o NodeOptions) (*readnode.Node, error) {
	m := c.members[i]
	rc := readnode.DefaultConfig()
	rc.Name, rc.Addr = m.Name, fmt.Sprintf("127.0.0.1:%d", c.ports[2+i])
	rc.DataDir = filepath.Join(c.dir, cmp.Or(o.Store, m.Name))
	rc.PostgresURL, rc.KafkaBrokers, rc.Nodes, rc.Replicas = c.pg.URL, []string{c.kafka.Addr()}, c.members, c.cfg.Replicas
	rc.PollInterval = 100 * time.Millisecond
	rc.Logger = c.cfg.Logger.With("service", m.Name)
	rc.Metrics = metrics.NewSet()
	cc := cache.DefaultConfig(c.redis.URL)
	cc.Logger, cc.Metrics = rc.Logger, rc.Metrics
	var err error
	if rc.NewCache, err = cache.ForMode(cmp.Or(o.Cache, c.cfg.Cache), cc); err != nil {
		return nil, fmt.Errorf("devcluster: Cache: %w", err)
	}
	return readnode.Start(ctx, rc)
}

// Endpoints returns where the services listen.
func (c *Cluster) Endpoints() Endpoints {
	e := Endpoints{
		Proxy:    "http://" + c.proxy.Addr(),
		Postgres: c.pg.URL,
		Redis:    c.redis.URL,
		Kafka:    c.kafka.Addr(),
		Nodes:    c.members,
	}
	if c.ingest != nil {
		e.Ingest = "http://" + c.ingest.Addr()
	}
	return e
}

// Postgres returns the cluster's PostgreSQL server, which fault drills
// stop, freeze and start again.
func (c *Cluster) Postgres() *localsvc.Postgres { return c.pg }

// Redis returns the cluster's redis-server, which fault drills stop,
// freeze and start again.
func (c *Cluster) Redis() *localsvc.Redis { return c.redis }

// Kafka returns the cluster's broker, which fault drills stop and start
// again.
func (c *Cluster) Kafka() *localsvc.Kafka { return c.kafka }

// Print writes the endpoints for a person.
func (c *Cluster) Print(w io.Writer) {
	e := c.Endpoints()
	fmt.Fprintf(w, "promo devcluster is up (data in %s)\n", c.cfg.Dir)
	fmt.Fprintf(w, "  proxy     %s   GET /promotions/{id}\n", e.Proxy)
	if e.Ingest != "" {
		fmt.Fprintf(w, "  ingest    %s   POST /process-csv (files from %s)\n", e.Ingest, c.cfg.ImportDir)
	}
	for _, n := range e.Nodes {
		fmt.Fprintf(w, "  %-9s %s\n", n.Name, n.URL)
	}
	fmt.Fprintf(w, "  postgres  %s\n  redis     %s\n  kafka     %s (in-process)\n", e.Postgres, e.Redis, e.Kafka)
}

// StopNode stops read node i (0-based), as an outage would.
func (c *Cluster) StopNode(ctx context.Context, i int) error {
	if c.nodes[i] == nil {
		return nil
	}
	err := c.nodes[i].Close(ctx)
	c.nodes[i] = nil
	return err
}

// StartNode starts read node i (0-based), if stopped, on its data.
func (c *Cluster) StartNode(ctx context.Context, i int) error {
	return c.StartNodeWith(ctx, i, NodeOptions{})
}

// NodeOptions change one start of a read node.
type NodeOptions struct {
	// Cache is the node's cache mode (default Config.Cache).
	Cache string
	// Store is the name of the node's store directory under Dir (default
	// the node's name). A new name starts the node on an empty store, into
	// which it pulls its slots again.
	Store string
}

// StartNodeWith starts read node i (0-based), if stopped, as o says.
func (c *Cluster) StartNodeWith(ctx context.Context, i int, o NodeOptions) error {
	if o.Store != "" && (o.Store != filepath.Base(o.Store) || o.Store == "." || o.Store == "..") {
		return fmt.Errorf("devcluster: store %q is not a directory name", o.Store)
	}
	if c.nodes[i] != nil {
		return nil
	}
	n, err := c.startNode(ctx, i, o)
	if err != nil {
		return err
	}
	c.nodes[i] = n
	return nil
}

// AddNode starts one more read node, named name, on a free port and an
// empty store, that joins the ring on start (readnode.Config.Join): a
// membership change that the read nodes prepare and activate. It returns
// the node's name and URL; Close stops it.
func (c *Cluster) AddNode(ctx context.Context, name string) (ring.Node, error) {
	port, err := localsvc.FreePort()
	if err != nil {
		return ring.Node{}, err
	}
	rc := readnode.DefaultConfig()
	rc.Name, rc.Addr = name, fmt.Sprintf("127.0.0.1:%d", port)
	rc.DataDir = filepath.Join(c.dir, name)
	rc.PostgresURL, rc.KafkaBrokers, rc.Join = c.pg.URL, []string{c.kafka.Addr()}, true
	rc.PollInterval = 100 * time.Millisecond
	rc.Logger = c.cfg.Logger.With("service", name)
	n, err := readnode.Start(ctx, rc)
	if err != nil {
		return ring.Node{}, err
	}
	c.joined = append(c.joined, n)
	return ring.Node{Name: name, URL: "http://" + rc.Addr}, nil
}

// Wait blocks until ctx is done.
func (c *Cluster) Wait(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Close stops everything, in reverse order, within ctx.
func (c *Cluster) Close(ctx context.Context) error {
	var errs []error
	if c.proxy != nil {
		errs = append(errs, c.proxy.Close(ctx))
	}
	for _, n := range append(c.nodes, c.joined...) {
		if n != nil {
			errs = append(errs, n.Close(ctx))
		}
	}
	if c.ingest != nil {
		errs = append(errs, c.ingest.Close(ctx))
	}
	if c.kafka != nil {
		c.kafka.Stop()
	}
	if c.redis != nil {
		errs = append(errs, c.redis.Stop())
	}
	if c.pg != nil {
		errs = append(errs, c.pg.Stop())
	}
	return errors.Join(errs...)
}
