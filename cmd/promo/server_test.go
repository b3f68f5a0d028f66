package main

import (
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

// TestServicesBindServiceFlags: every long-running service takes the
// shared timeouts, log level and pprof flags, and the import services the
// shared import flags.
func TestServicesBindServiceFlags(t *testing.T) {
	service := []string{"-read-timeout", "-write-timeout", "-idle-timeout", "-log-level", "-pprof-addr"}
	imports := []string{"-addr", "-import-dir", "-ingest-token", "-insecure", "-keep-versions", "-max-upload-size", "-upload-idle-timeout"}
	f := func(cmd string, want ...[]string) {
		t.Helper()
		var stdout, stderr strings.Builder
		err := run(context.Background(), []string{cmd, "-h"}, &stdout, &stderr)
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("promo %s -h: %v", cmd, err)
		}
		listed := map[string]bool{}
		for _, line := range strings.Split(stderr.String(), "\n") {
			if f := strings.Fields(line); strings.HasPrefix(line, "  -") && len(f) > 0 {
				listed[f[0]] = true
			}
		}
		for _, flags := range want {
			for _, name := range flags {
				if !listed[name] {
					t.Errorf("promo %s has no %s flag:\n%s", cmd, name, stderr.String())
				}
			}
		}
	}
	f("standalone", service, imports)
	f("ingest", service, imports)
	f("readnode", service)
	f("proxy", service)
}
