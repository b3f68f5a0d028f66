package bench

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// withPostgres runs fn on a new connection to the cluster's PostgreSQL,
// all within d.
func (h *harness) withPostgres(ctx context.Context, d time.Duration, fn func(context.Context, *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	conn, err := pgx.Connect(ctx, h.e.Postgres)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return fn(ctx, conn)
}

func (h *harness) postgresVersion(ctx context.Context) string {
	var v string
	_ = h.withPostgres(ctx, 5*time.Second, func(ctx context.Context, c *pgx.Conn) error {
		return c.QueryRow(ctx, "SHOW server_version").Scan(&v)
	})
	return v
}

// copyProgress returns the tables that a COPY of kind ("COPY FROM" or
// "COPY TO") runs on right now, named as its statement names them (the
// table of an uncommitted transaction has no name for other sessions),
// with the rows moved so far.
func (h *harness) copyProgress(ctx context.Context, kind string) (map[string]int64, error) {
	out := map[string]int64{}
	err := h.withPostgres(ctx, 2*time.Second, func(ctx context.Context, c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT coalesce(a.query, ''), p.tuples_processed
			FROM pg_stat_progress_copy p JOIN pg_stat_activity a ON a.pid = p.pid WHERE p.command = $1`, kind)
		if err != nil {
			return err
		}
		for rows.Next() {
			var query string
			var n int64
			if err := rows.Scan(&query, &n); err != nil {
				return err
			}
			if m := versionTable.FindString(query); m != "" {
				out[m] = n
			}
		}
		return rows.Err()
	})
	return out, err
}

var versionTable = regexp.MustCompile(`promo_v[0-9]+_p[0-9]+`)

// versionRows returns version v's state in table datasets ("" when it
// has no row) and the tables of v that exist.
func (h *harness) versionRows(ctx context.Context, v uint64) (state string, tables []string, err error) {
	err = h.withPostgres(ctx, 5*time.Second, func(ctx context.Context, c *pgx.Conn) error {
		err := c.QueryRow(ctx, "SELECT state FROM datasets WHERE version = $1", int64(v)).Scan(&state)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		rows, err := c.Query(ctx, "SELECT tablename FROM pg_tables WHERE tablename LIKE $1 ORDER BY 1", fmt.Sprintf("promo_v%d\\_%%", v))
		if err != nil {
			return err
		}
		tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return state, tables, err
}

// leftoverTables returns the version tables of versions that are not
// committed: what a failed or killed import left behind.
func (h *harness) leftoverTables(ctx context.Context) ([]string, error) {
	var tables []string
	err := h.withPostgres(ctx, 5*time.Second, func(ctx context.Context, c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT tablename FROM pg_tables
			WHERE tablename ~ '^promo_v[0-9]+_p[0-9]+$'
			AND substring(tablename FROM '^promo_v([0-9]+)_')::bigint NOT IN (SELECT version FROM datasets WHERE state = 'committed')
			ORDER BY 1`)
		if err != nil {
			return err
		}
		tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return tables, err
}

// waitMidCopy waits until ingest runs the COPY streams of a new version
// and up has sent a quarter of its file, at most d, and returns the
// version and what it saw. (Rows reach a stream in batches of thousands,
// so PostgreSQL may have received none of them yet.)
func (h *harness) waitMidCopy(ctx context.Context, up *upload, d time.Duration) (uint64, string, error) {
	deadline := time.Now().Add(d)
	for {
		copies, err := h.copyProgress(ctx, "COPY FROM")
		if sent := up.sent(); err == nil && len(copies) > 0 && sent >= 0.25 {
			var v uint64
			var moved int64
			for table, n := range copies {
				var p int
				if _, err := fmt.Sscanf(table, "promo_v%d_p%d", &v, &p); err != nil {
					return 0, "", err
				}
				moved += n
			}
			return v, fmt.Sprintf("COPY FROM STDIN into %d tables of version %d running (pg_stat_progress_copy: %d rows received so far), %.0f%% of the file sent",
				len(copies), v, moved, 100*sent), nil
		}
		if time.Now().After(deadline) {
			return 0, "", fmt.Errorf("no COPY into a new version's tables with a quarter of the file sent within %v (last error: %v)", d, err)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return 0, "", err
		}
	}
}
