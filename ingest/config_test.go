package ingest

import (
	"strings"
	"testing"
	"time"
)

func TestConfigErrors(t *testing.T) {
	f := func(name string, mutate func(*Config), want string) {
		t.Helper()
		c := DefaultConfig()
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want an error naming %q", name, err, want)
		}
		if _, err := New(c, newFakeSink()); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: New: %v, want an error naming %q", name, err, want)
		}
	}
	f("no workers", func(c *Config) { c.Workers = -1 }, "Workers")
	f("tiny chunks", func(c *Config) { c.ChunkSize = 100 }, "ChunkSize")
	f("no errors kept", func(c *Config) { c.MaxErrors = -1 }, "MaxErrors")
	f("no upload size", func(c *Config) { c.MaxUploadBytes = -1 }, "MaxUploadBytes")
	f("negative rate", func(c *Config) { c.UploadMinRate = -1 }, "UploadMinRate")
	f("negative upload timeout", func(c *Config) { c.UploadTimeout = -time.Second }, "UploadTimeout")
	f("negative store timeout", func(c *Config) { c.StoreTimeout = -time.Second }, "StoreTimeout")
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}
