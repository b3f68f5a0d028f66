// Package standalonetest starts standalone servers on loopback for the
// tests of other packages, like net/http/httptest.
package standalonetest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/promotion-service/promo/standalone"
)

// Start starts a standalone server on a free loopback port with fresh data
// and import directories, applies mutate to its config first, and stops it
// when the test ends. It returns the server and its base URL.
func Start(tb testing.TB, mutate ...func(*standalone.Config)) (*standalone.Server, string) {
	tb.Helper()
	cfg := standalone.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = tb.TempDir()
	cfg.ImportDir = tb.TempDir()
	cfg.CacheSize = 8 << 20
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.HTTP.Logger = cfg.Logger
	for _, m := range mutate {
		m(&cfg)
	}
	srv, err := standalone.Start(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("cannot start server: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			tb.Errorf("cannot close server: %v", err)
		}
	})
	return srv, "http://" + srv.Addr()
}

// WithToken returns a mutation that sets the server's ingest token.
func WithToken(token string) func(*standalone.Config) {
	return func(c *standalone.Config) { c.IngestToken = token }
}
