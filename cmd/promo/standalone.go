package main

import (
	"context"
	"io"

	"github.com/promotion-service/promo/standalone"
)

func runStandalone(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := standalone.DefaultConfig()
	memory, cache := byteSize(cfg.MemoryBudget), byteSize(cfg.CacheSize)
	fs := newFlagSet("standalone", "promo standalone [flags]", stderr)
	sf := bindServerFlags(fs, cfg.Addr, cfg.ImportDir, cfg.KeepVersions, &cfg.HTTP)
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of the Pebble store")
	fs.Var(&memory, "memory-budget", "memory for rows during an import before spilling to disk")
	fs.Var(&cache, "cache-size", "Pebble block cache size")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, rest); err != nil {
		return err
	}
	log, err := sf.setup(ctx, stderr)
	if err != nil {
		return err
	}
	cfg.Addr, cfg.ImportDir, cfg.IngestToken, cfg.Insecure = sf.addr, sf.importDir, sf.token, sf.insecure
	cfg.KeepVersions, cfg.MaxUploadBytes, cfg.UploadIdleTimeout = sf.keepVersions, int64(sf.maxUpload), sf.uploadIdle
	cfg.MemoryBudget, cfg.CacheSize = int64(memory), int64(cache)
	cfg.Logger, cfg.HTTP.Logger, cfg.Version = log, log, version
	srv, err := standalone.Start(ctx, cfg)
	if err != nil {
		return err
	}
	return serve(ctx, log, srv)
}
