package pebblestore

import (
	"context"
	"strings"
	"testing"
)

func TestConfigErrors(t *testing.T) {
	f := func(mutate func(*Config), want string) {
		t.Helper()
		c := DefaultConfig(t.TempDir())
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%v, want an error naming %q", err, want)
		}
		if _, err := Open(context.Background(), c); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Open: %v, want an error naming %q", err, want)
		}
	}
	f(func(c *Config) { c.Dir = "" }, "Dir is required")
	f(func(c *Config) { c.KeepVersions = -1 }, "KeepVersions")
	f(func(c *Config) { c.MemoryBudget = 1 << 20 }, "MemoryBudget")
	f(func(c *Config) { c.CacheSize = -1 }, "CacheSize")
	f(func(c *Config) { c.Workers = -1 }, "Workers")
	f(func(c *Config) { c.BlockSize = 10 }, "BlockSize")
}

// Zero fields take their defaults.
func TestZeroConfigTakesDefaults(t *testing.T) {
	c := Config{Dir: t.TempDir()}
	c.fillDefaults()
	d := DefaultConfig(c.Dir)
	if c.KeepVersions != d.KeepVersions || c.MemoryBudget != d.MemoryBudget || c.CacheSize != d.CacheSize ||
		c.Workers != d.Workers || c.BlockSize != d.BlockSize || c.Logger == nil {
		t.Fatalf("filled %+v, want the defaults %+v", c, d)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}
