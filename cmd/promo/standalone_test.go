package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/pebblestore/pebblestoretest"
	"github.com/promotion-service/promo/promotion"
)

// TestStandaloneOnFullDisk: promo standalone on a full disk, with a version
// to serve and Pebble's log to replay, exits at once with one line saying
// why, instead of retrying forever, flooding its log and ignoring SIGTERM.
// Once space is freed, it serves the version it had.
func TestStandaloneOnFullDisk(t *testing.T) {
	disk := pebblestoretest.SmallDisk(t, 32<<20)
	dataDir, importDir := filepath.Join(disk.Dir, "data"), t.TempDir()
	addr := freeAddr(t)
	c := startChild(t, addr, dataDir, importDir)
	recs := writeVersion(t, filepath.Join(importDir, "v1.csv"), 10_000, 1)
	resp, err := http.PostForm(c.url+"/process-csv?wait=true", url.Values{"filename": {"v1.csv"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("import: %d", resp.StatusCode)
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("promo standalone after SIGTERM: %v\n%s", err, c.log)
	}
	disk.Fill(t)

	cmd := exec.Command(os.Args[0], "standalone", "--addr", addr, "--data-dir", dataDir, "--import-dir", importDir)
	cmd.Env = append(os.Environ(), "PROMO_TEST_RUN_MAIN=1")
	localsvc.DieWithParent(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-time.After(10 * time.Second):
		// Still starting: say whether SIGTERM ends it.
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-exited:
			t.Fatalf("promo standalone on a full disk ran until SIGTERM; %d bytes of output", stderr.Len())
		case <-time.After(5 * time.Second):
			t.Fatalf("promo standalone on a full disk still running after 10s and ignores SIGTERM; %d bytes of output", stderr.Len())
		}
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("promo standalone on a full disk: %v, want exit code 1\n%s", err, &stderr)
	}
	out := stderr.String()
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "promo: ") || !strings.Contains(out, "not enough free disk space") {
		t.Fatalf("promo standalone on a full disk wrote:\n%s\nwant one line saying the disk is full", out)
	}
	t.Logf("promo standalone on a full disk: %s", out)

	disk.Free(t)
	c = startChild(t, addr, dataDir, importDir)
	checkServes(t, c, map[int64][]promotion.Record{1: recs})
}

// TestStandaloneStartEndsWithContext: a SIGTERM (the cancel of run's
// context) during start ends promo standalone with one line instead of
// starting it.
func TestStandaloneStartEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr strings.Builder
	err := run(ctx, []string{"standalone", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--import-dir", t.TempDir()}, &stdout, &stderr)
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "\n") || exitCode(err) == 0 {
		t.Fatalf("promo standalone started with a cancelled context: %v, want one line wrapping context.Canceled", err)
	}
	if strings.Contains(stderr.String(), "listening") {
		t.Fatalf("promo standalone served after its context ended:\n%s", stderr.String())
	}
}
