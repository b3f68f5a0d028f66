package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/ingestsvc"
	"github.com/promotion-service/promo/localsvc"
)

// CopyBenchConfig describes promo bench copy: the cluster import into
// PostgreSQL against psql's \copy of the same rows.
type CopyBenchConfig struct {
	// Rows is the size of the generated file.
	Rows int64
	// PostgresURL is the server to use; empty starts one in a temporary
	// directory (fsync off, as for tests).
	PostgresURL string
	// Partitions of the import (default 16).
	Partitions int
	// Logger receives the ingest service's messages (default: none).
	Logger *slog.Logger
}

// CopyReport is what promo bench copy measured.
type CopyReport struct {
	Rows int64 `json:"rows"`
	// ImportSeconds is POST /process-csv?wait=true to committed, through a
	// promo ingest service in this process.
	ImportSeconds       float64 `json:"import_seconds"`
	ImportRowsPerSecond float64 `json:"import_rows_per_second"`
	// CopySeconds is psql \copy of the same rows (RFC 3339 dates) into an
	// unindexed table with numeric price and timestamptz.
	CopySeconds       float64 `json:"psql_copy_seconds"`
	CopyRowsPerSecond float64 `json:"psql_copy_rows_per_second"`
	// Speedup is CopySeconds / ImportSeconds (the target is at least 1,
	// the goal 2).
	Speedup float64 `json:"speedup"`
	// PeakRSSBytes is this process's peak resident memory (generator and
	// ingest service; PostgreSQL runs apart).
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
}

// RunCopyBench generates the rows in both date forms, times psql \copy of
// one and the import of the other.
func RunCopyBench(ctx context.Context, c CopyBenchConfig) (CopyReport, error) {
	if c.Rows <= 0 {
		return CopyReport{}, fmt.Errorf("bench: rows must be positive, got %d", c.Rows)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	psql, err := exec.LookPath("psql")
	if err != nil {
		return CopyReport{}, fmt.Errorf("bench: psql is needed for the \\copy baseline: %w", err)
	}
	dir, err := os.MkdirTemp("", "promo-bench-copy-")
	if err != nil {
		return CopyReport{}, err
	}
	defer os.RemoveAll(dir)
	// PostgreSQL runs as its own user when this process is root.
	if err := os.Chmod(dir, 0o755); err != nil {
		return CopyReport{}, err
	}
	if c.PostgresURL == "" {
		pg, err := localsvc.StartPostgres(ctx, localsvc.PostgresConfig{Dir: filepath.Join(dir, "pg")})
		if err != nil {
			return CopyReport{}, err
		}
		defer pg.Stop()
		c.PostgresURL = pg.URL
	}
	goRows := filepath.Join(dir, "promotions.csv")
	rfcRows := filepath.Join(dir, "promotions-rfc3339.csv")
	gc := gen.DefaultConfig(c.Rows)
	if _, err := generateFile(goRows, gc); err != nil {
		return CopyReport{}, err
	}
	gc.Format = gen.FormatRFC3339 // the same rows: the generator draws the same values
	if _, err := generateFile(rfcRows, gc); err != nil {
		return CopyReport{}, err
	}
	rep := CopyReport{Rows: c.Rows}
	if rep.CopySeconds, err = psqlCopy(ctx, psql, c.PostgresURL, rfcRows); err != nil {
		return rep, err
	}
	if rep.ImportSeconds, err = ingestImport(ctx, c, dir, filepath.Base(goRows)); err != nil {
		return rep, err
	}
	rep.ImportRowsPerSecond = float64(c.Rows) / rep.ImportSeconds
	rep.CopyRowsPerSecond = float64(c.Rows) / rep.CopySeconds
	rep.Speedup = rep.CopySeconds / rep.ImportSeconds
	rep.PeakRSSBytes = peakRSS()
	return rep, nil
}

// psqlCopy times psql \copy of the CSV at path into a new unindexed table
// with numeric price and timestamptz, and drops the table.
func psqlCopy(ctx context.Context, psql, postgresURL, path string) (seconds float64, err error) {
	conn, err := pgx.Connect(ctx, postgresURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS copy_baseline; CREATE TABLE copy_baseline (id uuid, price numeric, expiration_date timestamptz)"); err != nil {
		return 0, err
	}
	start := time.Now()
	out, err := exec.CommandContext(ctx, psql, postgresURL, "-v", "ON_ERROR_STOP=1", "-c",
		fmt.Sprintf(`\copy copy_baseline FROM '%s' WITH (FORMAT csv)`, path)).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("bench: psql \\copy: %w: %s", err, out)
	}
	seconds = time.Since(start).Seconds()
	_, _ = conn.Exec(ctx, "DROP TABLE copy_baseline")
	return seconds, nil
}

// ingestImport times the import of name, a file in dir, through a promo
// ingest service in this process, POST to committed.
func ingestImport(ctx context.Context, c CopyBenchConfig, dir, name string) (seconds float64, err error) {
	k, err := localsvc.StartKafka(0, events.Topic)
	if err != nil {
		return 0, err
	}
	defer k.Stop()
	cfg := ingestsvc.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.PostgresURL = c.PostgresURL
	cfg.KafkaBrokers = []string{k.Addr()}
	cfg.ImportDir = dir
	cfg.Logger = c.Logger
	if c.Partitions > 0 {
		cfg.Partitions = c.Partitions
	}
	srv, err := ingestsvc.Start(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer srv.Close(context.Background())
	start := time.Now()
	if err := importFile(context.Background(), "http://"+srv.Addr(), name); err != nil {
		return 0, err
	}
	return time.Since(start).Seconds(), nil
}
