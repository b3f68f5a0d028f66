package httpserver

import (
	"strings"
	"testing"
)

func TestServerConfigErrors(t *testing.T) {
	f := func(mutate func(*ServerConfig), want string) {
		t.Helper()
		c := DefaultServerConfig("test")
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%v, want an error naming %q", err, want)
		}
	}
	f(func(c *ServerConfig) { c.ReadTimeout = 0 }, "ReadTimeout")
	f(func(c *ServerConfig) { c.WriteTimeout = 0 }, "WriteTimeout")
	f(func(c *ServerConfig) { c.IdleTimeout = -1 }, "IdleTimeout")
	f(func(c *ServerConfig) { c.MaxHeaderBytes = 10 }, "MaxHeaderBytes")
	f(func(c *ServerConfig) { c.MaxBodyBytes = 10 }, "MaxBodyBytes")
	f(func(c *ServerConfig) { c.Concurrency = 0 }, "Concurrency")
	c := DefaultServerConfig("test")
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}
