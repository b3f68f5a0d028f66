package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/promotion-service/promo/httpserver"
)

// Config configures a Service. The zero value of a field selects its
// default.
type Config struct {
	// APIConfig holds the settings a server passes on whole: the import
	// directory, the upload limits and the write token of Router.
	APIConfig
	// Workers is the number of parse goroutines (default GOMAXPROCS).
	Workers int
	// ChunkSize is the read size; no record may be longer (default 1 MiB).
	ChunkSize int
	// MaxErrors is how many rejected rows a job reports (default 100).
	MaxErrors int
	// KeepJobs is how many finished jobs GET /imports remembers (default 100).
	KeepJobs int
	// StoreTimeout bounds each call to the sink or the history made for
	// a request: the sink's Begin (for PostgreSQL: a connection, the
	// import lock, the version's tables) and each write of an import's
	// status. An import that cannot start within it fails with
	// ErrUnavailable (default 30 seconds).
	StoreTimeout time.Duration
	// History, if set, keeps the statuses of the last KeepJobs imports
	// across restarts (see Service.Restore); without it they are
	// remembered until the process ends.
	History History
	// Logger receives one line per import (default slog.Default()).
	Logger *slog.Logger
	// Metrics receives the import metrics (default a new set).
	Metrics *metrics.Set
}

// DefaultConfig returns the defaults of a Service; Metrics is a new set.
func DefaultConfig() Config {
	return Config{
		APIConfig:    DefaultAPIConfig(),
		Workers:      runtime.GOMAXPROCS(0),
		ChunkSize:    1 << 20,
		MaxErrors:    100,
		KeepJobs:     100,
		StoreTimeout: 30 * time.Second,
		Logger:       slog.Default(),
		Metrics:      metrics.NewSet(),
	}
}

func (c *Config) fillDefaults() {
	d := DefaultConfig()
	if c.ImportDir == "" {
		c.ImportDir = d.ImportDir
	}
	if c.Workers == 0 {
		c.Workers = d.Workers
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = d.ChunkSize
	}
	if c.MaxErrors == 0 {
		c.MaxErrors = d.MaxErrors
	}
	if c.KeepJobs == 0 {
		c.KeepJobs = d.KeepJobs
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = d.StoreTimeout
	}
	if c.MaxUploadBytes == 0 {
		c.MaxUploadBytes = d.MaxUploadBytes
	}
	if c.UploadIdleTimeout == 0 {
		c.UploadIdleTimeout = d.UploadIdleTimeout
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Metrics == nil {
		c.Metrics = d.Metrics
	}
}

// Validate reports the first invalid field of c.
func (c *Config) Validate() error {
	switch {
	case c.Workers < 1:
		return fmt.Errorf("ingest: Workers must be at least 1, got %d", c.Workers)
	case c.ChunkSize < 4<<10:
		return fmt.Errorf("ingest: ChunkSize must be at least 4 KiB, got %d", c.ChunkSize)
	case c.MaxErrors < 1 || c.KeepJobs < 1:
		return errors.New("ingest: MaxErrors and KeepJobs must be positive")
	case c.MaxUploadBytes < 1:
		return errors.New("ingest: MaxUploadBytes must be positive")
	case c.UploadMinRate < 0:
		return fmt.Errorf("ingest: UploadMinRate must not be negative, got %d", c.UploadMinRate)
	case c.UploadTimeout < 0:
		return fmt.Errorf("ingest: UploadTimeout must not be negative, got %v", c.UploadTimeout)
	case c.StoreTimeout < 0:
		return fmt.Errorf("ingest: StoreTimeout must not be negative, got %v", c.StoreTimeout)
	}
	return nil
}

// APIConfig is what a server that exposes the import API is configured
// with, besides its address: standalone.Config and ingestsvc.Config embed
// it and pass it whole to their Service. The zero value of a field selects
// its default.
type APIConfig struct {
	// ImportDir confines the files POST /process-csv filename=... may read
	// (default .).
	ImportDir string
	// IngestToken, when set, is required as a bearer token by every write
	// route of the server's Router.
	IngestToken string
	// Insecure allows a non-loopback listen address without IngestToken.
	Insecure bool
	// MaxUploadBytes bounds a CSV sent as the request body (default 1 TiB).
	MaxUploadBytes int64
	// UploadIdleTimeout fails an upload that sends nothing for this long
	// (default 1 minute).
	UploadIdleTimeout time.Duration
	// UploadMinRate, when positive, fails an upload whose client sends
	// fewer bytes per second than this, measured over each
	// UploadIdleTimeout of time spent waiting for it: a client that
	// trickles a byte now and then must not hold the only import slot
	// (DefaultAPIConfig: 16 KiB/s; zero: no minimum).
	UploadMinRate int64
	// UploadTimeout, when positive, fails an upload still running after
	// this long (default: no limit).
	UploadTimeout time.Duration
}

// DefaultAPIConfig returns the defaults of the import API: files from the
// working directory, uploads of up to 1 TiB that may idle for a minute
// and must send at least 16 KiB/s, and no token.
func DefaultAPIConfig() APIConfig {
	return APIConfig{
		ImportDir:         ".",
		MaxUploadBytes:    1 << 40,
		UploadIdleTimeout: time.Minute,
		UploadMinRate:     16 << 10,
	}
}

// CheckListen validates addr, the Addr of a server with c, and refuses a
// non-loopback one without IngestToken, unless Insecure: imports must not
// be open to a network by accident.
func (c *APIConfig) CheckListen(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("invalid Addr %q: %w", addr, err)
	}
	if !httpserver.IsLoopback(addr) && c.IngestToken == "" && !c.Insecure {
		return fmt.Errorf("refusing to listen on non-loopback address %s without an ingest token: set IngestToken, or Insecure to accept unauthenticated imports", addr)
	}
	return nil
}
