package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/promotion-service/promo/localsvc"
)

// WrkConfig describes the wrk comparison of promo bench cluster --wrk:
// wrk -t1 -c64 with random ids that a read node holds, against the node,
// through the proxy and against the bare baseline, in turns, so that the
// three meet the same state of the shared machine.
type WrkConfig struct {
	// Node and Proxy are base URLs.
	Node, Proxy string
	// IDsFile holds ids that Node holds, one per line. The wrk script is
	// written next to it.
	IDsFile string
	// Duration is the length of each wrk run, in whole seconds.
	Duration time.Duration
	// Bare starts the baseline.
	Bare BareChildConfig
}

// WrkRound is one round of RunWrk, in requests per second.
type WrkRound struct {
	Node, Proxy, Bare float64
}

// wrkRounds is how many rounds RunWrk measures after warming up.
const wrkRounds = 2

// RunWrk warms the node's block cache and the proxy's connections with one
// wrk run each, then measures wrkRounds rounds of node, proxy and bare.
func RunWrk(ctx context.Context, c WrkConfig) ([]WrkRound, error) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return nil, errors.New("wrk is not installed (apt-get install wrk)")
	}
	script := filepath.Join(filepath.Dir(c.IDsFile), "random_ids.lua")
	if err := os.WriteFile(script, []byte(WrkScript), 0o644); err != nil {
		return nil, err
	}
	run := func(target string) (float64, error) {
		return wrkRate(ctx, wrk, script, c.IDsFile, c.Duration, target)
	}
	bare, err := StartBareChild(ctx, c.Bare)
	if err != nil {
		return nil, err
	}
	defer bare.Close()
	if _, err := run(c.Node); err != nil { // warm the block cache
		return nil, err
	}
	if _, err := run(c.Proxy); err != nil { // warm the proxy's connections
		return nil, err
	}
	var rounds []WrkRound
	for range wrkRounds {
		var r WrkRound
		if r.Node, err = run(c.Node); err != nil {
			return rounds, err
		}
		if r.Proxy, err = run(c.Proxy); err != nil {
			return rounds, err
		}
		if r.Bare, err = run(bare.URL()); err != nil {
			return rounds, err
		}
		rounds = append(rounds, r)
	}
	return rounds, nil
}

// wrkRate runs wrk -t1 -c64 with script and the ids of ids against target
// for d and returns the rate it measured.
func wrkRate(ctx context.Context, wrk, script, ids string, d time.Duration, target string) (float64, error) {
	cmd := exec.CommandContext(ctx, wrk, "-t1", "-c64", "-d"+d.String(), "-s", script, target)
	cmd.Env = append(os.Environ(), "IDS="+ids)
	localsvc.DieWithParent(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %w: %s", err, out)
	}
	return parseWrkRate(out)
}

// parseWrkRate returns the Requests/sec line of wrk's output.
func parseWrkRate(out []byte) (float64, error) {
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Requests/sec:"); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("wrk printed a rate that is not a number: %q", v)
			}
			return f, nil
		}
	}
	return 0, fmt.Errorf("wrk printed no rate: %s", out)
}
