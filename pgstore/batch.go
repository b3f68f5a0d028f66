package pgstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// Batch is one version being written. Add may be called concurrently for
// different workers; Commit or Abort ends it.
type Batch struct {
	s       *Store
	version uint64
	source  string
	created time.Time
	lock    *pgxpool.Conn // holds the import advisory lock

	ctx    context.Context
	cancel context.CancelCauseFunc
	parts  []*partition
	partOf []int // the table of each slot (layout.go)
	adders []*adder
	// filters holds a duplicate filter per table: an id's duplicates are
	// in its table (the same slot), and a full buffer of one table's rows
	// is tested at once, so the tests of a buffer stay within one
	// filter of FilterBytes/tables, which the CPU's caches and TLB hold
	// far better than one filter of FilterBytes (BenchmarkBloom: 30-36 ns
	// an id against 76-89 here).
	filters []*bloom

	candMu    sync.Mutex
	cands     []map[promotion.ID]struct{} // per partition
	ncands    int
	fullDedup bool // too many candidates: deduplicate every table

	rowsPool sync.Pool
	ended    atomic.Bool
	durable  func() // OnDurable's
}

// OnDurable sets a function that Commit calls once the version and its
// outbox row are durable, before it drops the versions beyond retention
// (which takes a while): the ingest service kicks the outbox relay there,
// so that read nodes hear of the version without waiting for that. Call it
// before Commit.
func (b *Batch) OnDurable(fn func()) { b.durable = fn }

// partition is one table of the version and the COPY stream filling it.
type partition struct {
	table string
	conn  *pgxpool.Conn
	tx    pgx.Tx
	rows  chan []row
	done  chan struct{}
	err   error
}

// adder is the per-worker state of Add.
type adder struct {
	bufs     [][]row
	slotRows []int64
	slotSum  []uint64
	// pend holds the rows Add took and has not yet put in their tables'
	// buffers (flush).
	pend  [pendRows]row
	npend int
	touch uint64 // keeps the loads of flush
}

// pendRows is how many rows Add holds before it hands them to their
// tables' buffers, and how many the filter tests at a time (filterRows):
// enough loads in flight to hide most of the memory latency.
const pendRows = 16

// Begin starts version max+1 for rows added by up to workers goroutines:
// it takes the import lock (ErrBusy when held elsewhere), drops what a dead
// import left, records the version as building and opens one COPY stream
// per partition.
func (s *Store) Begin(ctx context.Context, source string, workers int) (*Batch, error) {
	workers = max(workers, 1)
	lock, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	if err := s.takeImportLock(ctx, lock.Conn()); err != nil {
		lock.Release()
		return nil, err
	}
	b := &Batch{s: s, source: source, lock: lock, created: time.Now().UTC()}
	var tables int
	b.ctx, b.cancel = context.WithCancelCause(context.Background())
	ok := false
	defer func() {
		if !ok {
			b.Abort()
		}
	}()
	if err := s.cleanup(ctx, lock.Conn()); err != nil {
		return nil, err
	}
	a, err := s.ringForLayout(ctx)
	if err != nil {
		return nil, err
	}
	b.partOf, tables = layoutFor(a, s.cfg.Slots, s.cfg.Partitions)
	err = lock.QueryRow(ctx, `INSERT INTO datasets (version, name, state, slots, partitions, source, created_at, record_form)
		SELECT coalesce(max(version), 0) + 1, $1, 'building', $2, $3, $4, $5, $6 FROM datasets
		RETURNING version`, s.cfg.Dataset, s.cfg.Slots, tables, source, b.created, RecordForm).Scan(&b.version)
	if err != nil {
		return nil, unavailable(err)
	}
	b.filters = make([]*bloom, tables)
	for p := range b.filters {
		b.filters[p] = newBloom(s.cfg.FilterBytes / tables)
	}
	b.cands = make([]map[promotion.ID]struct{}, tables)
	for p := range b.cands {
		b.cands[p] = map[promotion.ID]struct{}{}
	}
	b.rowsPool.New = func() any { return make([]row, 0, s.cfg.BatchRows) }
	for range workers {
		a := &adder{bufs: make([][]row, tables), slotRows: make([]int64, s.cfg.Slots), slotSum: make([]uint64, s.cfg.Slots)}
		for p := range a.bufs {
			a.bufs[p] = b.rowsPool.Get().([]row)[:0]
		}
		b.adders = append(b.adders, a)
	}
	for p := range tables {
		part, err := b.openPartition(ctx, p)
		if err != nil {
			return nil, err
		}
		b.parts = append(b.parts, part)
	}
	ok = true
	return b, nil
}

// importLockWait bounds how long Begin waits for the import lock while
// something holds it briefly: the maintenance of an ingest process (this
// one's included) takes it for a query or two, to drop what a dead import
// left. An import holds it for its whole run; Begin then says ErrBusy.
const importLockWait = 2 * time.Second

// takeImportLock takes the import lock on conn, trying again with a
// backoff from 10ms to 200ms for up to importLockWait.
func (s *Store) takeImportLock(ctx context.Context, conn *pgx.Conn) error {
	deadline := time.Now().Add(importLockWait)
	for pause := 10 * time.Millisecond; ; pause = min(2*pause, 200*time.Millisecond) {
		var locked bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", importLock).Scan(&locked); err != nil {
			return unavailable(err)
		}
		if locked {
			return nil
		}
		if time.Now().Add(pause).After(deadline) {
			return ErrBusy
		}
		select {
		case <-ctx.Done():
			return unavailable(ctx.Err())
		case <-time.After(pause):
		}
	}
}

// openPartition creates the table of partition p in a transaction of its
// own and starts the COPY that fills it from the rows channel.
func (b *Batch) openPartition(ctx context.Context, p int) (*partition, error) {
	conn, err := b.s.pool.Acquire(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	part := &partition{table: tableName(b.version, p), conn: conn, rows: make(chan []row, 4), done: make(chan struct{})}
	part.tx, err = conn.Begin(ctx)
	if err != nil {
		conn.Release()
		return nil, unavailable(err)
	}
	// No index and no constraint: the table is written once (Commit's
	// dedup then rewrites the few groups that hold a duplicate), then read
	// whole by the read nodes of its replica set.
	_, err = part.tx.Exec(ctx, "CREATE TABLE "+part.table+" ("+tableColumns+")")
	if err == nil {
		_, err = part.tx.Exec(ctx, "ALTER TABLE "+part.table+" ALTER recs SET STORAGE PLAIN, ALTER lines SET STORAGE PLAIN")
	}
	if err != nil {
		_ = part.tx.Rollback(context.Background())
		conn.Release()
		return nil, unavailable(err)
	}
	go func() {
		defer close(part.done)
		// FREEZE: the table was created in this transaction, so rows
		// are written frozen and, with wal_level=minimal, without WAL.
		_, err := conn.Conn().PgConn().CopyFrom(b.ctx, &copyReader{rows: part.rows, b: b},
			"COPY "+part.table+" ("+copyColumns+") FROM STDIN WITH (FORMAT binary, FREEZE)")
		if err != nil {
			part.err = unavailable(fmt.Errorf("cannot copy rows into %s: %w", part.table, err))
			b.cancel(part.err)
		}
	}()
	return part, nil
}

// Version returns the version being built.
func (b *Batch) Version() uint64 { return b.version }

// Add adds a row from worker (0 to workers-1). Rows of one worker must be
// added by one goroutine at a time; line orders duplicates.
func (b *Batch) Add(worker int, r *promotion.Record, line int64) error {
	a := b.adders[worker]
	x := &a.pend[a.npend]
	x.Record, x.Seq = *r, uint64(line)
	a.npend++
	if a.npend < pendRows {
		return nil
	}
	return b.flush(a)
}

// flush hands the pending rows of a to their tables' buffers, and a full
// buffer, once its rows went through the table's filter (filterRows), to
// the table's stream.
func (b *Batch) flush(a *adder) error {
	// A failed COPY ends the batch's context: the import stops here,
	// every pendRows rows, not only when a buffer goes to its table.
	select {
	case <-b.ctx.Done():
		return context.Cause(b.ctx)
	default:
	}
	pend := a.pend[:a.npend]
	a.npend = 0
	for i := range pend {
		r := &pend[i]
		slot := ring.Slot(r.ID, b.s.cfg.Slots)
		p := b.partOf[slot]
		a.slotRows[slot]++
		a.slotSum[slot] += r.Checksum()
		r.slot = int16(slot)
		a.bufs[p] = append(a.bufs[p], *r)
		if len(a.bufs[p]) == cap(a.bufs[p]) {
			b.filterRows(a, p, a.bufs[p])
			if err := b.send(p, a.bufs[p]); err != nil {
				return err
			}
			a.bufs[p] = b.rowsPool.Get().([]row)[:0]
		}
	}
	return nil
}

// filterRows tests rows, all of table p, in p's filter and records the
// candidate duplicates. Each test is a memory access at a random place of
// the filter, and an atomic Or waits for its own: plain loads of a group
// of rows' words first put them in flight together, and the Ors then find
// them in the cache (4x faster here).
func (b *Batch) filterRows(a *adder, p int, rows []row) {
	f := b.filters[p]
	for len(rows) > 0 {
		g := rows[:min(len(rows), pendRows)]
		rows = rows[len(g):]
		var touch uint64
		for i := range g {
			touch += f.load(g[i].ID)
		}
		a.touch += touch
		for i := range g {
			if f.testAndSet(g[i].ID) {
				b.candidate(p, g[i].ID)
			}
		}
	}
}

// candidate records an id the filter may have seen before.
func (b *Batch) candidate(p int, id promotion.ID) {
	b.candMu.Lock()
	defer b.candMu.Unlock()
	if b.fullDedup {
		return
	}
	if _, ok := b.cands[p][id]; !ok {
		b.cands[p][id] = struct{}{}
		b.ncands++
		if b.ncands > b.s.cfg.MaxCandidates {
			b.fullDedup = true
			b.cands = nil
		}
	}
}

// send hands rows to partition p's COPY stream. Once the batch has ended
// it fails at once rather than queue rows no one reads; it never closes
// or blocks on a stream that stopped, so Add racing with Abort gets an
// error, not a hang or a panic.
func (b *Batch) send(p int, rows []row) error {
	if err := context.Cause(b.ctx); err != nil {
		return err
	}
	select {
	case b.parts[p].rows <- rows:
		return nil
	case <-b.ctx.Done():
		return context.Cause(b.ctx)
	}
}

// Commit finishes the COPY streams, commits the tables, removes duplicate
// rows, and in one transaction marks the version committed, records its
// per-slot checksums and inserts its outbox row. On error, or when ctx
// ends, the batch is aborted. It must not run concurrently with Add or
// Abort; cancel ctx to interrupt it.
func (b *Batch) Commit(ctx context.Context) (rows, duplicates int64, err error) {
	if b.ended.Load() {
		return 0, 0, errors.New("pgstore: batch already ended")
	}
	defer func() {
		if err != nil {
			b.Abort()
		}
	}()
	if err := context.Cause(ctx); err != nil {
		return 0, 0, fmt.Errorf("pgstore: commit interrupted: %w", err)
	}
	// The COPY streams run under the batch's context: ending ctx ends
	// them too, or a stalled stream would hold Commit past it.
	stop := context.AfterFunc(ctx, func() {
		b.cancel(fmt.Errorf("pgstore: commit interrupted: %w", context.Cause(ctx)))
	})
	defer stop()
	for _, a := range b.adders {
		if err := b.flush(a); err != nil {
			return 0, 0, err
		}
		for p, buf := range a.bufs {
			if len(buf) > 0 {
				b.filterRows(a, p, buf)
				if err := b.send(p, buf); err != nil {
					return 0, 0, err
				}
				a.bufs[p] = nil
			}
		}
	}
	for _, part := range b.parts {
		close(part.rows)
	}
	for _, part := range b.parts {
		<-part.done
	}
	if err := context.Cause(b.ctx); err != nil {
		return 0, 0, err
	}
	for _, part := range b.parts {
		if err := part.tx.Commit(ctx); err != nil {
			return 0, 0, unavailable(fmt.Errorf("cannot commit %s: %w", part.table, err))
		}
		part.tx = nil
		part.conn.Release()
		part.conn = nil
	}
	slotRows := make([]int64, b.s.cfg.Slots)
	slotSum := make([]uint64, b.s.cfg.Slots)
	for _, a := range b.adders {
		for i := range slotRows {
			slotRows[i] += a.slotRows[i]
			slotSum[i] += a.slotSum[i]
		}
	}
	if duplicates, err = b.dedup(ctx, slotRows, slotSum); err != nil {
		return 0, 0, unavailable(err)
	}
	var held string
	err = pgx.BeginFunc(ctx, b.lock, func(tx pgx.Tx) error {
		var total uint64
		for i := range slotRows {
			rows += slotRows[i]
			total += slotSum[i]
		}
		if held, err = b.s.guard(ctx, tx, b.version, rows); err != nil {
			return err
		}
		return b.finish(ctx, tx, rows, duplicates, total, slotRows, slotSum, held)
	})
	if err != nil {
		return 0, 0, unavailable(err)
	}
	b.ended.Store(true)
	b.unlock()
	if b.durable != nil {
		b.durable()
	}
	if err := b.s.retain(ctx); err != nil {
		b.s.log.Warn("cannot drop old versions; retrying after the next import", "err", err)
	}
	if held != "" {
		b.s.log.Warn("dataset version held by the activation guard", "version", b.version, "rows", rows, "reason", held)
		return rows, duplicates, fmt.Errorf("%w: %s", ErrHeld, held)
	}
	return rows, duplicates, nil
}

// dedup removes, in each table, the rows of duplicate ids but the one with
// the highest line, and takes them out of the per-slot counts. It reads
// the groups of the slots of the table's candidates (every group, after
// the candidates overflowed), slot by slot: an id's rows all share its
// slot. It runs before the transaction that marks the version committed:
// nothing reads a building version, and a failed import drops its tables.
func (b *Batch) dedup(ctx context.Context, slotRows []int64, slotSum []uint64) (int64, error) {
	var dups int64
	for p, part := range b.parts {
		d := &deduper{b: b, table: part.table, slotRows: slotRows, slotSum: slotSum, fixes: &pgx.Batch{}}
		var filter []int16
		switch {
		case b.fullDedup:
		case len(b.cands[p]) > 0:
			d.cands = b.cands[p]
			seen := map[int16]bool{}
			for id := range d.cands {
				slot := int16(ring.Slot(id, b.s.cfg.Slots))
				if !seen[slot] {
					seen[slot] = true
					filter = append(filter, slot)
				}
			}
		default:
			continue
		}
		n, err := d.run(ctx, filter)
		if err != nil {
			return 0, fmt.Errorf("cannot remove duplicates from %s: %w", part.table, err)
		}
		b.s.log.Debug("duplicates removed", "table", part.table, "candidates", len(d.cands), "all", b.fullDedup, "slots read", len(filter), "duplicates", n)
		dups += n
	}
	return dups, nil
}

// deduper removes the duplicates of one table.
type deduper struct {
	b        *Batch
	table    string
	cands    map[promotion.ID]struct{} // nil: every id
	slotRows []int64
	slotSum  []uint64
	groups   []group // of the slot being read
	fixes    *pgx.Batch
	write    *pgxpool.Conn
	dups     int64
}

// group is a tuple of a version table as dedup reads it.
type group struct {
	tid   pgtype.TID
	slot  int16
	recs  []byte
	lines []byte
}

// dedupFixes is how many rewritten groups are sent at once.
const dedupFixes = 256

// dedupSlotBytes bounds the groups of one slot that dedup holds. A slot's
// rows are about the file's over the slot count (10 MB at 1e9 rows); only
// a file that repeats few ids a great many times comes near it, and it
// then fails with ErrTooManyDuplicates rather than hold them all (tests
// lower it).
var dedupSlotBytes = 256 << 20

// run reads the groups of the table's slots in filter (all of them when
// filter is nil), in slot order, and rewrites those that hold a duplicate
// on a second connection as it goes, so that memory holds a slot's groups
// and dedupFixes rewrites at most. The read sees the table as it was when
// it began.
func (d *deduper) run(ctx context.Context, filter []int16) (int64, error) {
	read, err := d.b.s.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer read.Release()
	if d.write, err = d.b.s.pool.Acquire(ctx); err != nil {
		return 0, err
	}
	defer d.write.Release()
	sql := "SELECT ctid, slot, recs, lines FROM " + d.table
	var args []any
	if filter != nil {
		sql += " WHERE slot = ANY($1)"
		args = append(args, filter)
	}
	// On an error the read is cancelled: closing it would read the rest.
	ctx, cancel := context.WithCancel(ctx)
	rows, err := read.Query(ctx, sql+" ORDER BY slot", args...)
	if err != nil {
		cancel()
		return 0, err
	}
	defer rows.Close()
	defer cancel()
	held := 0
	for rows.Next() {
		var g group
		if err := rows.Scan(&g.tid, &g.slot, &g.recs, &g.lines); err != nil {
			return 0, err
		}
		if len(g.recs)%promotion.PackedLen != 0 || len(g.lines) != len(g.recs)/promotion.PackedLen*lineLen {
			return 0, fmt.Errorf("malformed group in slot %d", g.slot)
		}
		if len(d.groups) > 0 && d.groups[0].slot != g.slot {
			if err := d.slot(ctx); err != nil {
				return 0, err
			}
			held = 0
		}
		if held += len(g.recs) + len(g.lines); held > dedupSlotBytes {
			return 0, fmt.Errorf("%w to remove its duplicates in bounded memory: the rows of slot %d pass %d MiB", ErrTooManyDuplicates, g.slot, dedupSlotBytes>>20)
		}
		d.groups = append(d.groups, g)
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if err := d.slot(ctx); err != nil {
		return 0, err
	}
	return d.dups, d.send(ctx)
}

// slot removes the duplicates among the groups of one slot.
func (d *deduper) slot(ctx context.Context) error {
	defer func() { d.groups = d.groups[:0] }()
	keep := map[promotion.ID]uint64{} // the highest line of each id
	var r promotion.Record
	for _, g := range d.groups {
		for i := range len(g.recs) / promotion.PackedLen {
			promotion.DecodePacked(g.recs[i*promotion.PackedLen:], &r)
			if d.cands != nil {
				if _, ok := d.cands[r.ID]; !ok {
					continue
				}
			}
			line := binary.BigEndian.Uint64(g.lines[i*lineLen:])
			if l, ok := keep[r.ID]; !ok || line > l {
				keep[r.ID] = line
			}
		}
	}
	for _, g := range d.groups {
		var recs, lines []byte
		dropped := false
		for i := range len(g.recs) / promotion.PackedLen {
			promotion.DecodePacked(g.recs[i*promotion.PackedLen:], &r)
			line := binary.BigEndian.Uint64(g.lines[i*lineLen:])
			if l, ok := keep[r.ID]; ok && line < l {
				d.slotRows[g.slot]--
				d.slotSum[g.slot] -= r.Checksum()
				d.dups++
				dropped = true
				continue
			}
			recs = append(recs, g.recs[i*promotion.PackedLen:(i+1)*promotion.PackedLen]...)
			lines = append(lines, g.lines[i*lineLen:(i+1)*lineLen]...)
		}
		if !dropped {
			continue
		}
		if len(recs) == 0 {
			d.fixes.Queue("DELETE FROM "+d.table+" WHERE ctid = $1", g.tid)
		} else {
			d.fixes.Queue("UPDATE "+d.table+" SET recs = $2, lines = $3 WHERE ctid = $1", g.tid, recs, lines)
		}
		if d.fixes.Len() >= dedupFixes {
			if err := d.send(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// send runs the queued rewrites.
func (d *deduper) send(ctx context.Context) error {
	if d.fixes.Len() == 0 {
		return nil
	}
	fixes := d.fixes
	d.fixes = &pgx.Batch{}
	br := d.write.SendBatch(ctx, fixes)
	for range fixes.Len() {
		tag, err := br.Exec()
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("a group to rewrite is gone (%d rows)", tag.RowsAffected())
		}
		if err != nil {
			_ = br.Close()
			return err
		}
	}
	return br.Close()
}

// finish marks the version committed (held, when held is not empty) and
// inserts its slot checksums and its outbox row, inside tx.
func (b *Batch) finish(ctx context.Context, tx pgx.Tx, rows, dups int64, sum uint64, slotRows []int64, slotSum []uint64, held string) error {
	now := time.Now().UTC()
	checksum := fmt.Sprintf("%016x", sum)
	tag, err := tx.Exec(ctx, `UPDATE datasets SET state = 'committed', rows = $2, duplicates = $3, checksum = $4, committed_at = $5,
		held_reason = NULLIF($6, '') WHERE version = $1 AND state = 'building'`, b.version, rows, dups, checksum, now, held)
	if err != nil {
		return err
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("pgstore: version %d is no longer building", b.version)
	}
	slots := make([][]any, 0, len(slotRows))
	for i := range slotRows {
		slots = append(slots, []any{int64(b.version), int32(i), slotRows[i], int64(slotSum[i]), int32(b.partOf[i])})
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"dataset_slots"}, []string{"version", "slot", "rows", "checksum", "part"}, pgx.CopyFromRows(slots)); err != nil {
		return err
	}
	payload, err := json.Marshal(events.DatasetCommitted{
		Type: events.TypeCommitted, Dataset: b.s.cfg.Dataset, Version: b.version, Rows: rows,
		Slots: b.s.cfg.Slots, Partitions: len(b.parts), Checksum: checksum,
		CreatedAt: b.created, CommittedAt: now, Held: held != "",
	})
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, "INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, $3)", events.Topic, b.s.cfg.Dataset, payload)
	return err
}

// Abort discards the batch: open COPY streams are rolled back, committed
// tables dropped and the version forgotten. What it cannot remove (the
// server is down) is removed by the next import or Open. When it returns
// the batch's connections are back in the pool and its COPY goroutines
// have ended or are ending (pgconn's readers of the rows stop on the
// batch's context), so nothing of the store keeps the batch reachable.
// It is safe to call more than once, and while workers still call Add:
// their Add then fails.
func (b *Batch) Abort() {
	if b.ended.Swap(true) {
		return
	}
	b.cancel(errors.New("pgstore: import aborted"))
	for _, part := range b.parts {
		<-part.done
		if part.tx != nil {
			_ = part.tx.Rollback(context.Background())
		}
		if part.conn != nil {
			part.conn.Release()
		}
	}
	if b.version != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := dropVersion(ctx, b.lock.Conn(), b.version, max(len(b.parts), b.s.cfg.Partitions), true); err != nil {
			b.s.log.Warn("cannot remove an aborted import; the next import removes it", "version", b.version, "err", err)
		}
		cancel()
	}
	b.unlock()
}

func (b *Batch) unlock() {
	if b.lock == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.lock.Exec(ctx, "SELECT pg_advisory_unlock($1)", importLock); err != nil {
		// A broken connection releases its locks when it closes.
		_ = b.lock.Conn().Close(ctx)
	}
	b.lock.Release()
	b.lock = nil
}

// bloom is a concurrent, blocked bloom filter of ids: the 3 bits of an id
// are in one 64-bit word, so a test costs one cache miss instead of three
// (the filter is far larger than the CPU caches). The false-positive rate
// is a little higher than an unblocked filter's; false positives only cost
// a candidate checked at commit.
type bloom struct {
	words []atomic.Uint64
	mask  uint64
}

func newBloom(bytes int) *bloom {
	n := 1
	for n*8 < bytes {
		n <<= 1
	}
	words := make([]atomic.Uint64, n)
	adviseHugePages(unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n*8))
	return &bloom{words: words, mask: uint64(n - 1)}
}

// load reads the word of id: a plain load, many of which can be in flight
// at once, unlike testAndSet's atomic Or.
func (f *bloom) load(id promotion.ID) uint64 { return f.words[f.word(ring.Hash(id))].Load() }

// word is the index of the word of an id of hash h. The hash's low bits
// are its slot (ring.Slot), and the ids of one table share a few slots:
// indexed by them, a table's ids would all fall in a small part of its
// filter (1/18 of it, and 0.2% false positives, at 2M rows and 3 nodes).
// The high half does not depend on the slot.
func (f *bloom) word(h uint64) uint64 { return bits.RotateLeft64(h, 32) & f.mask }

// testAndSet adds id and reports whether it may have been added before.
func (f *bloom) testAndSet(id promotion.ID) bool {
	h := ring.Hash(id)
	h2 := promotion.Mix64(h)
	m := uint64(1)<<(h2&63) | uint64(1)<<(h2>>6&63) | uint64(1)<<(h2>>12&63)
	return f.words[f.word(h)].Or(m)&m == m
}
