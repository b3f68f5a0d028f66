package readnode_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/readnode"
	"github.com/promotion-service/promo/ring"
)

func validConfig(t *testing.T) readnode.Config {
	c := readnode.DefaultConfig()
	c.Name = "n1"
	c.Addr = "127.0.0.1:0"
	c.DataDir = t.TempDir()
	c.PostgresURL = "postgres://x@127.0.0.1:1/x"
	c.KafkaBrokers = []string{"127.0.0.1:1"}
	c.Nodes = []ring.Node{{Name: "n1", URL: "http://127.0.0.1:1"}, {Name: "n2", URL: "http://127.0.0.1:2"}}
	return c
}

func TestConfigErrors(t *testing.T) {
	f := func(name string, mutate func(*readnode.Config), want string) {
		t.Helper()
		c := validConfig(t)
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want an error naming %q", name, err, want)
		}
	}
	f("bad address", func(c *readnode.Config) { c.Addr = "nope" }, "Addr")
	f("no name", func(c *readnode.Config) { c.Name = "" }, "Name is required")
	f("no PostgreSQL", func(c *readnode.Config) { c.PostgresURL = "" }, "PostgresURL")
	f("no broker", func(c *readnode.Config) { c.KafkaBrokers = nil }, "KafkaBrokers")
	f("R above the nodes", func(c *readnode.Config) { c.Replicas = 3 }, "Replicas")
	f("zero poll interval", func(c *readnode.Config) { c.PollInterval = 0 }, "PollInterval")
	f("backoff above its max", func(c *readnode.Config) { c.PullBackoff, c.PullBackoffMax = time.Minute, time.Second }, "PullBackoff")
	f("not a member", func(c *readnode.Config) { c.Name = "n9" }, `"n9" is not in Nodes`)
	c := validConfig(t)
	if err := c.Validate(); err != nil {
		t.Fatalf("a valid config: %v", err)
	}
}

// A start that cannot reach PostgreSQL or the broker fails, and releases
// the local store: a second start on the same data directory opens it.
func TestStartErrorsReleaseTheStore(t *testing.T) {
	k := localsvctest.Kafka(t, events.Topic)
	c := validConfig(t)
	c.Logger = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.PostgresURL = "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2"
	c.KafkaBrokers = []string{k.Addr()}
	if _, err := readnode.Start(ctx, c); err == nil || !strings.Contains(err.Error(), "PostgreSQL") {
		t.Fatalf("start with PostgreSQL unreachable: %v", err)
	}
	c.PostgresURL = localsvctest.Database(t)
	c.KafkaBrokers = []string{"127.0.0.1:1"}
	if _, err := readnode.Start(ctx, c); err == nil {
		t.Fatal("start with the broker unreachable succeeded")
	}
	c.KafkaBrokers = []string{k.Addr()}
	n, err := readnode.Start(ctx, c)
	if err != nil {
		t.Fatalf("start on the same data directory after failed starts: %v", err)
	}
	if n.Addr() == "" {
		t.Fatal("no address")
	}
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestConfigMembership(t *testing.T) {
	f := func(mutate func(*readnode.Config), wantErr string) {
		t.Helper()
		c := readnode.DefaultConfig()
		c.Name, c.PostgresURL, c.KafkaBrokers = "n4", "postgres://x", []string{"127.0.0.1:9092"}
		mutate(&c)
		err := c.Validate()
		if (err == nil) != (wantErr == "") || (err != nil && !strings.Contains(err.Error(), wantErr)) {
			t.Fatalf("Validate() = %v, want %q", err, wantErr)
		}
	}
	seeds := []ring.Node{{Name: "n1", URL: "http://127.0.0.1:9001"}, {Name: "n2", URL: "http://127.0.0.1:9002"}}
	f(func(c *readnode.Config) {}, "")                                    // the ring comes from PostgreSQL
	f(func(c *readnode.Config) { c.Nodes = seeds }, "not in Nodes")       // seeds without this node
	f(func(c *readnode.Config) { c.Nodes, c.Join = seeds, true }, "")     // it joins them
	f(func(c *readnode.Config) { c.Join, c.Addr = true, ":8090" }, "URL") // others could not reach it
	f(func(c *readnode.Config) { c.Join, c.Addr = true, "0.0.0.0:8090" }, "URL")
	f(func(c *readnode.Config) { c.Join, c.Addr, c.URL = true, ":8090", "http://n4.promo:8090" }, "")
	f(func(c *readnode.Config) { c.URL = "ftp://x" }, "invalid URL")
	f(func(c *readnode.Config) { c.DropGrace = -1 }, "DropGrace")
	f(func(c *readnode.Config) { c.Nodes, c.Replicas = seeds, 3 }, "Replicas")
}

// A node started with --join on an empty database, where no node has
// seeded the ring yet, starts and waits: it says so on /cluster (503),
// serves no version (/datasets/current 404) and is not ready.
func TestJoinWaitsForARing(t *testing.T) {
	k := localsvctest.Kafka(t, events.Topic)
	c := validConfig(t)
	c.Logger = slog.New(slog.DiscardHandler)
	c.Nodes, c.Join, c.URL = nil, true, "http://127.0.0.1:9"
	c.PostgresURL = localsvctest.Database(t)
	c.KafkaBrokers = []string{k.Addr()}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := readnode.Start(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	for path, want := range map[string]int{"/cluster": 503, "/datasets/current": 404, "/readyz": 503} {
		resp, err := http.Get("http://" + n.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || !strings.Contains(string(body), `"`) {
			t.Errorf("GET %s: %d %s, want %d with a JSON body", path, resp.StatusCode, body, want)
		}
		if path == "/cluster" && !strings.Contains(string(body), "no ring yet") {
			t.Errorf("GET /cluster does not say why: %s", body)
		}
	}
}
