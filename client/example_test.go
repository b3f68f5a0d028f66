package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/promotion-service/promo/client"
	"github.com/promotion-service/promo/standalone"
)

// A Go service looks promotions up with the client. Here the server is a
// standalone one started in this process, with three promotions; against
// a cluster the seeds are read nodes (or the proxy), and the client routes
// each id to the nodes that hold it.
func Example() {
	ctx := context.Background()
	base, stop := exampleServer(ctx, ""+
		"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118,60.683466,2018-08-04 05:32:31 +0200 CEST\n"+
		"e2649ca5-7e05-4d53-a8ff-919917a4922e,66.640497,2018-08-22 18:34:11 +0200 CEST\n"+
		"3f6c7f4a-2a3c-4a59-9ae7-8c5bd3c1e3a1,0.1,2030-01-01T00:00:00Z\n")
	defer stop()

	c, err := client.New(ctx, client.Config{Seeds: []string{base}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	p, err := c.Get(ctx, "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.ID, p.Price, p.ExpirationDate)

	_, err = c.Get(ctx, "00000000-0000-4000-8000-000000000000")
	fmt.Println("unknown id:", errors.Is(err, client.ErrNotFound))

	found, missing, err := c.BatchGet(ctx, []string{
		"e2649ca5-7e05-4d53-a8ff-919917a4922e",
		"00000000-0000-4000-8000-000000000000",
		"3F6C7F4A-2A3C-4A59-9AE7-8C5BD3C1E3A1",
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range found {
		fmt.Println(p.ID, p.Price, p.ExpirationDate.Format("2006-01-02"))
	}
	fmt.Println("missing:", missing)
	// Output:
	// d018ef0b-dbd9-48f1-ac1a-eb4d90e57118 60.68 2018-08-04 03:32:31 +0000 UTC
	// unknown id: true
	// e2649ca5-7e05-4d53-a8ff-919917a4922e 66.64 2018-08-22
	// 3f6c7f4a-2a3c-4a59-9ae7-8c5bd3c1e3a1 0.1 2030-01-01
	// missing: [00000000-0000-4000-8000-000000000000]
}

// exampleServer starts a standalone server in a temporary directory,
// imports csv into it and returns its URL and a function that stops it.
func exampleServer(ctx context.Context, csv string) (string, func()) {
	dir, err := os.MkdirTemp("", "promo-client-example-")
	if err != nil {
		log.Fatal(err)
	}
	cfg := standalone.DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.ImportDir, cfg.CacheSize = "127.0.0.1:0", filepath.Join(dir, "data"), dir, 8<<20
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.HTTP.Logger = cfg.Logger
	srv, err := standalone.Start(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	base := "http://" + srv.Addr()
	resp, err := http.Post(base+"/process-csv?wait=true", "text/csv", strings.NewReader(csv))
	if err != nil || resp.StatusCode != http.StatusOK {
		log.Fatalf("import: %v %v", err, resp)
	}
	resp.Body.Close()
	return base, func() {
		srv.Close(ctx)
		os.RemoveAll(dir)
	}
}
