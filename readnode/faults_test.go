package readnode_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/readnode"
)

// db connects to the cluster's PostgreSQL database, as an operator would.
func (c *cluster) db() *pgx.Conn {
	c.t.Helper()
	conn, err := pgx.Connect(context.Background(), c.pgURL)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// lockVersion takes an ACCESS EXCLUSIVE lock on every table of version v in
// a transaction of conn, so that a node's COPY of them waits until the
// returned function releases it.
func lockVersion(t *testing.T, conn *pgx.Conn, v int) (release func()) {
	t.Helper()
	ctx := context.Background()
	var partitions int
	if err := conn.QueryRow(ctx, "SELECT partitions FROM datasets WHERE version = $1", v).Scan(&partitions); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for p := range partitions {
		if _, err := tx.Exec(ctx, fmt.Sprintf("LOCK TABLE promo_v%d_p%03d IN ACCESS EXCLUSIVE MODE", v, p)); err != nil {
			t.Fatal(err)
		}
	}
	done := false
	release = func() {
		if !done {
			done = true
			if err := tx.Rollback(ctx); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(release)
	return release
}

// blockedPulls counts the COPYs of version v that wait for a lock.
func blockedPulls(t *testing.T, conn *pgx.Conn, v int) int {
	t.Helper()
	var n int
	err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1`,
		fmt.Sprintf("COPY %%promo_v%d_p%%", v)).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// servingReportedAt returns when node last reported serving version v.
func servingReportedAt(t *testing.T, conn *pgx.Conn, node string, v int) time.Time {
	t.Helper()
	var at time.Time
	err := conn.QueryRow(context.Background(),
		"SELECT updated_at FROM node_versions WHERE node = $1 AND version = $2 AND state = 'serving'", node, v).Scan(&at)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	return at
}

// TestHeartbeatDuringBlockedPull: while a pull waits on PostgreSQL (the
// tables of the new version are locked), the node keeps reporting that it
// serves the old version, so that ingest's retention keeps it.
func TestHeartbeatDuringBlockedPull(t *testing.T) {
	c := newCluster(t, []string{"n1"}, 1, func(cfg *readnode.Config) { cfg.HeartbeatInterval = 100 * time.Millisecond })
	c.importVersion(2000, 1)
	c.waitServing(1)
	// Version 2 arrives while n1 is down, and its tables are locked before
	// n1 starts again: its pull of version 2 waits as long as the test says.
	c.stop("n1")
	c.importVersion(2000, 2)
	conn := c.db()
	release := lockVersion(t, c.db(), 2)
	c.start("n1", 1)
	localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
		if n := blockedPulls(t, conn, 2); n == 0 {
			return errors.New("no pull of version 2 waits for the lock")
		}
		return nil
	})
	last := servingReportedAt(t, conn, "n1", 1)
	for beat := range 3 {
		localsvctest.SucceedsSoon(t, 5*time.Second, func() error {
			at := servingReportedAt(t, conn, "n1", 1)
			if !at.After(last) {
				return fmt.Errorf("beat %d: n1 last reported serving version 1 at %v, not since", beat, last)
			}
			last = at
			return nil
		})
	}
	if n := blockedPulls(t, conn, 2); n == 0 {
		t.Fatal("the heartbeats were not seen during the blocked pull: no pull of version 2 waits any more")
	}
	release()
	c.waitServing(2)
}

// corruptSlot changes the checksum ingest recorded for one slot of
// version v that holds rows, and returns the slot.
func corruptSlot(t *testing.T, conn *pgx.Conn, v int) int {
	t.Helper()
	var slot int
	err := conn.QueryRow(context.Background(), `UPDATE dataset_slots SET checksum = checksum # 1
		WHERE version = $1 AND slot = (SELECT min(slot) FROM dataset_slots WHERE version = $1 AND rows > 0)
		RETURNING slot`, v).Scan(&slot)
	if err != nil {
		t.Fatal(err)
	}
	return slot
}

// readyz returns the status and body of a node's /readyz.
func readyz(t *testing.T, base string) (int, readyzBody) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b readyzBody
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

type readyzBody struct {
	Status       string `json:"status"`
	Serving      int    `json:"serving_version"`
	PullFailures []struct {
		Version   int     `json:"version"`
		Error     string  `json:"error"`
		Failures  int     `json:"failures"`
		NextTryIn float64 `json:"next_try_in_seconds"`
	} `json:"pull_failures"`
}

// TestPullBackoff: a version whose pull always fails (a slot's recorded
// checksum does not match its rows) is pulled again after delays that
// double up to PullBackoffMax, not at every reconcile; meanwhile the node
// serves the previous version, shows the failure in /readyz and metrics,
// and prepares and serves a newer version.
func TestPullBackoff(t *testing.T) {
	const first, most = 200 * time.Millisecond, 800 * time.Millisecond
	c := newCluster(t, []string{"n1"}, 1, func(cfg *readnode.Config) {
		cfg.PullBackoff, cfg.PullBackoffMax = first, most
	})
	recs := c.importVersion(2000, 1)
	c.waitServing(1)
	// Version 2 is committed with a bad checksum before n1 sees it.
	c.stop("n1")
	c.importVersion(2000, 2)
	conn := c.db()
	slot := corruptSlot(t, conn, 2)
	c.start("n1", 1)
	base := c.url("n1")
	failures := func() int { return int(metric(t, base, "promo_readnode_pull_failures_total")) }

	// The waits after failures 1..6 are at least 3/4 of 200, 400, 800,
	// 800, 800 and 800 ms: failure 7 comes at least 2.85 s after failure 1.
	// Retrying at every reconcile (50 ms) gets there in well under a second.
	const n = 7
	var minGap time.Duration
	for i := 1; i < n; i++ {
		minGap += min(first<<(i-1), most) * 3 / 4
	}
	localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
		if got := failures(); got < 1 {
			return fmt.Errorf("%d pull failures", got)
		}
		return nil
	})
	start, startCount := time.Now(), failures()
	localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
		if retry := metric(t, base, "promo_readnode_pull_retry_seconds"); retry > most.Seconds() {
			t.Fatalf("promo_readnode_pull_retry_seconds = %v, above PullBackoffMax %v", retry, most)
		}
		if got := failures(); got < startCount+n-1 {
			return fmt.Errorf("%d pull failures", got)
		}
		return nil
	})
	if el := time.Since(start); el < minGap {
		t.Fatalf("%d pulls of the bad version in %v: it should take at least %v", n, el, minGap)
	}

	// Meanwhile n1 serves version 1, and says why it does not prepare 2.
	status, body := readyz(t, base)
	if status != 200 || body.Serving != 1 || len(body.PullFailures) != 1 {
		t.Fatalf("readyz during the failures: %d %+v", status, body)
	}
	f := body.PullFailures[0]
	if f.Version != 2 || f.Failures < n-1 || !strings.Contains(f.Error, fmt.Sprintf("slot %d:", slot)) ||
		!strings.Contains(f.Error, "checksum") || f.NextTryIn > most.Seconds() {
		t.Fatalf("readyz pull failure: %+v", f)
	}
	if v := metric(t, base, "promo_readnode_pull_backoff_versions"); v != 1 {
		t.Fatalf("promo_readnode_pull_backoff_versions = %v during the failures, want 1", v)
	}
	client := &http.Client{}
	for i := 0; i < len(recs); i += 97 {
		st, v, got := get(t, client, base+"/promotions/"+recs[i].ID.String())
		if st != 200 || v != "1" || got != string(promotion.AppendJSON(nil, &recs[i])) {
			t.Fatalf("lookup during the failures: %d %s %s", st, v, got)
		}
	}

	// A newer, good version is pulled and served all the same, and the bad
	// one, no longer wanted, is forgotten.
	c.importVersion(2000, 3)
	c.waitServing(3)
	if status, body := readyz(t, base); status != 200 || len(body.PullFailures) != 0 {
		t.Fatalf("readyz once version 3 serves: %d %+v", status, body)
	}
	if v := metric(t, base, "promo_readnode_pull_backoff_versions"); v != 0 {
		t.Fatalf("promo_readnode_pull_backoff_versions = %v once version 3 serves, want 0", v)
	}
}
