// Package pgstore is the cluster's write store in PostgreSQL: dataset
// versions, their rows laid out by ring slot, and the outbox of events.
//
// The rows of version N are split into tables promo_v<N>_p<i> along the
// ring's replica sets (layout.go): every slot of a table has the same
// owners, so that a read node reads whole tables of its slots and no
// others; dataset_slots.part records each slot's table. Without a ring, with
// too many replica sets, and in versions written before that column,
// table i holds the contiguous slot range [i*Slots/Partitions,
// (i+1)*Slots/Partitions). The tables have no index: each is
// created and filled by one binary COPY ... FREEZE in its own transaction,
// in parallel, while the CSV is still being parsed; at commit, the groups
// that hold a duplicate are rewritten without it (dedup). A tuple is a
// group of up to 96 rows of one slot: the slot, the records packed in one
// bytea (promotion.AppendPacked) and their lines in the file in another;
// copy.go frames the streams both ways.
//
// Invariants:
//   - a version is 'building' until one transaction marks it 'committed'
//     and inserts its outbox row; nothing reads a building version, and
//     one that was building when its import died is dropped by the next
//     import or Open;
//   - one import runs at a time across processes (a PostgreSQL advisory
//     lock), so version numbers are max+1 without gaps;
//   - of duplicate ids the row with the highest line is kept.
//   - table activation (one row) says which committed version the cluster
//     serves and at which epoch; every activation raises the epoch, in a
//     transaction that locks that row, as do RequestActivation and the drop
//     of a committed version, so retention never drops the version that
//     serves or is being activated.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/promotion-service/promo/ring"
)

// Errors callers branch on.
var (
	// ErrBusy is returned by Begin while another import (in this process
	// or another) holds the import lock.
	ErrBusy = errors.New("pgstore: another import is in progress")
	// ErrUnavailable wraps failures to reach PostgreSQL.
	ErrUnavailable = errors.New("pgstore: PostgreSQL is unavailable")
	// ErrTooManyDuplicates fails a Commit whose duplicates cannot be
	// removed in bounded memory: the rows of one slot pass dedupSlotBytes.
	ErrTooManyDuplicates = errors.New("pgstore: the file repeats its ids too often")
)

// importLock is the advisory lock key held for the whole of an import.
const importLock = 0x70726f6d6f01

// Config configures a Store. The zero value of a field selects its default.
type Config struct {
	// URL is the PostgreSQL connection string (required).
	URL string
	// Dataset names the dataset in events (default "promotions").
	Dataset string
	// Slots is the number of ring slots (default ring.DefaultSlots).
	Slots int
	// Partitions is about the number of tables a version is split into,
	// and so of parallel COPY streams (default 16): each replica set of the
	// ring gets Partitions/sets of them, at least one (layout.go); without
	// a ring, each is a contiguous slot range. It must divide Slots.
	Partitions int
	// KeepVersions is how many committed versions are kept (default 2).
	KeepVersions int
	// FilterBytes sizes the bloom filters that find candidate duplicate
	// ids while rows stream in, one per table of the version, each of
	// FilterBytes over the tables rounded up to a power of two (default
	// 64 MiB in all).
	FilterBytes int
	// MaxCandidates bounds the candidate duplicates held in memory; beyond
	// it every table is deduplicated in full at commit (default 1<<20).
	MaxCandidates int
	// BatchRows is the number of rows handed to a COPY stream at once
	// (default 4096).
	BatchRows int
	// ServingGrace: a read node's report that it serves a version keeps
	// that version from being dropped for this long (default 10 minutes).
	ServingGrace time.Duration
	// MinRowsRatio is the activation guard: a version committed with
	// fewer rows than MinRowsRatio times the serving version's is held
	// (Commit fails with ErrHeld; the version is committed, and read
	// nodes activate it only when asked, RequestActivation). Zero, unlike
	// the other fields, turns the guard off.
	MinRowsRatio float64
	// Logger receives operational messages (default slog.Default()).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults for url.
func DefaultConfig(url string) Config {
	return Config{
		URL:           url,
		Dataset:       "promotions",
		Slots:         ring.DefaultSlots,
		Partitions:    16,
		KeepVersions:  2,
		FilterBytes:   64 << 20,
		MaxCandidates: 1 << 20,
		BatchRows:     4096,
		ServingGrace:  10 * time.Minute,
		Logger:        slog.Default(),
	}
}

func (c *Config) fillDefaults() {
	d := DefaultConfig(c.URL)
	if c.Dataset == "" {
		c.Dataset = d.Dataset
	}
	if c.Slots == 0 {
		c.Slots = d.Slots
	}
	if c.Partitions == 0 {
		c.Partitions = d.Partitions
	}
	if c.KeepVersions == 0 {
		c.KeepVersions = d.KeepVersions
	}
	if c.FilterBytes == 0 {
		c.FilterBytes = d.FilterBytes
	}
	if c.MaxCandidates == 0 {
		c.MaxCandidates = d.MaxCandidates
	}
	if c.BatchRows == 0 {
		c.BatchRows = d.BatchRows
	}
	if c.ServingGrace == 0 {
		c.ServingGrace = d.ServingGrace
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
}

// Validate reports the first invalid field of c.
func (c *Config) Validate() error {
	switch {
	case c.URL == "":
		return errors.New("pgstore: URL is required")
	case c.Slots < 1 || c.Slots > 32767:
		return fmt.Errorf("pgstore: Slots must be between 1 and 32767, got %d", c.Slots)
	case c.Partitions < 1 || c.Slots%c.Partitions != 0:
		return fmt.Errorf("pgstore: Partitions must divide Slots (%d), got %d", c.Slots, c.Partitions)
	case c.KeepVersions < 1:
		return fmt.Errorf("pgstore: KeepVersions must be at least 1, got %d", c.KeepVersions)
	case c.MinRowsRatio < 0:
		return fmt.Errorf("pgstore: MinRowsRatio must not be negative, got %g", c.MinRowsRatio)
	case c.FilterBytes < 1<<10 || c.MaxCandidates < 1 || c.BatchRows < 1:
		return errors.New("pgstore: FilterBytes, MaxCandidates and BatchRows must be positive")
	}
	return nil
}

// Store is the PostgreSQL write store. It is safe for concurrent use.
type Store struct {
	cfg  Config
	log  *slog.Logger
	pool *pgxpool.Pool
}

// Open connects to PostgreSQL, applies the migrations and removes what a
// crashed import left behind. A bad URL or an unreachable server is a
// one-line error.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.fillDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("invalid PostgreSQL URL: %s", redact(err.Error()))
	}
	pc.MaxConns = int32(max(cfg.Partitions, MaxTables) + 8)
	pc.ConnConfig.ConnectTimeout = 10 * time.Second
	// Connections are acquired rarely (a few per import, one per API
	// read): checking each one costs little and spares the first request
	// after a PostgreSQL restart a dead connection.
	pc.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	pc.PingTimeout = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("invalid PostgreSQL URL: %s", redact(err.Error()))
	}
	s := &Store{cfg: cfg, log: cfg.Logger.With("component", "pgstore"), pool: pool}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot connect to PostgreSQL at %s: %w: %s", s.Where(), ErrUnavailable, oneLine(err))
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot apply the schema: %w", err)
	}
	if err := s.cleanupAtStart(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// startLockWait bounds how long a start waits for the import lock when
// versions are left building: the session of an import killed a moment ago
// holds it until PostgreSQL notices that its client is gone.
const startLockWait = 3 * time.Second

// cleanupAtStart drops what dead imports left, as cleanupIfIdle, waiting a
// little for the import lock when there is something to drop. When the
// lock stays held (a live import of another process), the periodic
// maintenance drops it later.
func (s *Store) cleanupAtStart(ctx context.Context) error {
	deadline := time.Now().Add(startLockWait)
	for {
		done, err := s.tryCleanup(ctx)
		if err != nil || done {
			return err
		}
		var building int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM datasets WHERE state = 'building'").Scan(&building); err != nil {
			return unavailable(err)
		}
		if building == 0 || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Where describes the server, host:port/database, without credentials.
func (s *Store) Where() string {
	c := s.pool.Config().ConnConfig
	return fmt.Sprintf("%s/%s", net.JoinHostPort(c.Host, fmt.Sprint(c.Port)), c.Database)
}

// ClusterID returns the id of the cluster this database holds: 16 hex
// digits drawn when the schema was created, so a database created again
// has a new one. Read nodes put it in the keys of the caches they share.
func (s *Store) ClusterID(ctx context.Context) (string, error) {
	var id string
	if err := s.pool.QueryRow(ctx, "SELECT id FROM cluster_id").Scan(&id); err != nil {
		return "", unavailable(fmt.Errorf("cannot read the cluster id: %w", err))
	}
	return id, nil
}

// Pool returns the connection pool, for the outbox relay and read nodes.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping reports whether PostgreSQL answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return unavailable(err)
	}
	return nil
}

// unavailable wraps err with ErrUnavailable when it means the server could
// not be reached or went away.
func unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	var ne net.Error
	var pe *pgconn.ConnectError
	if errors.As(err, &ne) || errors.As(err, &pe) || pgconn.SafeToRetry(err) || errors.Is(err, net.ErrClosed) ||
		isShutdown(err) || errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// isShutdown reports PostgreSQL errors of a server going away.
func isShutdown(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		var ce interface{ Temporary() bool }
		return errors.As(err, &ce) && ce.Temporary()
	}
	switch pe.Code {
	case "57P01", "57P02", "57P03", "08000", "08003", "08006", "08001", "08004":
		return true
	}
	return false
}

// redact removes a password from a pgx error message.
func redact(msg string) string {
	if u, err := url.Parse(msg); err == nil && u.User != nil {
		return u.Redacted()
	}
	return msg
}

// tableName returns the table of partition p of version v.
func tableName(v uint64, p int) string { return fmt.Sprintf("promo_v%d_p%03d", v, p) }

// PartitionOf returns the table of slot in a version laid out in slot
// ranges: one imported before the ring was seeded, or by an older release
// (layout.go).
func (s *Store) PartitionOf(slot int) int { return slot / (s.cfg.Slots / s.cfg.Partitions) }

// Maintain drops what dead imports left and the versions beyond
// retention, unless an import is running right now. The ingest service
// calls it periodically, so that leftovers go once PostgreSQL is back.
func (s *Store) Maintain(ctx context.Context) error {
	if err := s.cleanupIfIdle(ctx); err != nil {
		return err
	}
	return s.retain(ctx)
}

// cleanupIfIdle drops the tables of versions left 'building' by a dead
// import, unless an import is running right now.
func (s *Store) cleanupIfIdle(ctx context.Context) error {
	_, err := s.tryCleanup(ctx)
	return err
}

// tryCleanup is cleanupIfIdle, reporting whether it held the lock.
func (s *Store) tryCleanup(ctx context.Context) (bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, unavailable(err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", importLock).Scan(&locked); err != nil {
		return false, unavailable(err)
	}
	if !locked {
		return false, nil
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", importLock)
	return true, s.cleanup(ctx, conn.Conn())
}

// cleanup drops building versions; the caller holds the import lock.
func (s *Store) cleanup(ctx context.Context, conn *pgx.Conn) error {
	lefts, err := layouts(ctx, conn, "SELECT version, partitions FROM datasets WHERE state = 'building'")
	if err != nil {
		return err
	}
	for _, l := range lefts {
		s.log.Info("removing the rows of an import that did not finish", "version", l.Version)
		if err := dropVersion(ctx, conn, l.Version, l.Partitions, true); err != nil {
			return err
		}
	}
	return nil
}

// layout is what dropping a version needs to know of it.
type layout struct {
	Version    uint64
	Partitions int
}

// layouts runs a query of version and partitions.
func layouts(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql string, args ...any) ([]layout, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, unavailable(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[layout])
	return out, unavailable(err)
}

// errKept: dropVersion kept a committed version that serves or is being
// activated.
var errKept = errors.New("pgstore: the version serves or is being activated")

// dropVersion drops the tables of version v and, for a version that never
// committed (unbuilt), its datasets row; a committed one is marked
// dropped, unless it serves or is being activated (errKept). With unbuilt,
// a version no longer building is left as it is.
func dropVersion(ctx context.Context, conn *pgx.Conn, v uint64, partitions int, unbuilt bool) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if unbuilt {
			// Only a version still building: an import whose commit
			// failed ambiguously (the COMMIT applied, its answer lost)
			// aborts with its version committed and announced, whose
			// tables the read nodes are about to pull. The row lock
			// orders this against a commit in flight.
			var state string
			err := tx.QueryRow(ctx, "SELECT state FROM datasets WHERE version = $1 FOR UPDATE", int64(v)).Scan(&state)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				// No row: tables left behind, if any, belong to no version.
			case err != nil:
				return unavailable(err)
			case state != "building":
				return nil
			}
		}
		for p := range partitions {
			if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+tableName(v, p)); err != nil {
				return unavailable(err)
			}
		}
		if !unbuilt {
			// Never the version that serves or is being activated:
			// RequestActivation locks the same row, so either it sees
			// the version dropped, or this sees its request.
			var keep bool
			if err := tx.QueryRow(ctx, "SELECT version = $1 OR target IS NOT DISTINCT FROM $1 FROM activation FOR UPDATE", int64(v)).Scan(&keep); err != nil {
				return unavailable(err)
			}
			if keep {
				return errKept
			}
		}
		var err error
		if unbuilt {
			_, err = tx.Exec(ctx, "DELETE FROM datasets WHERE version = $1 AND state = 'building'", v)
		} else {
			if _, err = tx.Exec(ctx, "UPDATE datasets SET state = 'dropped', dropped_at = now() WHERE version = $1", v); err == nil {
				_, err = tx.Exec(ctx, "DELETE FROM dataset_slots WHERE version = $1", v)
			}
		}
		return unavailable(err)
	})
}

// Version describes a dataset version.
type Version struct {
	Version     uint64     `json:"version"`
	State       string     `json:"state"`
	Rows        int64      `json:"rows"`
	Duplicates  int64      `json:"duplicates"`
	Slots       int        `json:"slots"`
	Partitions  int        `json:"partitions"`
	Checksum    string     `json:"checksum"`
	Source      string     `json:"source,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	CommittedAt *time.Time `json:"committed_at,omitempty"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
	// Epoch is the activation epoch of the version's latest activation.
	Epoch uint64 `json:"epoch,omitempty"`
	// HeldReason says why the activation guard held the version at its
	// commit; it stays after an activation on purpose, as history.
	HeldReason string `json:"held_reason,omitempty"`
	// RecordForm is how the version's tables hold its records: RecordForm
	// (groups), or 0 when the import did not record it (before migration
	// 007): groups or the row form of versions written before groups.
	RecordForm int `json:"-"`
}

const versionColumns = "version, state, rows, duplicates, slots, partitions, checksum, source, created_at, committed_at, activated_at, " +
	"coalesce(epoch, 0), coalesce(held_reason, ''), coalesce(record_form, 0)"

func scanVersion(row pgx.Row) (Version, error) {
	var v Version
	err := row.Scan(&v.Version, &v.State, &v.Rows, &v.Duplicates, &v.Slots, &v.Partitions, &v.Checksum, &v.Source,
		&v.CreatedAt, &v.CommittedAt, &v.ActivatedAt, &v.Epoch, &v.HeldReason, &v.RecordForm)
	return v, err
}

// Versions lists the kept versions, newest first, with their state as
// an operator sees it: "building", "committed", or "held" (committed, held
// by the activation guard and never activated). The one the cluster
// serves is Active's.
func (s *Store) Versions(ctx context.Context) ([]Version, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+versionColumns+" FROM datasets WHERE state <> 'dropped' ORDER BY version DESC")
	if err != nil {
		return nil, unavailable(err)
	}
	defer rows.Close()
	var out []Version
	for rows.Next() {
		v, err := scanVersion(rows)
		if err != nil {
			return nil, err
		}
		if v.State == "committed" && v.HeldReason != "" && v.ActivatedAt == nil {
			v.State = "held"
		}
		out = append(out, v)
	}
	return out, unavailable(rows.Err())
}

// Latest returns the newest committed version, and false when there is
// none.
func (s *Store) Latest(ctx context.Context) (Version, bool, error) {
	v, err := scanVersion(s.pool.QueryRow(ctx, "SELECT "+versionColumns+" FROM datasets WHERE state = 'committed' ORDER BY version DESC LIMIT 1"))
	if errors.Is(err, pgx.ErrNoRows) {
		return Version{}, false, nil
	}
	if err != nil {
		return Version{}, false, unavailable(err)
	}
	return v, true, nil
}

// retain drops the committed versions beyond KeepVersions that no read
// node reported serving within ServingGrace, except the one the cluster
// serves and the one it is being asked to activate (dropVersion).
func (s *Store) retain(ctx context.Context) error {
	olds, err := layouts(ctx, s.pool, `SELECT version, partitions FROM datasets
		WHERE state = 'committed' ORDER BY version DESC OFFSET $1`, s.cfg.KeepVersions)
	if err != nil {
		return err
	}
	for _, o := range olds {
		inUse, err := s.InUse(ctx, o.Version)
		if err != nil {
			return err
		}
		if inUse {
			s.log.Info("keeping an old version a read node still serves", "version", o.Version)
			continue
		}
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			return unavailable(err)
		}
		err = dropVersion(ctx, conn.Conn(), o.Version, o.Partitions, false)
		conn.Release()
		if errors.Is(err, errKept) {
			s.log.Info("keeping an old version the cluster serves or is asked to activate", "version", o.Version)
			continue
		}
		if err != nil {
			return err
		}
		s.log.Info("dropped an old dataset version", "version", o.Version)
	}
	return nil
}

// InUse reports whether a read node reported serving version v within
// ServingGrace (read nodes write table node_versions).
func (s *Store) InUse(ctx context.Context, v uint64) (bool, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM node_versions
		WHERE version = $1 AND state = 'serving' AND updated_at > now() - $2::interval`,
		v, fmt.Sprintf("%d milliseconds", s.cfg.ServingGrace.Milliseconds())).Scan(&n)
	if err != nil {
		return false, unavailable(err)
	}
	return n > 0, nil
}

// oneLine joins the distinct lines of err's message: pgx reports one line
// per address tried.
func oneLine(err error) string {
	var out []string
	seen := map[string]bool{}
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return strings.Join(out, " ")
}
