package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/promotion-service/promo/api"
	"github.com/promotion-service/promo/standalone"
)

func runStandalone(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := standalone.DefaultConfig()
	memory, cache := byteSize(cfg.MemoryBudget), byteSize(cfg.CacheSize)
	maxUpload := byteSize(1 << 40)
	fs := newFlagSet("standalone", "promo standalone [flags]", stderr)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of the Pebble store")
	fs.StringVar(&cfg.ImportDir, "import-dir", cfg.ImportDir, "directory that POST /process-csv filename=... may read from")
	fs.StringVar(&cfg.IngestToken, "ingest-token", "", "bearer token required by POST requests (empty: none); prefer PROMO_INGEST_TOKEN, which ps does not show")
	fs.IntVar(&cfg.KeepVersions, "keep-versions", cfg.KeepVersions, "dataset versions kept for rollback, the current one included")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "allow a non-loopback --addr without --ingest-token")
	fs.Var(&memory, "memory-budget", "memory for rows during an import before spilling to disk")
	fs.Var(&cache, "cache-size", "Pebble block cache size")
	fs.Var(&maxUpload, "max-upload-size", "largest CSV accepted as a request body")
	fs.DurationVar(&cfg.HTTP.ReadTimeout, "read-timeout", cfg.HTTP.ReadTimeout, "time to read a request's headers")
	fs.DurationVar(&cfg.HTTP.WriteTimeout, "write-timeout", cfg.HTTP.WriteTimeout, "time to write a response")
	fs.DurationVar(&cfg.HTTP.IdleTimeout, "idle-timeout", cfg.HTTP.IdleTimeout, "time a keep-alive connection may stay idle")
	fs.DurationVar(&cfg.UploadIdleTimeout, "upload-idle-timeout", time.Minute, "an upload that sends nothing for this long fails")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	pprofAddr := fs.String("pprof-addr", "", "serve net/http/pprof on this address, e.g. 127.0.0.1:6060 (off when empty)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected argument %q", rest[0])
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	cfg.MemoryBudget, cfg.CacheSize, cfg.MaxUploadBytes = int64(memory), int64(cache), int64(maxUpload)
	cfg.Logger = log
	cfg.Version = version
	cfg.HTTP.Logger = log

	if *pprofAddr != "" {
		// Profiles include the command line, and so a token passed as a
		// flag: never expose them beyond this machine by accident.
		if !api.IsLoopback(*pprofAddr) && !cfg.Insecure {
			return fmt.Errorf("refusing to serve pprof on non-loopback address %s (it exposes the command line, tokens included): use a loopback address or --insecure", *pprofAddr)
		}
		if err := servePprof(ctx, *pprofAddr, log); err != nil {
			return err
		}
	}
	srv, err := standalone.Start(ctx, cfg)
	if err != nil {
		return err
	}
	err = srv.Wait(ctx)
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cerr := srv.Close(sctx); cerr != nil && err == nil {
		err = cerr
	}
	return err
}
