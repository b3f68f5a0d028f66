package bench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/localsvc/localsvctest"
)

// Drills of the write and pull paths beyond the quick ones, against real
// servers and promo processes: a read node killed mid-pull, the broker
// down during an import, PostgreSQL frozen as an import begins and
// stopped during a pull, promo ingest killed mid-COPY. Each must land
// where it claims, and no lookup may fail or be wrong, and no row be lost.
// (postgres-stop-import is left out: FAULTS.md lists its one failing
// expectation, a recovery time, which this test does not assert.)
func TestFaultsWriteAndPullPaths(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole cluster and runs five drills under load for about two minutes")
	}
	if _, err := localsvc.FindPostgres(); err != nil {
		localsvctest.Unavailable(t, err)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		localsvctest.Unavailable(t, fmt.Errorf("%w: redis-server", localsvc.ErrNotInstalled))
	}
	c := DefaultFaultsConfig()
	c.Drills = []string{"node-kill-pull", "broker-down", "postgres-freeze-begin", "postgres-stop-pull", "ingest-kill-copy"}
	c.Binary = buildPromo(t)
	c.Rows, c.Rate, c.Hold, c.Warm = 20_000, 500, 2*time.Second, time.Second
	c.Progress = progressWriter{t}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	rep, err := RunFaults(ctx, c)
	if err != nil && !errors.Is(err, ErrExpectations) {
		t.Fatal(err)
	}
	t.Logf("%d drills in %v", len(rep.Drills), time.Since(start).Round(time.Second))
	if len(rep.Drills) != len(c.Drills) {
		t.Fatalf("%d drills ran, want %v", len(rep.Drills), c.Drills)
	}
	for _, d := range rep.Drills {
		if d.Error != "" {
			t.Errorf("%s did not complete: %s", d.Name, d.Error)
			continue
		}
		if d.Failed != 0 || d.Wrong != 0 || d.Older != 0 || d.RowsLost != 0 {
			t.Errorf("%s: %d failed, %d wrong, %d older of %d requests, %d rows lost; want none: %v",
				d.Name, d.Failed, d.Wrong, d.Older, d.Requests, d.RowsLost, d.Examples)
		}
		for _, e := range d.Expectations {
			// Where the fault landed and what it left decide what the
			// drill tested; recovery times are the report's.
			if !e.Pass && (strings.Contains(e.Text, "lands") || strings.HasPrefix(e.Text, "no committed version") ||
				strings.Contains(e.Text, "leftover") || strings.Contains(e.Text, "rows lost")) {
				t.Errorf("%s: %s: got %s", d.Name, e.Text, e.Got)
			} else if !e.Pass {
				t.Logf("%s: %s: got %s (not asserted here)", d.Name, e.Text, e.Got)
			}
		}
	}
}
