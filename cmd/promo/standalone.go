package main

import (
	"context"
	"io"

	"github.com/promotion-service/promo/standalone"
)

func runStandalone(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := standalone.DefaultConfig()
	fs := newFlagSet("standalone", "promo standalone [flags]", stderr)
	sf := bindServerFlags(fs, &cfg.Addr, &cfg.APIConfig, &cfg.KeepVersions, &cfg.HTTP)
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of the Pebble store")
	fs.Var((*byteSize)(&cfg.MemoryBudget), "memory-budget", "memory for rows during an import before spilling to disk")
	fs.Var((*byteSize)(&cfg.CacheSize), "cache-size", "Pebble block cache size")
	fs.Float64Var(&cfg.MinRowsRatio, "min-rows-ratio", cfg.MinRowsRatio, "activation guard: a new version with fewer rows than this times the serving one's is kept but not activated (0: off)")
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
	cfg.Logger, cfg.HTTP.Logger, cfg.Version = log, log, version
	srv, err := standalone.Start(ctx, cfg)
	if err != nil {
		return withFlags(fs, err)
	}
	return serve(ctx, log, srv)
}
