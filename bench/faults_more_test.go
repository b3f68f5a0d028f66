package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/localsvc/localsvctest"
)

// Every drill beyond the quick ones (which TestFaultsQuick runs), against
// real servers and promo processes: a read node killed mid-pull, Redis
// frozen, the broker down during an import, PostgreSQL stopped and frozen
// during an import, as it begins and during a pull, promo ingest killed
// mid-COPY, and, as root, a read node's disk that fills before a pull.
// Each must land where it claims, and no lookup may fail, be wrong or
// older, and no row be lost. Recovery times are the report's (FAULTS.md),
// not asserted here.
func TestFaultsWriteAndPullPaths(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole cluster and runs ten drills under load for about two minutes")
	}
	if _, err := localsvc.FindPostgres(); err != nil {
		localsvctest.Unavailable(t, err)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		localsvctest.Unavailable(t, fmt.Errorf("%w: redis-server", localsvc.ErrNotInstalled))
	}
	c := DefaultFaultsConfig()
	for _, name := range DrillNames() {
		// disk-full-import needs more rows than fit in its 2 MiB
		// tablespace: at this test's 20,000 the import fits and the disk
		// never fills (make faults runs it on 100,000).
		if !slices.Contains(QuickDrills(), name) && name != "disk-full-import" {
			c.Drills = append(c.Drills, name)
		}
	}
	c.Binary = buildPromo(t)
	c.Rows, c.Rate, c.Hold, c.Warm = 20_000, 500, 2*time.Second, time.Second
	c.Progress = progressWriter{t}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
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
		if d.Skipped != "" {
			if os.Getenv("CI") != "" {
				t.Errorf("%s skipped on CI: %s", d.Name, d.Skipped)
			} else {
				t.Logf("%s skipped: %s", d.Name, d.Skipped)
			}
			continue
		}
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
