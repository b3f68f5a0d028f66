package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/ingest"
)

// serviceFlags are the flags of every long-running promo service: its
// HTTP timeouts, logging and profiling.
type serviceFlags struct {
	logLevel, pprofAddr string
	// insecure is the import services' --insecure, which also allows
	// pprof on a non-loopback address; nil for the other services.
	insecure *bool
}

// bindServiceFlags binds the service flags and the timeouts of http.
func bindServiceFlags(fs *flag.FlagSet, http *httpserver.ServerConfig) *serviceFlags {
	f := &serviceFlags{}
	fs.DurationVar(&http.ReadTimeout, "read-timeout", http.ReadTimeout, "time to read a request's headers")
	fs.DurationVar(&http.WriteTimeout, "write-timeout", http.WriteTimeout, "time to write a response")
	fs.DurationVar(&http.IdleTimeout, "idle-timeout", http.IdleTimeout, "time a keep-alive connection may stay idle")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.pprofAddr, "pprof-addr", "", "serve net/http/pprof on this address, e.g. 127.0.0.1:6060 (off when empty)")
	return f
}

// bindServerFlags binds the flags of the services that import, standalone
// and ingest, straight into their Config, with its values as defaults: the
// listen address, the import API's settings, the versions kept, and the
// service flags.
func bindServerFlags(fs *flag.FlagSet, addr *string, api *ingest.APIConfig, keepVersions *int, http *httpserver.ServerConfig) *serviceFlags {
	f := bindServiceFlags(fs, http)
	f.insecure = &api.Insecure
	fs.StringVar(addr, "addr", *addr, "listen address")
	fs.StringVar(&api.ImportDir, "import-dir", api.ImportDir, "directory that POST /process-csv filename=... may read from")
	fs.StringVar(&api.IngestToken, "ingest-token", api.IngestToken, "bearer token required by POST requests (empty: none); prefer PROMO_INGEST_TOKEN, which ps does not show")
	fs.BoolVar(&api.Insecure, "insecure", api.Insecure, "allow a non-loopback --addr without --ingest-token")
	fs.IntVar(keepVersions, "keep-versions", *keepVersions, "dataset versions kept for rollback, the current one included")
	fs.Var((*byteSize)(&api.MaxUploadBytes), "max-upload-size", "largest CSV accepted as a request body")
	fs.DurationVar(&api.UploadIdleTimeout, "upload-idle-timeout", api.UploadIdleTimeout, "an upload that sends nothing for this long fails")
	fs.Var((*byteSize)(&api.UploadMinRate), "upload-min-rate", "an upload that sends less than this per second, over each --upload-idle-timeout spent waiting for it, fails (0: no minimum)")
	fs.DurationVar(&api.UploadTimeout, "upload-timeout", api.UploadTimeout, "an upload still running after this long fails (0: no limit)")
	return f
}

// setup returns the logger and starts pprof if asked.
func (f *serviceFlags) setup(ctx context.Context, stderr io.Writer) (*slog.Logger, error) {
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return nil, err
	}
	if f.pprofAddr != "" {
		// Profiles include the command line, and so a token passed as a
		// flag: never expose them beyond this machine by accident.
		if !httpserver.IsLoopback(f.pprofAddr) && (f.insecure == nil || !*f.insecure) {
			return nil, fmt.Errorf("refusing to serve pprof on non-loopback address %s (it exposes the command line, tokens included): use a loopback address or --insecure", f.pprofAddr)
		}
		if err := servePprof(ctx, f.pprofAddr, log); err != nil {
			return nil, err
		}
	}
	return log, nil
}

// service is a started server.
type service interface {
	Wait(ctx context.Context) error
	Close(ctx context.Context) error
}

// serve runs srv until ctx ends (SIGINT, SIGTERM) and shuts it down within
// 30 seconds.
func serve(ctx context.Context, log *slog.Logger, srv service) error {
	err := srv.Wait(ctx)
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cerr := srv.Close(sctx); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// noArgs fails for positional arguments a command does not take.
func noArgs(fs *flag.FlagSet, rest []string) error {
	if len(rest) > 0 {
		fs.Usage()
		return fmt.Errorf("%w: unexpected argument %q", errUsage, rest[0])
	}
	return nil
}
