package ingestsvc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/pgstore"
	"github.com/promotion-service/promo/promotion"
)

// leftovers counts the versions left building and the version tables of
// versions that datasets does not list as committed or active.
func leftovers(ctx context.Context, conn *pgx.Conn) (building, orphanTables int, err error) {
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM datasets WHERE state = 'building'").Scan(&building); err != nil {
		return 0, 0, err
	}
	err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables t WHERE t.tablename LIKE 'promo\_v%\_p%'
		AND NOT EXISTS (SELECT 1 FROM datasets d WHERE d.state <> 'building'
			AND t.tablename LIKE 'promo\_v' || d.version || '\_p%')`).Scan(&orphanTables)
	return building, orphanTables, err
}

// Another ingest process (a second pgstore on the same database) holds the
// import lock mid-import: this server's import answers 409 without a job
// of its own running. The other process then dies (its sessions end), its
// version is left building, and this server's periodic maintenance, every
// MaintainInterval, drops it without any import or restart.
func TestDeadImportOfAnotherProcessIsCleanedPeriodically(t *testing.T) {
	k := localsvctest.Kafka(t, events.Topic)
	dbURL := localsvctest.Database(t)
	e := start(t, dbURL, k, func(c *Config) { c.MaintainInterval = 50 * time.Millisecond })
	e.writeCSV(t, "p.csv", 1_000, 5)
	ctx := context.Background()

	// The other process, whose sessions are told apart by their
	// application_name.
	oc := pgstore.DefaultConfig(dbURL + "&application_name=other_ingest")
	oc.Logger = slog.New(slog.DiscardHandler)
	other, err := pgstore.Open(ctx, oc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	b, err := other.Begin(ctx, "other", 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Abort) // before other.Close, which waits for its connections
	for i := range 100 {
		r := promotion.Record{ID: promotion.ID{byte(i), 1, 2, 3}, PriceMicros: int64(i), Expires: 1}
		if err := b.Add(0, &r, int64(i+1)); err != nil {
			t.Fatal(err)
		}
	}

	status, m := post(t, e.url+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}})
	if status != http.StatusConflict || !strings.Contains(fmt.Sprint(m["error"]), "already running") {
		t.Fatalf("import while another process imports: %d %v, want 409", status, m)
	}
	if _, ok := m["import_id"]; ok {
		t.Fatalf("409 names an import of this process, but none runs here: %v", m)
	}

	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// Maintenance runs every 50ms but must leave a live import alone.
	// That nothing happens cannot be waited for: give it ten intervals.
	time.Sleep(10 * 50 * time.Millisecond)
	building, tables, err := leftovers(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	// Its tables are not visible yet: each is created in the
	// transaction of its COPY.
	if building != 1 || tables != 0 {
		t.Fatalf("maintenance dropped a live import of another process: %d building, %d tables", building, tables)
	}

	// The other process dies: its sessions end, its advisory lock with
	// them, and its version stays building.
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'other_ingest'"); err != nil {
		t.Fatal(err)
	}
	b.Abort() // releases what is left of it on this side; its drop fails on the dead session
	localsvctest.SucceedsSoon(t, 10*time.Second, func() error {
		building, tables, err := leftovers(ctx, conn)
		if err != nil {
			return err
		}
		if building != 0 || tables != 0 {
			return fmt.Errorf("%d versions building and %d of their tables remain", building, tables)
		}
		return nil
	})

	// The lock is free again: this server imports.
	status, m = post(t, e.url+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}})
	if status != http.StatusOK || m["dataset_version"] != float64(1) {
		t.Fatalf("import once the other process is gone: %d %v", status, m)
	}
}

// MaintainInterval is validated and defaults to 10 seconds.
func TestMaintainIntervalConfig(t *testing.T) {
	c := DefaultConfig()
	if c.MaintainInterval != 10*time.Second {
		t.Fatalf("default MaintainInterval %v, want 10s", c.MaintainInterval)
	}
	c.PostgresURL, c.KafkaBrokers = "postgres://x@127.0.0.1:1/x", []string{"127.0.0.1:1"}
	c.MaintainInterval = -time.Second
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "MaintainInterval") {
		t.Fatalf("negative MaintainInterval: %v", err)
	}
}

// scrapeMetric returns the value of the sample name in base's /metrics (0
// when it is not there).
func scrapeMetric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				t.Fatalf("metric %s: %q: %v", name, line, err)
			}
			return f
		}
	}
	return 0
}
