package pgstore

import (
	"context"
	"strings"
	"testing"
)

func TestConfigErrors(t *testing.T) {
	f := func(name string, mutate func(*Config), want string) {
		t.Helper()
		c := DefaultConfig("postgres://x@127.0.0.1:1/x")
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want an error naming %q", name, err, want)
		}
		// Open refuses it before connecting.
		if _, err := Open(context.Background(), c); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: Open: %v, want an error naming %q", name, err, want)
		}
	}
	f("no URL", func(c *Config) { c.URL = "" }, "URL is required")
	f("too many slots", func(c *Config) { c.Slots = 40000 }, "Slots")
	f("partitions not dividing slots", func(c *Config) { c.Partitions = 7 }, "Partitions must divide")
	f("negative keep", func(c *Config) { c.KeepVersions = -1 }, "KeepVersions")
	f("tiny filter", func(c *Config) { c.FilterBytes = 10 }, "FilterBytes")
}

// Zero fields take their defaults.
func TestZeroConfigTakesDefaults(t *testing.T) {
	c := Config{URL: "postgres://x@127.0.0.1:1/x"}
	c.fillDefaults()
	d := DefaultConfig(c.URL)
	if c.Dataset != d.Dataset || c.Slots != d.Slots || c.Partitions != d.Partitions || c.KeepVersions != d.KeepVersions ||
		c.FilterBytes != d.FilterBytes || c.MaxCandidates != d.MaxCandidates || c.BatchRows != d.BatchRows ||
		c.ServingGrace != d.ServingGrace || c.Logger == nil {
		t.Fatalf("filled %+v, want the defaults %+v", c, d)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}
