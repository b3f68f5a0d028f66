// Package devcluster runs the whole cluster on one machine without
// Docker: PostgreSQL (initdb on the first run, reused after), redis-server,
// the in-process Kafka-protocol broker, the ingest service, N read nodes and
// the proxy. Data lives under one directory and survives a restart; the
// broker's messages do not, which the read nodes do not need (they
// reconcile with PostgreSQL).
package devcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

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
	// Cache is the read nodes' cache mode (readnode.CacheOff by default).
	Cache string
	// Logger receives the services' messages (default slog.Default()).
	Logger *slog.Logger
}

// Cluster is a running cluster.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	pg      *localsvc.Postgres
	redis   *localsvc.Redis
	kafka   *localsvc.Kafka
	ingest  *ingestsvc.Server
	nodes   []*readnode.Node
	members []ring.Node
	proxy   *proxy.Proxy
	ports   []int // proxy, ingest, read nodes
}

// Endpoints are the addresses of a running cluster.
type Endpoints struct {
	Proxy, Ingest, Postgres, Redis, Kafka string
	Nodes                                 []ring.Node
}

// Start starts every service, in dependency order, and returns once all
// listen. On error, what was started is stopped.
func Start(ctx context.Context, cfg Config) (c *Cluster, err error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = min(2, cfg.Nodes)
	}
	if cfg.ImportDir == "" {
		cfg.ImportDir = "."
	}
	if cfg.Cache == "" {
		cfg.Cache = readnode.CacheOff
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.Dir == "":
		return nil, errors.New("devcluster: Dir is required")
	case cfg.Nodes < 1 || cfg.Replicas < 1 || cfg.Replicas > cfg.Nodes:
		return nil, fmt.Errorf("devcluster: need 1 <= replicas (%d) <= nodes (%d)", cfg.Replicas, cfg.Nodes)
	case cfg.Port < 0 || cfg.Port+10+cfg.Nodes > 65535:
		return nil, fmt.Errorf("devcluster: port %d leaves no room for the services after it", cfg.Port)
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
	c = &Cluster{cfg: cfg, log: cfg.Logger.With("component", "devcluster")}
	c.ports = make([]int, 2+cfg.Nodes) // proxy, ingest, nodes
	for i := range c.ports {
		switch {
		case cfg.Port == 0:
			if c.ports[i], err = localsvc.FreePort(); err != nil {
				return nil, err
			}
		case i < 2:
			c.ports[i] = cfg.Port + i
		default:
			c.ports[i] = cfg.Port + 10 + i - 2
		}
	}
	defer func() {
		if err != nil {
			c.Close(context.Background())
			c = nil
		}
	}()
	if c.pg, err = localsvc.StartPostgres(ctx, localsvc.PostgresConfig{Dir: filepath.Join(dir, "postgres"), Durable: true}); err != nil {
		return c, err
	}
	if c.redis, err = localsvc.StartRedis(ctx, localsvc.RedisConfig{Dir: dir}); err != nil {
		return c, err
	}
	if c.kafka, err = localsvc.StartKafka(0, events.Topic); err != nil {
		return c, err
	}
	ic := ingestsvc.DefaultConfig()
	ic.Addr = fmt.Sprintf("127.0.0.1:%d", c.ports[1])
	ic.PostgresURL, ic.KafkaBrokers, ic.ImportDir = c.pg.URL, []string{c.kafka.Addr()}, cfg.ImportDir
	ic.Logger = cfg.Logger.With("service", "ingest")
	if c.ingest, err = ingestsvc.Start(ctx, ic); err != nil {
		return c, err
	}
	for i := range cfg.Nodes {
		c.members = append(c.members, ring.Node{Name: fmt.Sprintf("node%d", i+1), URL: fmt.Sprintf("http://127.0.0.1:%d", c.ports[2+i])})
	}
	for i := range cfg.Nodes {
		n, err := c.startNode(ctx, i)
		if err != nil {
			return c, err
		}
		c.nodes = append(c.nodes, n)
	}
	pc := proxy.DefaultConfig()
	pc.Addr = fmt.Sprintf("127.0.0.1:%d", c.ports[0])
	pc.Nodes, pc.Replicas = c.members, cfg.Replicas
	pc.HealthInterval = 500 * time.Millisecond
	pc.Logger = cfg.Logger.With("service", "proxy")
	if c.proxy, err = proxy.Start(ctx, pc); err != nil {
		return c, err
	}
	return c, nil
}

func (c *Cluster) startNode(ctx context.Context, i int) (*readnode.Node, error) {
	m := c.members[i]
	rc := readnode.DefaultConfig()
	rc.Name, rc.Addr = m.Name, fmt.Sprintf("127.0.0.1:%d", c.ports[2+i])
	dir, _ := filepath.Abs(c.cfg.Dir)
	rc.DataDir = filepath.Join(dir, m.Name)
	rc.PostgresURL, rc.KafkaBrokers, rc.Nodes, rc.Replicas = c.pg.URL, []string{c.kafka.Addr()}, c.members, c.cfg.Replicas
	rc.Cache, rc.RedisURL = c.cfg.Cache, c.redis.URL
	rc.PollInterval = 100 * time.Millisecond
	rc.Logger = c.cfg.Logger.With("service", m.Name)
	return readnode.Start(ctx, rc)
}

// Endpoints returns where the services listen.
func (c *Cluster) Endpoints() Endpoints {
	return Endpoints{
		Proxy:    "http://" + c.proxy.Addr(),
		Ingest:   "http://" + c.ingest.Addr(),
		Postgres: c.pg.URL,
		Redis:    c.redis.URL,
		Kafka:    c.kafka.Addr(),
		Nodes:    c.members,
	}
}

// Print writes the endpoints for a person.
func (c *Cluster) Print(w io.Writer) {
	e := c.Endpoints()
	fmt.Fprintf(w, "promo devcluster is up (data in %s)\n", c.cfg.Dir)
	fmt.Fprintf(w, "  proxy     %s   GET /promotions/{id}\n", e.Proxy)
	fmt.Fprintf(w, "  ingest    %s   POST /process-csv (files from %s)\n", e.Ingest, c.cfg.ImportDir)
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

// StartNode starts read node i again on its data.
func (c *Cluster) StartNode(ctx context.Context, i int) error {
	if c.nodes[i] != nil {
		return nil
	}
	n, err := c.startNode(ctx, i)
	if err != nil {
		return err
	}
	c.nodes[i] = n
	return nil
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
	for _, n := range c.nodes {
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
