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
	imports := []string{"-addr", "-import-dir", "-ingest-token", "-insecure", "-keep-versions", "-max-upload-size", "-upload-idle-timeout", "-upload-min-rate", "-upload-timeout"}
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
	f("ingest", service, imports, []string{"-postgres-timeout"})
	f("readnode", service)
	f("proxy", service)
}

// TestStartErrorsNameTheFlags: a service's configuration errors name the
// Config field, and the command adds the flag that set it, on one line.
func TestStartErrorsNameTheFlags(t *testing.T) {
	dir := t.TempDir()
	f := func(want []string, args ...string) {
		t.Helper()
		var stdout, stderr strings.Builder
		err := run(context.Background(), args, &stdout, &stderr)
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Fatalf("%v: got %q, want one line", args, err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %q does not contain %q", args, err, w)
			}
		}
	}
	open := []string{"without an ingest token", "IngestToken (--ingest-token, PROMO_INGEST_TOKEN)", "Insecure (--insecure, PROMO_INSECURE)"}
	f(open, "standalone", "--addr", "0.0.0.0:0", "--data-dir", dir)
	f(open, "ingest", "--addr", "0.0.0.0:0", "--postgres-url", "postgres://x@127.0.0.1:1/db", "--kafka-brokers", "127.0.0.1:1")
	f([]string{"KeepVersions (--keep-versions, PROMO_KEEP_VERSIONS) must be at least 1"}, "standalone", "--addr", "127.0.0.1:0", "--data-dir", dir, "--keep-versions", "0")
	f([]string{"ReadTimeout (--read-timeout, PROMO_READ_TIMEOUT) must be positive"}, "proxy", "--addr", "127.0.0.1:0", "--nodes", "a=http://127.0.0.1:1", "--replicas", "1", "--read-timeout", "0s")
	f([]string{"Dir (--dir, PROMO_DIR) is required"}, "devcluster", "--dir", "")
}

func TestWithFlags(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("postgres-url", "", "")
	fs.Bool("insecure", false, "")
	fs.Var(new(byteSize), "max-upload-size", "")
	base := errors.New("x: PostgresURL is required, PostgresURL again; MaxUploadBytes, Insecure, Unknown and HTTP.PostgresURL")
	err := withFlags(fs, base)
	want := "x: PostgresURL (--postgres-url, PROMO_POSTGRES_URL) is required, PostgresURL again; " +
		"MaxUploadBytes (--max-upload-size, PROMO_MAX_UPLOAD_SIZE), Insecure (--insecure, PROMO_INSECURE), Unknown and HTTP.PostgresURL"
	if err.Error() != want || !errors.Is(err, base) {
		t.Fatalf("withFlags:\n got %q\nwant %q (wrapping the original: %v)", err, want, errors.Is(err, base))
	}
	if plain := errors.New("no field here"); withFlags(fs, plain) != plain || withFlags(fs, nil) != nil {
		t.Fatal("withFlags changed an error that names no field")
	}
	for field, name := range map[string]string{
		"Addr": "addr", "KeepVersions": "keep-versions", "PostgresURL": "postgres-url", "CacheTTL": "cache-ttl",
		"HTTP": "http", "URLPath": "url-path", "MaxUploadBytes": "max-upload-size", "IDsFile": "ids",
	} {
		if got := flagOf(field); got != name {
			t.Errorf("flagOf(%q) = %q, want %q", field, got, name)
		}
	}
}
