package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/promotion-service/promo/promotion"
)

// This file is the read nodes' side of the store: pulling a shard,
// reporting what a node prepared and serves, and cluster activation.

// Node states in table node_versions.
const (
	NodePrepared = "prepared"
	NodeServing  = "serving"
)

// Version returns version v, or pgx.ErrNoRows wrapped when it is unknown.
func (s *Store) Version(ctx context.Context, v uint64) (Version, error) {
	out, err := scanVersion(s.pool.QueryRow(ctx, "SELECT "+versionColumns+" FROM datasets WHERE version = $1", v))
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		err = unavailable(err)
	}
	return out, err
}

// Report records that node prepared or serves version v (state is
// NodePrepared or NodeServing), refreshing the time of the report.
func (s *Store) Report(ctx context.Context, node string, v uint64, state string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO node_versions (node, version, state, updated_at) VALUES ($1, $2, $3, now())
		ON CONFLICT (node, version) DO UPDATE SET state = EXCLUDED.state, updated_at = now()`, node, v, state)
	return unavailable(err)
}

// Forget removes node's reports of versions other than keep.
func (s *Store) Forget(ctx context.Context, node string, keep ...uint64) error {
	ks := make([]int64, len(keep))
	for i, k := range keep {
		ks[i] = int64(k)
	}
	_, err := s.pool.Exec(ctx, "DELETE FROM node_versions WHERE node = $1 AND NOT (version = ANY($2))", node, ks)
	return unavailable(err)
}

// Reported returns the nodes that prepared or serve version v.
func (s *Store) Reported(ctx context.Context, v uint64) ([]string, error) {
	rows, err := s.pool.Query(ctx, "SELECT node FROM node_versions WHERE version = $1", v)
	if err != nil {
		return nil, unavailable(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return out, unavailable(err)
}

// SlotSum is the row count and checksum of one slot of a version.
type SlotSum struct {
	Rows     int64
	Checksum uint64
}

// SlotSums returns the recorded sums of the given slots of version v.
func (s *Store) SlotSums(ctx context.Context, v uint64, slots []int) (map[int]SlotSum, error) {
	rows, err := s.pool.Query(ctx, "SELECT slot, rows, checksum FROM dataset_slots WHERE version = $1 AND slot = ANY($2)", v, slots)
	if err != nil {
		return nil, unavailable(err)
	}
	defer rows.Close()
	out := make(map[int]SlotSum, len(slots))
	for rows.Next() {
		var slot int
		var sum SlotSum
		var c int64
		if err := rows.Scan(&slot, &sum.Rows, &c); err != nil {
			return nil, err
		}
		sum.Checksum = uint64(c)
		out[slot] = sum
	}
	return out, unavailable(rows.Err())
}

// Pull streams the rows of part.Slots of version v, all within table
// part.Table, with COPY ... TO STDOUT (FORMAT binary), calling fn for each
// row with its slot. A Whole part is the table read without a filter. The
// record passed to fn is reused. part.Form says how the table holds its
// rows, and a form this code does not know is refused, not misread. A
// version that does not say (0: written before imports recorded it) is
// read as groups, or in the row form of versions before groups when
// PostgreSQL refuses the groups' columns, before it sends a row.
func (s *Store) Pull(ctx context.Context, v uint64, part PullPart, fn func(slot int, r *promotion.Record) error) error {
	if len(part.Slots) == 0 {
		return nil
	}
	if part.Form != 0 && part.Form != RecordForm {
		return fmt.Errorf("%w: version %d holds its records in form %d, and this node reads form %d: upgrade it", ErrUnknownForm, v, part.Form, RecordForm)
	}
	table := tableName(v, part.Table)
	d := &copyDecoder{fn: fn, want: wanted(part.Slots)}
	err := s.copyOut(ctx, table, pullSQL(table, part, pullColumns), d)
	var pgErr *pgconn.PgError
	if part.Form != 0 || !errors.As(err, &pgErr) || pgErr.Code != undefinedColumn {
		return err
	}
	d = &copyDecoder{fn: fn, form: formRows}
	sql := pullSQL(table, part, rowPullColumns)
	if part.Whole && part.RingSlots > 0 {
		// The row form's slot column costs PostgreSQL a send function
		// per row: a whole table is read without it.
		d.form, d.ringSlots = formRecords, part.RingSlots
		sql = pullSQL(table, part, rowRecordColumns)
	}
	return s.copyOut(ctx, table, sql, d)
}

// ErrUnknownForm is returned, wrapped, by Pull of a version written by a
// newer import, in a record form this code does not read.
var ErrUnknownForm = errors.New("pgstore: unknown record form")

// wanted returns slots as a set indexed by slot.
func wanted(slots []int) []bool {
	out := make([]bool, max(slices.Max(slots)+1, 0))
	for _, s := range slots {
		if s >= 0 {
			out[s] = true
		}
	}
	return out
}

// undefinedColumn is PostgreSQL's SQLSTATE for a column a table lacks.
const undefinedColumn = "42703"

// pullSQL is the COPY of columns of part's slots of table.
func pullSQL(table string, part PullPart, columns string) string {
	if part.Whole {
		return "COPY " + table + " (" + columns + ") TO STDOUT (FORMAT binary)"
	}
	// COPY takes no parameters: the slots are inlined (integers only), as
	// an array: PostgreSQL tests = ANY of a constant array by a hash, three
	// times faster than a long IN list here.
	var list strings.Builder
	for i, sl := range part.Slots {
		if i > 0 {
			list.WriteByte(',')
		}
		list.WriteString(strconv.Itoa(sl))
	}
	return fmt.Sprintf("COPY (SELECT %s FROM %s WHERE slot = ANY('{%s}'::smallint[])) TO STDOUT (FORMAT binary)", columns, table, list.String())
}

// copyOut runs sql, a COPY ... TO STDOUT of table, into d.
func (s *Store) copyOut(ctx context.Context, table, sql string, d *copyDecoder) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return unavailable(err)
	}
	defer conn.Release()
	if _, err := conn.Conn().PgConn().CopyTo(ctx, d, sql); err != nil {
		if d.err != nil {
			return d.err
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == undefinedColumn {
			// Not an outage: the table is not in the form its version
			// records (or, when it records none, in neither form).
			return fmt.Errorf("pgstore: %s lacks the columns of its version's record form: %w", table, err)
		}
		return unavailable(fmt.Errorf("cannot pull slots of %s: %w", table, err))
	}
	if d.err != nil {
		return d.err
	}
	if !d.trailer {
		return fmt.Errorf("pgstore: COPY of %s ended without its trailer", table)
	}
	return nil
}
