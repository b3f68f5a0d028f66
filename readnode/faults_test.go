package readnode_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/promotion-service/promo/readnode"
)

// succeedsSoon runs check until it returns nil, and fails the test with
// its last error when d has passed.
func succeedsSoon(t *testing.T, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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
		fmt.Sprintf("COPY (SELECT %% FROM promo_v%d_p%%", v)).Scan(&n)
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
	succeedsSoon(t, 30*time.Second, func() error {
		if n := blockedPulls(t, conn, 2); n == 0 {
			return errors.New("no pull of version 2 waits for the lock")
		}
		return nil
	})
	last := servingReportedAt(t, conn, "n1", 1)
	for beat := range 3 {
		succeedsSoon(t, 5*time.Second, func() error {
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
