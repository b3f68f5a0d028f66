package pgstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

func TestMain(m *testing.M) { os.Exit(localsvctest.Run(m)) }

func testConfig(url string) Config {
	c := DefaultConfig(url)
	c.Logger = slog.New(slog.NewTextHandler(testLog, nil))
	c.FilterBytes = 1 << 20
	return c
}

func mustOpen(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func randomRecords(rng *rand.Rand, n int) []promotion.Record {
	out := make([]promotion.Record, n)
	for i := range out {
		binary.BigEndian.PutUint64(out[i].ID[:8], rng.Uint64())
		binary.BigEndian.PutUint64(out[i].ID[8:], rng.Uint64())
		out[i].PriceMicros = rng.Int64N(1e8)
		out[i].Expires = 1.5e9 + rng.Int64N(1e8)
	}
	return out
}

// commitAll imports recs as a new version from workers goroutines.
func commitAll(t *testing.T, s *Store, source string, recs []promotion.Record, workers int) {
	t.Helper()
	b, err := s.Begin(context.Background(), source, workers)
	if err != nil {
		t.Fatal(err)
	}
	addAll(t, b, recs, workers)
	if _, _, err := b.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func addAll(t testing.TB, b *Batch, recs []promotion.Record, workers int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(recs); i += workers {
				if err := b.Add(w, &recs[i], int64(i+1)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// readVersion reads every row of version v from its tables.
func readVersion(t *testing.T, s *Store, v uint64) map[promotion.ID]promotion.Record {
	t.Helper()
	ctx := context.Background()
	out := map[promotion.ID]promotion.Record{}
	for p := range s.cfg.Partitions {
		rows, err := s.pool.Query(ctx, "SELECT slot, recs, lines FROM "+tableName(v, p))
		if err != nil {
			t.Fatal(err)
		}
		var recs []promotion.Record
		var slots []int16
		for rows.Next() {
			var slot int16
			var rb, lb []byte
			if err := rows.Scan(&slot, &rb, &lb); err != nil {
				t.Fatal(err)
			}
			if len(rb) == 0 || len(rb)%promotion.PackedLen != 0 || len(rb)/promotion.PackedLen > maxGroup || len(lb) != len(rb)/promotion.PackedLen*lineLen {
				t.Fatalf("group of %d bytes of records and %d of lines", len(rb), len(lb))
			}
			for ; len(rb) > 0; rb = rb[promotion.PackedLen:] {
				var r promotion.Record
				promotion.DecodePacked(rb, &r)
				recs, slots = append(recs, r), append(slots, slot)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		for i, r := range recs {
			slot := slots[i]
			if int(slot) != ring.Slot(r.ID, s.cfg.Slots) || s.PartitionOf(int(slot)) != p {
				t.Fatalf("row %s in slot %d of partition %d", r.ID, slot, p)
			}
			if _, dup := out[r.ID]; dup {
				t.Fatalf("id %s twice in version %d", r.ID, v)
			}
			out[r.ID] = r
		}
		rows.Close()
	}
	return out
}

func TestCommitWritesRowsSlotsAndOutbox(t *testing.T) {
	s := mustOpen(t, testConfig(localsvctest.Database(t)))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	recs := randomRecords(rng, 20_000)
	// 300 duplicates; the later copy (higher line) carries price 7.
	for i := range 300 {
		d := recs[i*11]
		d.PriceMicros = 7
		recs = append(recs, d)
	}
	b, err := s.Begin(ctx, "test", 3)
	if err != nil {
		t.Fatal(err)
	}
	if b.Version() != 1 {
		t.Fatalf("first version %d", b.Version())
	}
	addAll(t, b, recs, 3)
	rows, dups, err := b.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rows != 20_000 || dups != 300 {
		t.Fatalf("committed %d rows, %d duplicates; want 20000, 300", rows, dups)
	}
	got := readVersion(t, s, 1)
	if len(got) != 20_000 {
		t.Fatalf("tables hold %d rows", len(got))
	}
	want := map[promotion.ID]promotion.Record{}
	for _, r := range recs {
		want[r.ID] = r // the last one wins
	}
	var sum uint64
	for id, r := range want {
		if got[id] != r {
			t.Fatalf("id %s: got %+v, want %+v", id, got[id], r)
		}
		sum += r.Checksum()
	}
	v, ok, err := s.Latest(ctx)
	if err != nil || !ok || v.Version != 1 || v.State != "committed" || v.Rows != 20_000 || v.Duplicates != 300 {
		t.Fatalf("Latest: %+v %v %v", v, ok, err)
	}
	var slotRows int64
	var slotSum uint64
	rows2, err := s.pool.Query(ctx, "SELECT rows, checksum FROM dataset_slots WHERE version = 1")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows2.Next() {
		var r, c int64
		rows2.Scan(&r, &c)
		slotRows += r
		slotSum += uint64(c)
		n++
	}
	rows2.Close()
	if n != 4096 || slotRows != 20_000 || slotSum != sum || v.Checksum != fmt.Sprintf("%016x", sum) {
		t.Fatalf("dataset_slots: %d slots, %d rows, sum %x; version checksum %s; want 4096, 20000, %x", n, slotRows, slotSum, v.Checksum, sum)
	}
	var payload []byte
	var key string
	if err := s.pool.QueryRow(ctx, "SELECT key, payload FROM outbox WHERE sent_at IS NULL").Scan(&key, &payload); err != nil {
		t.Fatal(err)
	}
	e, err := events.Decode(payload)
	if err != nil || key != "promotions" || e.Version != 1 || e.Rows != 20_000 || e.Checksum != v.Checksum || e.Slots != 4096 || e.Partitions != 16 {
		t.Fatalf("outbox row %s %s: %+v %v", key, payload, e, err)
	}
}

func TestFullDedupWhenCandidatesOverflow(t *testing.T) {
	cfg := testConfig(localsvctest.Database(t))
	cfg.MaxCandidates = 10
	s := mustOpen(t, cfg)
	ctx := context.Background()
	recs := randomRecords(rand.New(rand.NewPCG(3, 4)), 1000)
	for i := range 100 {
		d := recs[i]
		d.PriceMicros = 9
		recs = append(recs, d)
	}
	b, err := s.Begin(ctx, "test", 2)
	if err != nil {
		t.Fatal(err)
	}
	addAll(t, b, recs, 2)
	// The rows are tested in the filters a table's buffer at a time, the
	// last ones by Commit.
	rows, dups, err := b.Commit(ctx)
	if err != nil || rows != 1000 || dups != 100 {
		t.Fatalf("commit: %d rows, %d dups, %v", rows, dups, err)
	}
	if !b.fullDedup {
		t.Fatal("100 candidates with MaxCandidates 10 did not switch to full dedup")
	}
	for _, r := range readVersion(t, s, 1) {
		if r.ID == recs[5].ID && r.PriceMicros != 9 {
			t.Fatalf("duplicate resolved to %+v, want the last row", r)
		}
	}
}

func TestAbortAndLeftoversLeaveNothing(t *testing.T) {
	url := localsvctest.Database(t)
	s := mustOpen(t, testConfig(url))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	commitAll(t, s, "v1", randomRecords(rng, 500), 2)
	// An aborted import leaves no table and no datasets row.
	b, err := s.Begin(ctx, "aborted", 2)
	if err != nil {
		t.Fatal(err)
	}
	addAll(t, b, randomRecords(rng, 500), 2)
	b.Abort()
	assertOnlyVersion(t, s, 1)
	// Another import is refused while one holds the lock, in any process.
	b, err = s.Begin(ctx, "holder", 1)
	if err != nil {
		t.Fatal(err)
	}
	other := mustOpen(t, testConfig(url))
	if _, err := other.Begin(ctx, "second", 1); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Begin: %v, want ErrBusy", err)
	}
	// A dead import (its session gone without abort) is cleaned up by the
	// next Begin.
	addAll(t, b, randomRecords(rng, 500), 1)
	b.cancel(errors.New("simulated crash"))
	for _, p := range b.parts {
		<-p.done
		p.conn.Conn().Close(ctx)
		p.conn.Release()
	}
	// The import lock's session ends too, as a dead process's would. The
	// server frees the lock once it has noticed, a moment later.
	b.lock.Conn().Close(ctx)
	b.lock.Release()
	var b2 *Batch
	deadline := time.Now().Add(10 * time.Second)
	for {
		b2, err = other.Begin(ctx, "after crash", 1)
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if b2.Version() != 2 {
		t.Fatalf("version after a dead import: %d, want 2 (numbers without gaps)", b2.Version())
	}
	b2.Abort()
	assertOnlyVersion(t, s, 1)
}

// assertOnlyVersion checks that the database holds exactly version v: its

// The maintenance of an ingest process takes the import lock for a
// moment: an import that begins meanwhile waits for it rather than being
// refused as if another import ran (a CI run saw a 409 so).
func TestBeginWaitsForMaintenance(t *testing.T) {
	ctx := context.Background()
	url := localsvctest.Database(t)
	s := mustOpen(t, testConfig(url))
	maint := mustOpen(t, testConfig(url))
	conn, err := maint.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", importLock); err != nil {
		t.Fatal(err)
	}
	released := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", importLock)
		released <- err
	}()
	b, err := s.Begin(ctx, "during maintenance", 1)
	if err != nil {
		t.Fatalf("Begin while maintenance held the lock for 300ms: %v", err)
	}
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	b.Abort()
	// Held for longer than Begin waits: another import, refused.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", importLock); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(ctx, "during an import", 1); !errors.Is(err, ErrBusy) {
		t.Fatalf("Begin while the lock stayed held: %v, want ErrBusy", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", importLock); err != nil {
		t.Fatal(err)
	}
}

// datasets row and its tables, nothing of any other.
func assertOnlyVersion(t *testing.T, s *Store, v uint64) {
	t.Helper()
	ctx := context.Background()
	var versions []uint64
	rows, _ := s.pool.Query(ctx, "SELECT version FROM datasets ORDER BY version")
	versions, err := pgx.CollectRows(rows, pgx.RowTo[uint64])
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) != 1 || versions[0] != v {
		t.Fatalf("datasets holds versions %v, want [%d]", versions, v)
	}
	var tables []string
	rows, _ = s.pool.Query(ctx, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'promo_v%' ORDER BY 1")
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != s.cfg.Partitions || tables[0] != tableName(v, 0) {
		t.Fatalf("tables %v, want the %d of version %d", tables, s.cfg.Partitions, v)
	}
}

func TestRetentionKeepsServedVersions(t *testing.T) {
	cfg := testConfig(localsvctest.Database(t))
	cfg.KeepVersions = 1
	s := mustOpen(t, cfg)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 8))
	commit := func() {
		t.Helper()
		commitAll(t, s, "x", randomRecords(rng, 100), 1)
	}
	commit()
	// A read node serves version 1: it must survive the next commit.
	if _, err := s.pool.Exec(ctx, "INSERT INTO node_versions (node, version, state) VALUES ('n1', 1, 'serving')"); err != nil {
		t.Fatal(err)
	}
	commit()
	vs, err := s.Versions(ctx)
	if err != nil || len(vs) != 2 {
		t.Fatalf("versions while 1 is served: %+v %v", vs, err)
	}
	if _, err := s.pool.Exec(ctx, "DELETE FROM node_versions"); err != nil {
		t.Fatal(err)
	}
	commit()
	vs, err = s.Versions(ctx)
	if err != nil || len(vs) != 1 || vs[0].Version != 3 {
		t.Fatalf("versions after retention: %+v %v", vs, err)
	}
	var n int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'promo_v1_%' OR tablename LIKE 'promo_v2_%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d tables of dropped versions remain", n)
	}
	// Retention drops versions, never the announcements of their commits.
	rows, err := s.pool.Query(ctx, "SELECT payload FROM outbox ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	payloads, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	if len(payloads) != 3 {
		t.Fatalf("%d outbox rows, want one per commit, 3", len(payloads))
	}
	for i, p := range payloads {
		var e events.DatasetCommitted
		if err := json.Unmarshal(p, &e); err != nil {
			t.Fatalf("outbox row %d: %v: %s", i, err, p)
		}
		if e.Version != uint64(i+1) {
			t.Fatalf("outbox row %d announces version %d", i, e.Version)
		}
	}
}

var testLog io.Writer = io.Discard

func TestPullReadsOnlyTheSlotsAsked(t *testing.T) {
	s := mustOpen(t, testConfig(localsvctest.Database(t)))
	ctx := context.Background()
	recs := randomRecords(rand.New(rand.NewPCG(9, 10)), 30_000)
	commitAll(t, s, "x", recs, 2)
	// Every third slot of partition 5.
	per := s.cfg.Slots / s.cfg.Partitions
	var slots []int
	want := map[int]bool{}
	for sl := 5 * per; sl < 6*per; sl += 3 {
		slots = append(slots, sl)
		want[sl] = true
	}
	expect := map[promotion.ID]promotion.Record{}
	for _, r := range recs {
		if want[ring.Slot(r.ID, s.cfg.Slots)] {
			expect[r.ID] = r
		}
	}
	got := map[promotion.ID]promotion.Record{}
	sums := map[int]SlotSum{}
	err := s.Pull(ctx, 1, PullPart{Table: 5, Slots: slots, Form: RecordForm}, func(slot int, r *promotion.Record) error {
		if !want[slot] || ring.Slot(r.ID, s.cfg.Slots) != slot {
			t.Fatalf("pulled slot %d for id %s", slot, r.ID)
		}
		got[r.ID] = *r
		ss := sums[slot]
		ss.Rows++
		ss.Checksum += r.Checksum()
		sums[slot] = ss
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(expect) || len(got) == 0 {
		t.Fatalf("pulled %d rows, want %d", len(got), len(expect))
	}
	for id, r := range expect {
		if got[id] != r {
			t.Fatalf("id %s: %+v, want %+v", id, got[id], r)
		}
	}
	recorded, err := s.SlotSums(ctx, 1, slots)
	if err != nil {
		t.Fatal(err)
	}
	for _, sl := range slots {
		if recorded[sl] != sums[sl] {
			t.Fatalf("slot %d: recorded %+v, pulled %+v", sl, recorded[sl], sums[sl])
		}
	}
	// Activation and reports.
	if _, ok, _ := s.Active(ctx); ok {
		t.Fatal("a version is active before any activation")
	}
	if err := s.Report(ctx, "n1", 1, NodePrepared); err != nil {
		t.Fatal(err)
	}
	if nodes, err := s.Reported(ctx, 1); err != nil || len(nodes) != 1 || nodes[0] != "n1" {
		t.Fatalf("Reported: %v %v", nodes, err)
	}
	if err := s.Activate(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.Active(ctx); err != nil || !ok || v.Version != 1 || v.ActivatedAt == nil {
		t.Fatalf("Active: %+v %v %v", v, ok, err)
	}
}

// TestClusterID: the cluster id is drawn once with the schema, is the same
// at every Open, differs between databases, and is drawn again when the
// database is reset.
func TestClusterID(t *testing.T) {
	ctx := context.Background()
	url := localsvctest.Database(t)
	idOf := func(s *Store) string {
		t.Helper()
		id, err := s.ClusterID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) {
			t.Fatalf("cluster id %q is not 16 hex digits", id)
		}
		return id
	}
	first := mustOpen(t, testConfig(url))
	id := idOf(first)
	if again := idOf(mustOpen(t, testConfig(url))); again != id {
		t.Fatalf("a second Open read cluster id %s, the first %s", again, id)
	}
	if other := idOf(mustOpen(t, testConfig(localsvctest.Database(t)))); other == id {
		t.Fatalf("two databases have the same cluster id %s", id)
	}
	// Reset: every table dropped, and the schema created again by Open.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA public CASCADE; CREATE SCHEMA public"); err != nil {
		t.Fatal(err)
	}
	if reset := idOf(mustOpen(t, testConfig(url))); reset == id {
		t.Fatalf("the reset database kept cluster id %s", id)
	}
}

// toRowForm rewrites table as a table of the row form, the form versions
// had before groups: one tuple a row, of the columns slot, id, price,
// expires and line.
func toRowForm(t *testing.T, s *Store, table string) {
	t.Helper()
	be := func(col string, off, n int) string { // a big-endian integer in col
		return fmt.Sprintf("('x' || encode(substring(%s from i*%d + %d for 8), 'hex'))::bit(64)::bigint", col, n, off)
	}
	sql := fmt.Sprintf(`CREATE TABLE %[1]s_rows AS SELECT slot,
			encode(substring(recs from i*32 + 1 for 16), 'hex')::uuid AS id,
			%[2]s AS price, %[3]s AS expires, %[4]s AS line
		FROM %[1]s, generate_series(0, length(recs)/32 - 1) i;
		DROP TABLE %[1]s; ALTER TABLE %[1]s_rows RENAME TO %[1]s`,
		table, be("recs", 17, 32), be("recs", 25, 32), be("lines", 1, 8))
	if _, err := s.pool.Exec(context.Background(), sql); err != nil {
		t.Fatal(err)
	}
}

// A version committed before groups is pulled after the upgrade: a table
// of the row form gives the rows and per-slot sums the same table gave as
// groups, read whole with and without its slot column (PullPart.RingSlots)
// and for some of its slots.
func TestPullReadsTablesOfTheRowForm(t *testing.T) {
	s := mustOpen(t, testConfig(localsvctest.Database(t)))
	ctx := context.Background()
	recs := randomRecords(rand.New(rand.NewPCG(11, 12)), 20_000)
	commitAll(t, s, "x", recs, 2)
	v, err := s.Version(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	all := make([]int, v.Slots)
	for i := range all {
		all[i] = i
	}
	if v.RecordForm != RecordForm {
		t.Fatalf("a new version has record form %d, want %d", v.RecordForm, RecordForm)
	}
	plan, err := s.PullPlan(ctx, v, all)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != v.Partitions {
		t.Fatalf("plan of %d tables, want %d", len(plan), v.Partitions)
	}
	type pulled struct {
		rows map[promotion.Record]int // record: slot
		sums map[int]SlotSum
	}
	pull := func(part PullPart) pulled {
		t.Helper()
		out := pulled{rows: map[promotion.Record]int{}, sums: map[int]SlotSum{}}
		err := s.Pull(ctx, 1, part, func(slot int, r *promotion.Record) error {
			out.rows[*r] = slot
			ss := out.sums[slot]
			ss.Rows++
			ss.Checksum += r.Checksum()
			out.sums[slot] = ss
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	some := func(part PullPart) PullPart {
		part.Slots, part.Whole = part.Slots[:len(part.Slots)/2], false
		return part
	}
	var groups, groupsSome []pulled
	var rows int
	for _, part := range plan {
		if !part.Whole || part.RingSlots != v.Slots || part.Form != RecordForm {
			t.Fatalf("table %d: Whole %v, RingSlots %d, form %d; want a whole table of %d slots of form %d",
				part.Table, part.Whole, part.RingSlots, part.Form, v.Slots, RecordForm)
		}
		g := pull(part)
		unrecorded := part
		unrecorded.Form = 0 // groups written before migration 007
		if got := pull(unrecorded); !maps.Equal(got.rows, g.rows) {
			t.Fatalf("table %d as groups of no recorded form: %d rows, want %d", part.Table, len(got.rows), len(g.rows))
		}
		recorded, err := s.SlotSums(ctx, 1, part.Slots)
		if err != nil {
			t.Fatal(err)
		}
		for _, sl := range part.Slots {
			if g.sums[sl] != recorded[sl] {
				t.Fatalf("slot %d: pulled %+v, recorded %+v", sl, g.sums[sl], recorded[sl])
			}
		}
		rows += len(g.rows)
		groups, groupsSome = append(groups, g), append(groupsSome, pull(some(part)))
		toRowForm(t, s, tableName(1, part.Table))
	}
	if rows != len(recs) {
		t.Fatalf("pulled %d rows in all, want %d", rows, len(recs))
	}
	// The version still says groups: the tables are not read as such.
	err = s.Pull(ctx, 1, plan[0], func(int, *promotion.Record) error { return nil })
	if err == nil || errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "record form") {
		t.Fatalf("pull of row-form tables recorded as groups: %v, want an error naming the record form, not an outage", err)
	}
	// As an import before groups recorded it: no form.
	if _, err := s.pool.Exec(ctx, "UPDATE datasets SET record_form = NULL WHERE version = 1"); err != nil {
		t.Fatal(err)
	}
	if v, err = s.Version(ctx, 1); err != nil || v.RecordForm != 0 {
		t.Fatalf("version without a record form: %d, %v; want 0", v.RecordForm, err)
	}
	if plan, err = s.PullPlan(ctx, v, all); err != nil {
		t.Fatal(err)
	}
	if plan[0].Form != 0 {
		t.Fatalf("plan of a version without a record form: form %d, want 0", plan[0].Form)
	}
	for i, part := range plan {
		withColumn := part
		withColumn.RingSlots = 0
		for name, got := range map[string]pulled{"whole": pull(part), "whole, with the slot column": pull(withColumn)} {
			if !maps.Equal(got.rows, groups[i].rows) || !maps.Equal(got.sums, groups[i].sums) {
				t.Fatalf("table %d of the row form, %s: %d rows, %d slots; as groups %d rows, %d slots",
					part.Table, name, len(got.rows), len(got.sums), len(groups[i].rows), len(groups[i].sums))
			}
		}
		if got := pull(some(part)); len(got.rows) == 0 || !maps.Equal(got.rows, groupsSome[i].rows) {
			t.Fatalf("table %d of the row form, half its slots: %d rows; as groups %d", part.Table, len(got.rows), len(groupsSome[i].rows))
		}
	}
}

// TestPullRefusesAnUnknownRecordForm: a version a newer import wrote in a
// form this code does not know is refused by its number, not misread, and
// not taken for an outage.
func TestPullRefusesAnUnknownRecordForm(t *testing.T) {
	s := mustOpen(t, testConfig(localsvctest.Database(t)))
	ctx := context.Background()
	commitAll(t, s, "x", randomRecords(rand.New(rand.NewPCG(13, 14)), 500), 1)
	if _, err := s.pool.Exec(ctx, "UPDATE datasets SET record_form = $1 WHERE version = 1", RecordForm+1); err != nil {
		t.Fatal(err)
	}
	v, err := s.Version(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := s.PullPlan(ctx, v, []int{0, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	err = s.Pull(ctx, 1, plan[0], func(int, *promotion.Record) error { rows++; return nil })
	if !errors.Is(err, ErrUnknownForm) || errors.Is(err, ErrUnavailable) || rows != 0 {
		t.Fatalf("pull of record form %d: %d rows, %v; want ErrUnknownForm and no row", RecordForm+1, rows, err)
	}
	if want := fmt.Sprintf("form %d", RecordForm+1); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name the %s", err, want)
	}
}

// TestDropUnbuiltKeepsACommittedVersion: removing an aborted import's rows
// leaves a version that committed meanwhile (a commit whose answer was
// lost) untouched, tables and state, while a building version goes.
func TestDropUnbuiltKeepsACommittedVersion(t *testing.T) {
	url := localsvctest.Database(t)
	s := mustOpen(t, testConfig(url))
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(11, 12))
	recs := randomRecords(rng, 400)
	commitAll(t, s, "committed", recs, 2)
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if err := dropVersion(ctx, conn.Conn(), 1, s.cfg.Partitions, true); err != nil {
		t.Fatal(err)
	}
	if got := readVersion(t, s, 1); len(got) != len(recs) {
		t.Fatalf("committed version holds %d rows after an unbuilt drop, want %d", len(got), len(recs))
	}
	var state string
	if err := conn.QueryRow(ctx, "SELECT state FROM datasets WHERE version = 1").Scan(&state); err != nil || state != "committed" {
		t.Fatalf("version 1 state %q (%v), want committed", state, err)
	}

	// A version still building is removed, row and tables.
	b, err := s.Begin(ctx, "building", 1)
	if err != nil {
		t.Fatal(err)
	}
	addAll(t, b, randomRecords(rng, 100), 1)
	if err := dropVersion(ctx, conn.Conn(), 2, s.cfg.Partitions, true); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM datasets WHERE version = 2").Scan(&n); err != nil || n != 0 {
		t.Fatalf("building version: %d datasets rows (%v), want 0", n, err)
	}
	b.Abort()
	assertOnlyVersion(t, s, 1)
}

// Duplicates are removed from groups, not rows: a group that lost some of
// its rows is rewritten, one that lost all of them is deleted, and rows of
// one id in one group are told apart by their lines; with candidates and
// when they overflowed (every group read).
func TestDedupRewritesGroups(t *testing.T) {
	for _, full := range []bool{false, true} {
		t.Run(fmt.Sprintf("full=%v", full), func(t *testing.T) {
			cfg := testConfig(localsvctest.Database(t))
			cfg.BatchRows = 3 // a group of every 3 rows of a table
			if full {
				cfg.MaxCandidates = 1
			}
			s := mustOpen(t, cfg)
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(21, 22))
			const slot = 77
			ids := map[byte]promotion.ID{}
			for _, name := range []byte("abcdefg") {
				for {
					r := randomRecords(rng, 1)[0]
					if ring.Slot(r.ID, cfg.Slots) == slot {
						ids[name] = r.ID
						break
					}
				}
			}
			// Lines 1-13, groups of 3: [a b c] [a a d] [e f g] [e f g] [b].
			var recs []promotion.Record
			for i, name := range []byte("abcaadefgefgb") {
				recs = append(recs, promotion.Record{ID: ids[name], PriceMicros: int64(i + 1), Expires: 1.6e9})
			}
			b, err := s.Begin(ctx, "test", 1)
			if err != nil {
				t.Fatal(err)
			}
			addAll(t, b, recs, 1)
			rows, dups, err := b.Commit(ctx)
			if err != nil || rows != 7 || dups != 6 {
				t.Fatalf("commit: %d rows, %d duplicates, %v; want 7, 6", rows, dups, err)
			}
			if b.fullDedup != full {
				t.Fatalf("full dedup %v, want %v", b.fullDedup, full)
			}
			want := map[promotion.ID]promotion.Record{}
			for _, r := range recs {
				want[r.ID] = r // the last one wins
			}
			if got := readVersion(t, s, 1); !maps.Equal(got, want) {
				t.Fatalf("version holds %v, want %v", got, want)
			}
			var groups int
			table := tableName(1, s.PartitionOf(slot))
			if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE slot = $1", slot).Scan(&groups); err != nil || groups != 4 {
				t.Fatalf("%d groups left in slot %d, %v; want 4 (one lost all its rows)", groups, slot, err)
			}
			var sum SlotSum
			for _, r := range want {
				sum.Rows++
				sum.Checksum += r.Checksum()
			}
			if got, err := s.SlotSums(ctx, 1, []int{slot}); err != nil || got[slot] != sum {
				t.Fatalf("recorded sums %+v, %v; want %+v", got[slot], err, sum)
			}
		})
	}
}

// A file that repeats one id so often that its slot's rows pass
// dedupSlotBytes fails with ErrTooManyDuplicates, and nothing of it stays.
func TestDedupBoundsTheMemoryOfASlot(t *testing.T) {
	defer func(n int) { dedupSlotBytes = n }(dedupSlotBytes)
	dedupSlotBytes = 4 << 10 // 100 rows
	s := mustOpen(t, testConfig(localsvctest.Database(t)))
	ctx := context.Background()
	recs := randomRecords(rand.New(rand.NewPCG(31, 32)), 1000)
	for i := range 200 {
		d := recs[0]
		d.PriceMicros = int64(i)
		recs = append(recs, d)
	}
	b, err := s.Begin(ctx, "test", 2)
	if err != nil {
		t.Fatal(err)
	}
	addAll(t, b, recs, 2)
	if _, _, err := b.Commit(ctx); !errors.Is(err, ErrTooManyDuplicates) {
		t.Fatalf("commit: %v, want ErrTooManyDuplicates", err)
	}
	if v, ok, err := s.Latest(ctx); err != nil || ok {
		t.Fatalf("Latest after the failed import: %+v, %v, %v; want none", v, ok, err)
	}
	var tables int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'promo_v%'").Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("%d tables left, %v", tables, err)
	}
}
