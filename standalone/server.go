package standalone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/ingest"
	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/pebblestore"
)

// Config configures a Server.
type Config struct {
	// Addr is the listen address (default 127.0.0.1:8080).
	Addr string
	// DataDir holds the store (default ./data).
	DataDir string
	// APIConfig holds the import API's settings: the import directory,
	// the token every POST requires, and the upload limits.
	ingest.APIConfig
	// KeepVersions is how many dataset versions are kept (default 2).
	KeepVersions int
	// MemoryBudget bounds the rows an import holds in memory (default 256 MiB).
	MemoryBudget int64
	// CacheSize is the Pebble block cache (default 128 MiB).
	CacheSize int64
	// MinRowsRatio is the activation guard: an import whose version has
	// fewer rows than MinRowsRatio times the serving version's is
	// committed but not activated; it ends held, and POST
	// /datasets/{version}/activate serves it on purpose (DefaultConfig:
	// 0.5; zero turns the guard off).
	MinRowsRatio float64
	// HTTP holds the server's timeouts and limits.
	HTTP httpserver.ServerConfig
	// Version is the build version, reported by /healthz.
	Version string
	// Logger receives operational messages (default slog.Default()).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of promo standalone.
func DefaultConfig() Config {
	return Config{
		Addr:         "127.0.0.1:8080",
		DataDir:      "./data",
		APIConfig:    ingest.DefaultAPIConfig(),
		KeepVersions: 2,
		MemoryBudget: 256 << 20,
		CacheSize:    128 << 20,
		MinRowsRatio: 0.5,
		HTTP:         httpserver.DefaultServerConfig("promo"),
		Version:      "dev",
		Logger:       slog.Default(),
	}
}

// Validate reports the first invalid field of c.
func (c *Config) Validate() error {
	if err := c.CheckListen(c.Addr); err != nil {
		return fmt.Errorf("standalone: %w", err)
	}
	if c.DataDir == "" {
		return errors.New("standalone: DataDir is required")
	}
	if c.KeepVersions < 1 {
		return fmt.Errorf("standalone: KeepVersions must be at least 1, got %d", c.KeepVersions)
	}
	if c.MinRowsRatio < 0 {
		return fmt.Errorf("standalone: MinRowsRatio must not be negative, got %g", c.MinRowsRatio)
	}
	return c.HTTP.Validate()
}

// Server is a running standalone server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   *pebblestore.Store
	ingest  *ingest.Service
	lookup  *lookup.Handler
	metrics *metrics.Set
	http    *fasthttp.Server
	ln      *httpserver.Listener
}

// Start opens the store, recovering from any crash, and starts serving.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, metrics: metrics.NewSet()}
	sc := pebblestore.DefaultConfig(cfg.DataDir)
	sc.KeepVersions = cfg.KeepVersions
	sc.MemoryBudget = cfg.MemoryBudget
	sc.CacheSize = cfg.CacheSize
	sc.MinRowsRatio = cfg.MinRowsRatio
	sc.Logger = cfg.Logger
	st, err := pebblestore.Open(ctx, sc)
	if err != nil {
		return nil, err
	}
	s.store = st
	ic := ingest.Config{APIConfig: cfg.APIConfig, History: history{st}, Logger: cfg.Logger, Metrics: s.metrics}
	s.ingest, err = ingest.New(ic, Sink(st))
	if err == nil {
		err = s.ingest.Restore(ctx)
	}
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	s.lookup = lookup.New(lookup.VersionsOf(st.Acquire))
	s.registerStoreMetrics()

	hc := cfg.HTTP
	hc.StreamRequestBody = true
	hc.Logger = cfg.Logger
	s.http = httpserver.NewServer(hc, s.handler())
	if s.ln, err = httpserver.Listen(cfg.Addr); err != nil {
		_ = s.ingest.Close(ctx)
		_ = st.Close()
		return nil, err
	}
	s.ln.Serve(s.http)
	cur := uint64(0)
	if vi, ok := st.Current(); ok {
		cur = vi.Version
	}
	s.log.Info("standalone server listening", "addr", s.ln.Addr(), "data_dir", cfg.DataDir,
		"import_dir", cfg.ImportDir, "dataset_version", cur, "auth", cfg.IngestToken != "")
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr() }

// Wait blocks until ctx is done or the server fails.
func (s *Server) Wait(ctx context.Context) error { return s.ln.Wait(ctx) }

// Close cancels a running import (which is discarded, and whose upload,
// if any, is cut), stops serving, and closes the store, within ctx.
func (s *Server) Close(ctx context.Context) error {
	errs := []error{s.ingest.Close(ctx)}
	errs = append(errs, s.http.ShutdownWithContext(ctx), s.store.Close())
	return errors.Join(errs...)
}

// Sink returns st as the sink of imports: each import builds a new version
// of the store.
func Sink(st *pebblestore.Store) ingest.Sink { return sink{st} }

type sink struct{ st *pebblestore.Store }

func (s sink) Begin(ctx context.Context, source string, workers int) (ingest.Batch, error) {
	b, err := s.st.Begin(ctx, source, workers)
	if err != nil {
		return nil, err
	}
	return batch{b}, nil
}

// batch translates the store's ErrHeld for the import's job.
type batch struct{ *pebblestore.Batch }

func (b batch) Commit(ctx context.Context) (int64, int64, error) {
	rows, dups, err := b.Batch.Commit(ctx)
	if errors.Is(err, pebblestore.ErrHeld) {
		err = fmt.Errorf("%w: %s", ingest.ErrHeld, strings.TrimPrefix(err.Error(), pebblestore.ErrHeld.Error()+": "))
	}
	return rows, dups, err
}

var _ ingest.Progresser = batch{}

// history keeps the statuses of imports in the store's metadata.
type history struct{ st *pebblestore.Store }

var _ ingest.History = history{}

func (h history) SaveImport(ctx context.Context, id int64, doc []byte, keep int) error {
	return h.st.SaveImport(id, doc, keep)
}

func (h history) LoadImports(ctx context.Context) ([][]byte, error) { return h.st.Imports() }

func (s *Server) registerStoreMetrics() {
	s.metrics.NewGauge("promo_dataset_version", func() float64 {
		if vi, ok := s.store.Current(); ok {
			return float64(vi.Version)
		}
		return 0
	})
	s.metrics.NewGauge("promo_dataset_rows", func() float64 {
		if vi, ok := s.store.Current(); ok {
			return float64(vi.Rows)
		}
		return 0
	})
	s.metrics.NewGauge("promo_dataset_epoch", func() float64 {
		if vi, ok := s.store.Current(); ok {
			return float64(vi.Epoch)
		}
		return 0
	})
	s.metrics.NewGauge("promo_dataset_activated_timestamp_seconds", func() float64 {
		if vi, ok := s.store.Current(); ok && vi.ActivatedAt != nil {
			return float64(vi.ActivatedAt.UnixNano()) / 1e9
		}
		return 0
	})
}

func (s *Server) handler() fasthttp.RequestHandler {
	r := s.ingest.Router(httpserver.NewMetrics(s.metrics))
	r.Read("/datasets", s.handleDatasets)
	r.Read("/datasets/current", s.handleCurrent)
	r.Write("/datasets/{version}/activate", s.handleActivate)
	r.Probe("/healthz", httpserver.Healthz(s.cfg.Version))
	r.Probe("/readyz", s.handleReadyz)
	r.Probe("/metrics", func(ctx *fasthttp.RequestCtx) { httpserver.WriteMetrics(ctx, s.metrics) })
	return lookup.Routes(r, s.lookup.HandlePath, s.lookup.HandleBatch)
}

func (s *Server) handleDatasets(ctx *fasthttp.RequestCtx) {
	httpserver.WriteJSON(ctx, fasthttp.StatusOK, struct {
		Datasets []pebblestore.VersionInfo `json:"datasets"`
	}{s.store.Versions()})
}

func (s *Server) handleCurrent(ctx *fasthttp.RequestCtx) {
	vi, ok := s.store.Current()
	if !ok {
		httpserver.Error(ctx, fasthttp.StatusNotFound, "no dataset has been imported yet")
		return
	}
	httpserver.WriteJSON(ctx, fasthttp.StatusOK, vi)
}

func (s *Server) handleActivate(ctx *fasthttp.RequestCtx) {
	raw, _ := ctx.UserValue("version").(string)
	v, err := strconv.ParseUint(raw, 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		httpserver.Error(ctx, fasthttp.StatusNotFound, "no such dataset version is kept", "version", raw)
		return
	case err != nil || v == 0:
		httpserver.Error(ctx, fasthttp.StatusBadRequest, "version must be a positive integer", "version", raw)
		return
	}
	vi, err := s.store.Activate(v)
	switch {
	case errors.Is(err, pebblestore.ErrUnknownVersion):
		httpserver.Error(ctx, fasthttp.StatusNotFound, "no such dataset version is kept", "version", v)
	case errors.Is(err, pebblestore.ErrNotReady):
		httpserver.Error(ctx, fasthttp.StatusConflict, err.Error(), "version", v)
	case err != nil:
		httpserver.Error(ctx, fasthttp.StatusInternalServerError, err.Error(), "version", v)
	default:
		httpserver.WriteJSON(ctx, fasthttp.StatusOK, vi)
	}
}

// handleReadyz is ready once the store is open, which Start guarantees;
// it reports the dataset that serves, if any.
func (s *Server) handleReadyz(ctx *fasthttp.RequestCtx) {
	out := map[string]any{"status": "ready", "dataset_version": 0}
	if vi, ok := s.store.Current(); ok {
		out["dataset_version"] = vi.Version
		out["rows"] = vi.Rows
	}
	httpserver.WriteJSON(ctx, fasthttp.StatusOK, out)
}
