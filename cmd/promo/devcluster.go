package main

import (
	"context"
	"io"

	"github.com/promotion-service/promo/devcluster"
)

func runDevcluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg devcluster.Config
	fs := newFlagSet("devcluster", "promo devcluster --dir DIR [--nodes N] [--port P] [--import-dir D]", stderr)
	fs.StringVar(&cfg.Dir, "dir", "./devcluster-data", "directory of PostgreSQL's data and the read nodes' stores, kept between runs")
	fs.IntVar(&cfg.Nodes, "nodes", 3, "read nodes")
	fs.IntVar(&cfg.Replicas, "replicas", 2, "replicas per slot")
	fs.IntVar(&cfg.Port, "port", 8080, "proxy port; ingest is on port+1, read nodes on port+10...")
	fs.StringVar(&cfg.ImportDir, "import-dir", ".", "directory that POST /process-csv filename=... may read from")
	fs.StringVar(&cfg.Cache, "cache", "off", "read nodes' cache: off or redis")
	logLevel := fs.String("log-level", "warn", "log level of the services: debug, info, warn or error")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, rest); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	cfg.Logger = log
	c, err := devcluster.Start(ctx, cfg)
	if err != nil {
		return withFlags(fs, err)
	}
	c.Print(stdout)
	return serve(ctx, log, c)
}
