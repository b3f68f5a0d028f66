package readnode_test

import (
	"strings"
	"testing"

	"github.com/promotion-service/promo/readnode"
	"github.com/promotion-service/promo/ring"
)

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
