package main

import (
	"context"
	"fmt"
	"io"

	"github.com/VictoriaMetrics/metrics"

	"github.com/promotion-service/promo/cache"
	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/readnode"
	"github.com/promotion-service/promo/ring"
)

func runReadnode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := readnode.DefaultConfig()
	cc := cache.DefaultConfig("")
	blockCache := byteSize(cfg.CacheSize)
	fs := newFlagSet("readnode", "promo readnode --name N [--nodes a=http://...,b=...] [--join] --postgres-url URL --kafka-brokers B [flags]", stderr)
	fs.StringVar(&cfg.Name, "name", "", "this node's name in the ring (required)")
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address")
	fs.StringVar(&cfg.URL, "url", "", "this node's URL in the ring, as the proxy and clients reach it (default http://<addr>)")
	fs.BoolVar(&cfg.Join, "join", false, "add this node to the ring on start, unless it is a member already")
	fs.DurationVar(&cfg.DropGrace, "drop-grace", cfg.DropGrace, "after a ring change, how long the node still answers the slots it lost")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory of the node's Pebble store (default ./data-<name>)")
	fs.StringVar(&cfg.PostgresURL, "postgres-url", "", "PostgreSQL to pull versions from (required)")
	brokers := fs.String("kafka-brokers", "", "comma-separated Kafka brokers, host:port (required)")
	nodes := fs.String("nodes", "", "seeds the ring, name=url,..., on an empty database (default: read the ring from PostgreSQL)")
	fs.IntVar(&cfg.Replicas, "replicas", cfg.Replicas, "replicas per slot of a ring seeded from --nodes")
	cacheMode := fs.String("cache", cache.ModeOff, "lookup cache: off (default, Pebble answers faster) or redis (read-through, seed style)")
	fs.StringVar(&cc.URL, "redis-url", "", "Redis for --cache=redis, redis://host:port/db")
	fs.DurationVar(&cc.TTL, "cache-ttl", cc.TTL, "TTL of cached answers")
	fs.Var(&blockCache, "cache-size", "Pebble block cache size")
	fs.IntVar(&cfg.KeepVersions, "keep-versions", cfg.KeepVersions, "versions kept in the local store")
	sf := bindServiceFlags(fs, &cfg.HTTP)
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, rest); err != nil {
		return err
	}
	if cfg.KafkaBrokers, err = events.ParseBrokers(*brokers); err != nil {
		return err
	}
	if *nodes != "" {
		if cfg.Nodes, err = ring.ParseNodes(*nodes, true); err != nil {
			return err
		}
	}
	log, err := sf.setup(ctx, stderr)
	if err != nil {
		return err
	}
	cfg.CacheSize = int64(blockCache)
	cfg.Logger, cfg.HTTP.Logger, cfg.Version = log, log, version
	// The node's own checks first, and no cache is built for a node that
	// cannot start.
	if err := cfg.Validate(); err != nil {
		return withFlags(fs, err)
	}
	cfg.Metrics = metrics.NewSet()
	cc.Logger, cc.Metrics = log, cfg.Metrics
	if cfg.NewCache, err = cache.ForMode(*cacheMode, cc); err != nil {
		// ForMode names its mode and Config.URL, which withFlags cannot
		// map to this command's flags.
		return fmt.Errorf("%w (--cache, PROMO_CACHE; --redis-url, PROMO_REDIS_URL)", err)
	}
	n, err := readnode.Start(ctx, cfg)
	if err != nil {
		return withFlags(fs, err)
	}
	return serve(ctx, log, n)
}
