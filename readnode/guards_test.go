package readnode_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/readnode"
)

// activeVersion returns the version the cluster serves according to
// PostgreSQL (0: none).
func activeVersion(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var v int
	err := conn.QueryRow(context.Background(),
		"SELECT coalesce(max(version), 0) FROM datasets WHERE state = 'committed' AND activated_at IS NOT NULL").Scan(&v)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitMetric waits until a node's metric name is want.
func waitMetric(t *testing.T, base, name string, want float64) {
	t.Helper()
	localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
		if got := metric(t, base, name); got != want {
			return fmt.Errorf("%s of %s = %v, want %v", name, base, got, want)
		}
		return nil
	})
}

// A node that has not prepared the version the cluster activated answers
// 503 "catching up", naming the version it holds in X-Dataset-Version and
// the active one in the body, instead of an answer from the older version;
// its /readyz is 503 until it serves the active version.
func TestBehindNodeAnswers503CatchingUp(t *testing.T) {
	c := newCluster(t, []string{"n1", "n2"}, 2, nil)
	recs := c.importVersion(2000, 1)
	c.waitServing(1)
	// Version 2 is activated by n1 alone (R=2 of 2: it holds every slot)
	// while n2 is down, and n2's pull of it will wait on a lock.
	c.stop("n2")
	c.importVersion(2000, 2)
	c.waitServing(2)
	conn := c.db()
	release := lockVersion(t, c.db(), 2)
	c.start("n2", 2)
	base := c.url("n2")
	localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
		if n := blockedPulls(t, conn, 2); n == 0 {
			return errors.New("no pull of version 2 waits for the lock")
		}
		return nil
	})
	client := &http.Client{Timeout: 10 * time.Second}
	localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
		status, body := readyz(t, base)
		if status != 503 || body.Serving != 1 || !strings.Contains(body.Status, "not ready") {
			return fmt.Errorf("n2 /readyz: %d %+v, want 503 serving version 1", status, body)
		}
		return nil
	})
	for i := 0; i < len(recs); i += 101 {
		status, version, body := get(t, client, base+"/promotions/"+recs[i].ID.String())
		var e struct {
			Error   string `json:"error"`
			Version int    `json:"version"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatalf("lookup on n2 while behind: %d %s: %v", status, body, err)
		}
		if status != 503 || version != "1" || e.Version != 2 || !strings.Contains(e.Error, "catching up") {
			t.Fatalf("lookup on n2 while behind: %d version %q %s, want 503 catching up, holding 1, active 2", status, version, body)
		}
	}
	if n := blockedPulls(t, conn, 2); n == 0 {
		t.Fatal("the pull of version 2 no longer waits: the 503s above were not seen while n2 was behind")
	}
	release()
	c.waitServing(2)
	status, version, _ := get(t, client, base+"/promotions/"+recs[0].ID.String())
	if status != 200 || version != "2" {
		t.Fatalf("lookup on n2 once it serves 2: %d version %q", status, version)
	}
}

// A version is not activated while a slot has no replica that prepared
// it, nor while a slot pulled does not match the row count ingest
// recorded: the cluster keeps serving the previous version, and activates
// the new one once every slot is prepared somewhere.
func TestVersionStaysInactiveWhileASlotLacksAPreparedReplica(t *testing.T) {
	c := newCluster(t, []string{"n1", "n2"}, 1, func(cfg *readnode.Config) {
		cfg.PullBackoff, cfg.PullBackoffMax = 50*time.Millisecond, 200*time.Millisecond
	})
	recs := c.importVersion(2000, 1)
	c.waitServing(1)
	c.stop("n2")
	c.importVersion(2000, 2)
	conn := c.db()
	// n1 prepares its slots of version 2, but n2's have no replica.
	waitMetric(t, c.url("n1"), "promo_readnode_version_prepared", 2)
	// Nothing to wait for: give n1 twenty reconciles (50ms) to activate.
	time.Sleep(time.Second)
	if v := activeVersion(t, conn); v != 1 {
		t.Fatalf("active version %d while n2's slots of version 2 are prepared nowhere, want 1", v)
	}
	if m := metric(t, c.url("n1"), "promo_readnode_version_active"); m != 1 {
		t.Fatalf("n1 serves version %v, want 1", m)
	}

	// A slot of n2's has one row more recorded than it holds: n2's pull
	// fails, and version 2 stays inactive.
	var slot int
	err := conn.QueryRow(context.Background(), `UPDATE dataset_slots SET rows = rows + 1
		WHERE version = 2 AND slot = (SELECT min(slot) FROM dataset_slots WHERE version = 2 AND rows > 0 AND slot = ANY($1))
		RETURNING slot`, slotsOf(c, "n2")).Scan(&slot)
	if err != nil {
		t.Fatal(err)
	}
	c.start("n2", 1)
	localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
		_, body := readyz(t, c.url("n2"))
		for _, f := range body.PullFailures {
			if f.Version == 2 && strings.Contains(f.Error, fmt.Sprintf("slot %d:", slot)) && strings.Contains(f.Error, "rows") {
				return nil
			}
		}
		return fmt.Errorf("n2 reports no failed pull of version 2's slot %d: %+v", slot, body.PullFailures)
	})
	waitMetric(t, c.url("n2"), "promo_readnode_version_active", 1)
	if v := activeVersion(t, conn); v != 1 {
		t.Fatalf("active version %d with a slot of version 2 that does not match ingest's count, want 1", v)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < len(recs); i += 97 {
		owner := c.ring.Nodes()[c.ring.OwnersOf(recs[i].ID)[0]]
		st, v, got := get(t, client, c.url(owner)+"/promotions/"+recs[i].ID.String())
		if st != 200 || v != "1" || got != string(promotion.AppendJSON(nil, &recs[i])) {
			t.Fatalf("lookup on %s while version 2 is not activated: %d %s %s", owner, st, v, got)
		}
	}

	// The count is put right: n2 prepares, the version activates.
	if _, err := conn.Exec(context.Background(), "UPDATE dataset_slots SET rows = rows - 1 WHERE version = 2 AND slot = $1", slot); err != nil {
		t.Fatal(err)
	}
	c.waitServing(2)
	if v := activeVersion(t, conn); v != 2 {
		t.Fatalf("active version %d once every slot is prepared, want 2", v)
	}
}

// slotsOf returns the slots whose first replica is node.
func slotsOf(c *cluster, node string) []int {
	var slots []int
	for s := range c.ring.Slots() {
		if c.ring.Nodes()[c.ring.Owners(s)[0]] == node {
			slots = append(slots, s)
		}
	}
	return slots
}

// With the broker down, a node still finds new versions by polling
// PostgreSQL, and serves them.
func TestNodePollsWhileTheBrokerIsDown(t *testing.T) {
	c := newCluster(t, []string{"n1"}, 1, nil)
	c.importVersion(1000, 1)
	c.waitServing(1)
	c.kafka.Stop()
	recs := c.importVersion(1000, 2)
	c.waitServing(2)
	st, v, got := get(t, &http.Client{Timeout: 10 * time.Second}, c.url("n1")+"/promotions/"+recs[0].ID.String())
	if st != 200 || v != "2" || got != string(promotion.AppendJSON(nil, &recs[0])) {
		t.Fatalf("lookup with the broker down: %d %s %s", st, v, got)
	}
}

// countingHandler counts the records logged with message msg.
type countingHandler struct {
	slog.Handler
	msg string
	n   *atomic.Int64
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}

func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// While PostgreSQL is down, a node keeps serving the version it has, and
// reports that it cannot reconcile; once PostgreSQL is back, it prepares
// and serves the next version.
func TestNodeServesWhilePostgresIsDown(t *testing.T) {
	pg := localsvctest.NewPostgres(t)
	var failures atomic.Int64
	c := newClusterOn(t, pg.URL, []string{"n1"}, 1, func(cfg *readnode.Config) {
		cfg.Logger = slog.New(countingHandler{msg: "cannot reconcile with PostgreSQL; retrying", n: &failures})
	})
	recs := c.importVersion(1000, 1)
	c.waitServing(1)
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d reconcile failures with PostgreSQL up", n)
	}
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
		if failures.Load() < 3 {
			return fmt.Errorf("%d reconcile failures logged with PostgreSQL down", failures.Load())
		}
		return nil
	})
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < len(recs); i += 53 {
		st, v, got := get(t, client, c.url("n1")+"/promotions/"+recs[i].ID.String())
		if st != 200 || v != "1" || got != string(promotion.AppendJSON(nil, &recs[i])) {
			t.Fatalf("lookup with PostgreSQL down: %d %s %s", st, v, got)
		}
	}
	if status, body := readyz(t, c.url("n1")); status != 200 || body.Serving != 1 {
		t.Fatalf("/readyz with PostgreSQL down: %d %+v, want ready on version 1", status, body)
	}
	if err := pg.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.importVersion(1000, 2)
	c.waitServing(2)
}
