package ingestsvc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/localsvc/localsvctest"
)

// getBody returns the status and JSON body of a GET.
func getBody(t *testing.T, u string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET %s: %v: %s", u, err, b)
	}
	return resp.StatusCode, m
}

func TestConfigErrors(t *testing.T) {
	f := func(name string, mutate func(*Config), want string) {
		t.Helper()
		c := DefaultConfig()
		c.PostgresURL, c.KafkaBrokers = "postgres://x@127.0.0.1:1/x", []string{"127.0.0.1:1"}
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want an error naming %q", name, err, want)
		}
	}
	f("no PostgreSQL", func(c *Config) { c.PostgresURL = "" }, "PostgresURL")
	f("no broker", func(c *Config) { c.KafkaBrokers = nil }, "KafkaBrokers")
	f("negative PostgreSQL timeout", func(c *Config) { c.PostgresTimeout = -time.Second }, "PostgresTimeout")
	f("bad address", func(c *Config) { c.Addr = "no-port" }, "no-port")
	f("non-loopback without a token", func(c *Config) { c.Addr = "0.0.0.0:8081" }, "token")
	c := DefaultConfig()
	c.PostgresURL, c.KafkaBrokers = "postgres://x@127.0.0.1:1/x", []string{"127.0.0.1:1"}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults with a URL and a broker: %v", err)
	}
}

// A start against an unreachable PostgreSQL or broker fails with one line.
func TestStartErrors(t *testing.T) {
	k := localsvctest.Kafka(t, events.Topic)
	c := DefaultConfig()
	c.Addr = "127.0.0.1:0"
	c.PostgresURL = "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2"
	c.KafkaBrokers = []string{k.Addr()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Start(ctx, c); err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "PostgreSQL") {
		t.Fatalf("start with PostgreSQL unreachable: %v, want one line naming PostgreSQL", err)
	}
	c.PostgresURL = localsvctest.Database(t)
	c.KafkaBrokers = []string{"127.0.0.1:1"}
	if _, err := Start(ctx, c); err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("start with the broker unreachable: %v, want a one-line error", err)
	}
}

// /datasets and /datasets/current before any import, after a commit that
// no read node activated, and once a version is active; /readyz with
// PostgreSQL up.
func TestDatasetsEndpoints(t *testing.T) {
	k := localsvctest.Kafka(t, events.Topic)
	e := start(t, localsvctest.Database(t), k)
	if status, m := getBody(t, e.url+"/readyz"); status != 200 || m["status"] != "ready" {
		t.Fatalf("/readyz: %d %v", status, m)
	}
	if status, m := getBody(t, e.url+"/datasets"); status != 200 || fmt.Sprint(m["datasets"]) != "[]" {
		t.Fatalf("/datasets before any import: %d %v, want an empty list", status, m)
	}
	if status, m := getBody(t, e.url+"/datasets/current"); status != 404 || !strings.Contains(fmt.Sprint(m["error"]), "no dataset has been committed") {
		t.Fatalf("/datasets/current before any import: %d %v", status, m)
	}
	e.writeCSV(t, "p.csv", 500, 7)
	if status, st := post(t, e.url+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}}); status != 200 {
		t.Fatalf("import: %d %v", status, st)
	}
	// Committed, but no read node has activated it.
	status, m := getBody(t, e.url+"/datasets/current")
	if status != 404 || m["latest_committed"] != float64(1) || !strings.Contains(fmt.Sprint(m["error"]), "no version is active") {
		t.Fatalf("/datasets/current with version 1 committed, not active: %d %v", status, m)
	}
	status, m = getBody(t, e.url+"/datasets")
	ds, _ := m["datasets"].([]any)
	if status != 200 || len(ds) != 1 {
		t.Fatalf("/datasets after the import: %d %v", status, m)
	}
	if err := e.srv.Store().Activate(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if status, m := getBody(t, e.url+"/datasets/current"); status != 200 || m["version"] != float64(1) {
		t.Fatalf("/datasets/current once version 1 is active: %d %v", status, m)
	}
}
