package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/localsvc/localsvctest"
)

// startIngestChild starts promo ingest as a child process.
func startIngestChild(t *testing.T, addr, pgURL, broker, importDir string) *child {
	t.Helper()
	return startProcess(t, "http://"+addr+"/readyz", "ingest", "--addr", addr, "--postgres-url", pgURL, "--kafka-brokers", broker, "--import-dir", importDir)
}

// TestSIGKILLIngestMidCopy kills the ingest process while it streams rows
// into PostgreSQL: after a restart, nothing of that import remains and the
// previous version is intact.
func TestSIGKILLIngestMidCopy(t *testing.T) {
	pgURL := localsvctest.Database(t)
	k := localsvctest.Kafka(t, events.Topic)
	importDir := t.TempDir()
	addr := freeAddr(t)
	f, _ := os.Create(filepath.Join(importDir, "v1.csv"))
	gen.Generate(f, gen.DefaultConfig(10_000))
	f.Close()
	c := startIngestChild(t, addr, pgURL, k.Addr(), importDir)
	resp, err := http.PostForm(c.url+"/process-csv?wait=true", url.Values{"filename": {"v1.csv"}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first import: %v %v\n%s", err, resp, c.log)
	}
	resp.Body.Close()

	// A large upload, half sent: rows are being copied when the kill comes.
	pr, pw := io.Pipe()
	go func() {
		if resp, err := http.Post(c.url+"/process-csv", "text/csv", pr); err == nil {
			resp.Body.Close()
		}
	}()
	gc := gen.DefaultConfig(200_000)
	gc.Seed = 9
	done := make(chan struct{})
	go func() {
		defer close(done)
		gen.Generate(pw, gc)
	}()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var building int
		conn.QueryRow(ctx, "SELECT count(*) FROM datasets WHERE state = 'building'").Scan(&building)
		var copying int
		conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY promo_v2_%'").Scan(&copying)
		if building == 1 && copying > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second import never started copying\n%s", c.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.kill(t)
	pw.CloseWithError(io.ErrClosedPipe)
	<-done

	c = startIngestChild(t, addr, pgURL, k.Addr(), importDir)
	var building, tables, v1rows int
	conn.QueryRow(ctx, "SELECT count(*) FROM datasets WHERE state = 'building'").Scan(&building)
	conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'promo_v2_%'").Scan(&tables)
	for p := range 16 {
		var n int
		// rows: the bytes of each group's records over promotion.PackedLen
		conn.QueryRow(ctx, fmt.Sprintf("SELECT coalesce(sum(length(recs)/32), 0) FROM promo_v1_p%03d", p)).Scan(&n)
		v1rows += n
	}
	if building != 0 || tables != 0 {
		t.Fatalf("after restart: %d building versions, %d tables of the killed import", building, tables)
	}
	if v1rows != 10_000 {
		t.Fatalf("version 1 holds %d rows after the crash, want 10000", v1rows)
	}
	resp, err = http.Get(c.url + "/datasets")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"version":1,"state":"committed"`) || strings.Contains(string(body), `"version":2`) {
		t.Fatalf("datasets after restart: %s", body)
	}
}

func TestIngestStartErrorsAreOneLine(t *testing.T) {
	k := localsvctest.Kafka(t, events.Topic)
	pgURL := localsvctest.Database(t)
	closed := freeAddr(t)
	f := func(want string, args ...string) {
		t.Helper()
		var stdout, stderr strings.Builder
		err := run(context.Background(), append([]string{"ingest", "--addr", "127.0.0.1:0"}, args...), &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("%v: got %q, want one line containing %q", args, err, want)
		}
	}
	f("invalid PostgreSQL URL", "--postgres-url", "::not a url", "--kafka-brokers", k.Addr())
	f("cannot connect to PostgreSQL", "--postgres-url", "postgres://x@"+closed+"/db", "--kafka-brokers", k.Addr())
	f("cannot reach a Kafka broker", "--postgres-url", pgURL, "--kafka-brokers", closed)
	f("not host:port", "--postgres-url", pgURL, "--kafka-brokers", "nohost")
	f("PostgresURL (--postgres-url, PROMO_POSTGRES_URL) is required", "--kafka-brokers", k.Addr())
}
