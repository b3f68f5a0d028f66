package main

import (
	"context"
	"io"

	"github.com/promotion-service/promo/proxy"
	"github.com/promotion-service/promo/ring"
)

func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := proxy.DefaultConfig()
	fs := newFlagSet("proxy", "promo proxy --nodes a=http://...,b=... [flags]", stderr)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address")
	nodes := fs.String("nodes", "", "seeds, name=url,...: the proxy follows the ring their GET /cluster describes (required)")
	fs.IntVar(&cfg.Replicas, "replicas", cfg.Replicas, "replicas per slot of the ring computed from --nodes while no seed answers")
	fs.DurationVar(&cfg.RefreshInterval, "refresh-interval", cfg.RefreshInterval, "how often the proxy asks for GET /cluster (and at once on a 421)")
	fs.DurationVar(&cfg.HealthInterval, "health-interval", cfg.HealthInterval, "period of the active health checks")
	fs.DurationVar(&cfg.TryTimeout, "try-timeout", cfg.TryTimeout, "time one replica has to answer before the next is tried")
	hedged := fs.Bool("hedge", true, "also send a lookup not answered within the p95 of recent latencies to the next replica (at most 10% extra requests)")
	sf := bindServiceFlags(fs, &cfg.HTTP)
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, rest); err != nil {
		return err
	}
	cfg.Hedge.Disabled = !*hedged
	if cfg.Nodes, err = ring.ParseNodes(*nodes, true); err != nil {
		return err
	}
	log, err := sf.setup(ctx, stderr)
	if err != nil {
		return err
	}
	cfg.Logger, cfg.HTTP.Logger, cfg.Version = log, log, version
	p, err := proxy.Start(ctx, cfg)
	if err != nil {
		return withFlags(fs, err)
	}
	return serve(ctx, log, p)
}
