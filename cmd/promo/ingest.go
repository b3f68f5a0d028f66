package main

import (
	"context"
	"io"

	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/ingestsvc"
)

func runIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := ingestsvc.DefaultConfig()
	fs := newFlagSet("ingest", "promo ingest --postgres-url URL --kafka-brokers HOST:PORT[,...] [flags]", stderr)
	sf := bindServerFlags(fs, &cfg.Addr, &cfg.APIConfig, &cfg.KeepVersions, &cfg.HTTP)
	fs.StringVar(&cfg.PostgresURL, "postgres-url", "", "PostgreSQL connection URL, e.g. postgres://promo@127.0.0.1:5432/promo (required)")
	brokers := fs.String("kafka-brokers", "", "comma-separated Kafka brokers, host:port (required)")
	fs.IntVar(&cfg.Partitions, "partitions", cfg.Partitions, "about this many tables per version, each holding slots of one replica set of the ring, filled by parallel COPY streams")
	fs.Float64Var(&cfg.MinRowsRatio, "min-rows-ratio", cfg.MinRowsRatio, "activation guard: a new version with fewer rows than this times the serving one's is committed but held, until POST /datasets/{version}/activate (0: off)")
	fs.DurationVar(&cfg.ActivateTimeout, "activate-timeout", cfg.ActivateTimeout, "bound on POST /datasets/{version}/activate?wait=true waiting for every slot to serve the version (504 beyond)")
	fs.DurationVar(&cfg.PostgresTimeout, "postgres-timeout", cfg.PostgresTimeout, "bound on every PostgreSQL call made for a request (starting an import, /datasets, /readyz); beyond it they answer 503")
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
	log, err := sf.setup(ctx, stderr)
	if err != nil {
		return err
	}
	cfg.Logger, cfg.HTTP.Logger, cfg.Version = log, log, version
	srv, err := ingestsvc.Start(ctx, cfg)
	if err != nil {
		return withFlags(fs, err)
	}
	return serve(ctx, log, srv)
}
