// Package ingestsvc is the cluster's write service, promo ingest: the
// import API of package ingest over PostgreSQL (pgstore), and the outbox
// relay that announces each committed version on Kafka.
package ingestsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/ingest"
	"github.com/promotion-service/promo/pgstore"
	"github.com/promotion-service/promo/promotion"
)

// Config configures a Server.
type Config struct {
	// Addr is the listen address (default 127.0.0.1:8081).
	Addr string
	// PostgresURL is the write store (required).
	PostgresURL string
	// KafkaBrokers receive the dataset events (required).
	KafkaBrokers []string
	// APIConfig holds the import API's settings: the import directory,
	// the token every POST requires, and the upload limits.
	ingest.APIConfig
	// KeepVersions is how many committed versions are kept (default 2).
	KeepVersions int
	// Partitions is the number of tables (and parallel COPY streams) per
	// version (default 16).
	Partitions int
	// PostgresTimeout bounds every PostgreSQL call made on a request's
	// behalf: starting an import (connection, import lock, tables) and
	// the reads of /datasets and /readyz. A PostgreSQL that does not
	// answer in time makes them answer 503 (default, and when zero, 10
	// seconds).
	PostgresTimeout time.Duration
	// MaintainInterval is how often, while no import runs, the tables of
	// imports that died (left building) and of versions past KeepVersions
	// are dropped (default, and when zero, 10 seconds).
	MaintainInterval time.Duration
	// MinRowsRatio is the activation guard: an import whose version has
	// fewer rows than MinRowsRatio times the serving version's is
	// committed but held: read nodes may prepare it, and the cluster
	// serves it only after POST /datasets/{version}/activate
	// (DefaultConfig: 0.5; zero turns the guard off).
	MinRowsRatio float64
	// ActivateTimeout bounds how long POST /datasets/{version}/activate
	// ?wait=true waits for every slot to serve the version (default, and
	// when zero, 2 minutes); beyond it, it answers 504 with the state.
	ActivateTimeout time.Duration
	// HTTP holds the server's timeouts and limits.
	HTTP httpserver.ServerConfig
	// Version is the build version, reported by /healthz.
	Version string
	// Logger receives operational messages (default slog.Default()).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of promo ingest.
func DefaultConfig() Config {
	return Config{
		Addr:             "127.0.0.1:8081",
		APIConfig:        ingest.DefaultAPIConfig(),
		KeepVersions:     2,
		Partitions:       16,
		PostgresTimeout:  10 * time.Second,
		MaintainInterval: 10 * time.Second,
		MinRowsRatio:     0.5,
		ActivateTimeout:  2 * time.Minute,
		HTTP:             httpserver.DefaultServerConfig("promo-ingest"),
		Version:          "dev",
		Logger:           slog.Default(),
	}
}

// Validate reports the first invalid field of c.
func (c *Config) Validate() error {
	if err := c.CheckListen(c.Addr); err != nil {
		return fmt.Errorf("ingestsvc: %w", err)
	}
	if c.PostgresURL == "" {
		return errors.New("ingestsvc: PostgresURL is required")
	}
	if len(c.KafkaBrokers) == 0 {
		return errors.New("ingestsvc: KafkaBrokers must name at least one broker")
	}
	if c.PostgresTimeout < 0 || c.ActivateTimeout < 0 {
		return fmt.Errorf("ingestsvc: PostgresTimeout and ActivateTimeout must not be negative, got %v and %v", c.PostgresTimeout, c.ActivateTimeout)
	}
	if c.MinRowsRatio < 0 {
		return fmt.Errorf("ingestsvc: MinRowsRatio must not be negative, got %g", c.MinRowsRatio)
	}
	if c.MaintainInterval < 0 {
		return fmt.Errorf("ingestsvc: MaintainInterval must not be negative, got %v", c.MaintainInterval)
	}
	return c.HTTP.Validate()
}

// Server is a running ingest service.
type Server struct {
	cfg     Config
	log     *slog.Logger
	pg      *pgstore.Store
	pub     *events.Publisher
	relay   *pgstore.Relay
	ingest  *ingest.Service
	metrics *metrics.Set
	http    *fasthttp.Server
	ln      *httpserver.Listener
	stop    context.CancelFunc
	closing chan struct{} // closed when Close starts: ends waits of activations
	relayed chan struct{}
	// pending is the outbox backlog last counted, and activation the
	// cluster's activation last read: /metrics reads them without
	// waiting for PostgreSQL.
	pending    atomic.Int64
	activation atomic.Pointer[pgstore.Activation]
	// ring holds the ring gauges, refreshed by watchRing.
	ring struct {
		version     atomic.Uint64
		rebalancing atomic.Bool
		toMove      atomic.Int64
		moved       atomic.Int64
	}
	ringKick chan struct{}
}

// Start connects to PostgreSQL (applying the schema) and checks the
// brokers, each failing with a one-line error, then serves.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PostgresTimeout == 0 {
		cfg.PostgresTimeout = DefaultConfig().PostgresTimeout
	}
	if cfg.MaintainInterval == 0 {
		cfg.MaintainInterval = DefaultConfig().MaintainInterval
	}
	if cfg.ActivateTimeout == 0 {
		cfg.ActivateTimeout = DefaultConfig().ActivateTimeout
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, metrics: metrics.NewSet(), relayed: make(chan struct{}), ringKick: make(chan struct{}, 1),
		closing: make(chan struct{})}
	pc := pgstore.DefaultConfig(cfg.PostgresURL)
	pc.KeepVersions = cfg.KeepVersions
	pc.Partitions = cfg.Partitions
	pc.MinRowsRatio = cfg.MinRowsRatio
	pc.Logger = cfg.Logger
	pg, err := pgstore.Open(ctx, pc)
	if err != nil {
		return nil, err
	}
	s.pg = pg
	if err := events.CheckBrokers(ctx, cfg.KafkaBrokers); err != nil {
		pg.Close()
		return nil, err
	}
	s.pub = events.NewPublisher(cfg.KafkaBrokers)
	s.relay = pgstore.NewRelay(pg, s.pub, pgstore.RelayConfig{Logger: cfg.Logger, Metrics: s.metrics})
	ic := ingest.Config{APIConfig: cfg.APIConfig, StoreTimeout: cfg.PostgresTimeout, History: history{pg},
		Logger: cfg.Logger, Metrics: s.metrics}
	s.ingest, err = ingest.New(ic, sink{pg: pg, relay: s.relay})
	if err == nil {
		err = s.ingest.Restore(ctx)
	}
	if err != nil {
		pg.Close()
		return nil, err
	}
	s.metrics.NewGauge("promo_outbox_pending", func() float64 {
		return float64(s.pending.Load())
	})
	s.registerRingMetrics()
	s.metrics.NewGauge("promo_dataset_epoch", func() float64 {
		if a := s.activation.Load(); a != nil {
			return float64(a.Epoch)
		}
		return 0
	})
	s.metrics.NewGauge("promo_dataset_version", func() float64 {
		if a := s.activation.Load(); a != nil {
			return float64(a.Version)
		}
		return 0
	})
	s.metrics.NewGauge("promo_dataset_activated_timestamp_seconds", func() float64 {
		if a := s.activation.Load(); a != nil && a.ActivatedAt != nil {
			return float64(a.ActivatedAt.UnixNano()) / 1e9
		}
		return 0
	})
	hc := cfg.HTTP
	hc.StreamRequestBody = true
	hc.Logger = cfg.Logger
	s.http = httpserver.NewServer(hc, s.handler())
	if s.ln, err = httpserver.Listen(cfg.Addr); err != nil {
		pg.Close()
		return nil, err
	}
	rctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go func() {
		defer close(s.relayed)
		go s.maintain(rctx)
		go s.countPending(rctx)
		go s.watchRing(rctx)
		s.relay.Run(rctx)
	}()
	s.ln.Serve(s.http)
	s.log.Info("ingest service listening", "addr", s.ln.Addr(), "postgres", pg.Where(),
		"kafka", cfg.KafkaBrokers, "import_dir", cfg.ImportDir, "auth", cfg.IngestToken != "")
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr() }

// Store returns the PostgreSQL store, for tests.
func (s *Server) Store() *pgstore.Store { return s.pg }

// Wait blocks until ctx is done or the server fails.
func (s *Server) Wait(ctx context.Context) error { return s.ln.Wait(ctx) }

// Close cancels a running import (its rows are dropped), stops serving and
// the relay (pending events go out after the next start), and closes the
// connections, within ctx.
func (s *Server) Close(ctx context.Context) error {
	close(s.closing)
	errs := []error{s.ingest.Close(ctx), s.http.ShutdownWithContext(ctx)}
	s.stop()
	<-s.relayed
	errs = append(errs, s.pub.Close())
	s.pg.Close()
	return errors.Join(errs...)
}

func (s *Server) handler() fasthttp.RequestHandler {
	r := s.ingest.Router(httpserver.NewMetrics(s.metrics))
	r.Read("/datasets", s.handleDatasets)
	r.Read("/datasets/current", s.handleCurrent)
	r.Write("/datasets/{version}/activate", s.handleActivate)
	s.clusterRoutes(r)
	r.Probe("/healthz", httpserver.Healthz(s.cfg.Version))
	r.Probe("/readyz", s.handleReadyz)
	r.Probe("/metrics", func(ctx *fasthttp.RequestCtx) { httpserver.WriteMetrics(ctx, s.metrics) })
	return r.Handler()
}

// pgContext bounds a PostgreSQL call made for a request. It does not
// derive from the request's *fasthttp.RequestCtx: pgx may keep using a
// context (a pool's background dial) after the handler returns, when
// fasthttp already reuses the RequestCtx for another request.
func (s *Server) pgContext(*fasthttp.RequestCtx) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.cfg.PostgresTimeout)
}

func (s *Server) handleDatasets(ctx *fasthttp.RequestCtx) {
	pctx, cancel := s.pgContext(ctx)
	defer cancel()
	vs, err := s.pg.Versions(pctx)
	if err != nil {
		storeError(ctx, err)
		return
	}
	if vs == nil {
		vs = []pgstore.Version{}
	}
	httpserver.WriteJSON(ctx, fasthttp.StatusOK, struct {
		Datasets []pgstore.Version `json:"datasets"`
	}{vs})
}

// handleCurrent answers the version the cluster serves: the newest one the
// read nodes activated.
func (s *Server) handleCurrent(ctx *fasthttp.RequestCtx) {
	pctx, cancel := s.pgContext(ctx)
	defer cancel()
	v, ok, err := s.pg.Active(pctx)
	switch {
	case err != nil:
		storeError(ctx, err)
	case !ok:
		latest, committed, _ := s.pg.Latest(pctx)
		if committed {
			httpserver.Error(ctx, fasthttp.StatusNotFound, "no version is active yet: read nodes activate a committed version once every slot is prepared", "latest_committed", latest.Version)
			return
		}
		httpserver.Error(ctx, fasthttp.StatusNotFound, "no dataset has been committed yet")
	default:
		httpserver.WriteJSON(ctx, fasthttp.StatusOK, v)
	}
}

func (s *Server) handleReadyz(ctx *fasthttp.RequestCtx) {
	pctx, cancel := s.pgContext(ctx)
	defer cancel()
	if err := s.pg.Ping(pctx); err != nil {
		httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, "PostgreSQL does not answer: "+err.Error())
		return
	}
	httpserver.WriteJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "ready"})
}

func storeError(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, pgstore.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		ctx.Response.Header.Set("Retry-After", "5")
		httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, err.Error())
		return
	}
	httpserver.Error(ctx, fasthttp.StatusInternalServerError, err.Error())
}

// sink adapts pgstore to ingest.Sink, translating its errors, and kicks
// the relay when a version commits.
type sink struct {
	pg    *pgstore.Store
	relay *pgstore.Relay
}

func (s sink) Begin(ctx context.Context, source string, workers int) (ingest.Batch, error) {
	b, err := s.pg.Begin(ctx, source, workers)
	if err != nil {
		return nil, translate(err)
	}
	// Read nodes hear of the version as soon as it is durable, not after
	// Commit has dropped the oldest one; held versions too (nodes prepare
	// them, so that activating one on purpose is quick).
	b.OnDurable(s.relay.Kick)
	return batch{Batch: b, relay: s.relay}, nil
}

// history keeps the statuses of imports in PostgreSQL.
type history struct{ pg *pgstore.Store }

var _ ingest.History = history{}

func (h history) SaveImport(ctx context.Context, id int64, doc []byte, keep int) error {
	return translate(h.pg.SaveImport(ctx, id, doc, keep))
}

func (h history) LoadImports(ctx context.Context) ([][]byte, error) {
	docs, err := h.pg.Imports(ctx)
	return docs, translate(err)
}

type batch struct {
	*pgstore.Batch
	relay *pgstore.Relay
}

func (b batch) Add(worker int, r *promotion.Record, line int64) error {
	if err := b.Batch.Add(worker, r, line); err != nil {
		return translate(err)
	}
	return nil
}

func (b batch) Commit(ctx context.Context) (int64, int64, error) {
	rows, dups, err := b.Batch.Commit(ctx)
	if err == nil {
		b.relay.Kick()
	}
	return rows, dups, translate(err)
}

func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgstore.ErrBusy):
		return fmt.Errorf("%w (in another ingest process): %v", ingest.ErrBusy, err)
	case errors.Is(err, pgstore.ErrUnavailable):
		return fmt.Errorf("%w: %v", ingest.ErrUnavailable, err)
	case errors.Is(err, pgstore.ErrHeld):
		return fmt.Errorf("%w: %s", ingest.ErrHeld, strings.TrimPrefix(err.Error(), pgstore.ErrHeld.Error()+": "))
	case errors.Is(err, pgstore.ErrTooManyDuplicates):
		return fmt.Errorf("%w: %v", ingest.ErrTooManyDuplicates, err)
	}
	return err
}

// countPending counts the outbox backlog and reads the activation for
// /metrics every second, each bounded by PostgresTimeout. While
// PostgreSQL does not answer, the last values stay.
func (s *Server) countPending(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.PostgresTimeout)
		n, err := s.relay.Pending(cctx)
		if err == nil {
			s.pending.Store(int64(n))
		}
		if a, err := s.pg.Activation(cctx); err == nil {
			s.activation.Store(&a)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maintain removes leftovers of dead imports and old versions every
// MaintainInterval while no import runs.
func (s *Server) maintain(ctx context.Context) {
	t := time.NewTicker(s.cfg.MaintainInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.ingest.Running() != nil {
			continue
		}
		if err := s.pg.Maintain(ctx); err != nil && ctx.Err() == nil {
			s.log.Debug("maintenance postponed", "err", err)
		}
	}
}
