package ingestsvc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/localsvc/localsvctest"
)

func TestMain(m *testing.M) { os.Exit(localsvctest.Run(m)) }

type env struct {
	srv       *Server
	url       string
	pgURL     string
	kafka     *localsvc.Kafka
	importDir string
}

func start(t *testing.T, pgURL string, k *localsvc.Kafka, mutate ...func(*Config)) *env {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.PostgresURL = pgURL
	cfg.KafkaBrokers = []string{k.Addr()}
	cfg.ImportDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, m := range mutate {
		m(&cfg)
	}
	srv, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return &env{srv: srv, url: "http://" + srv.Addr(), pgURL: pgURL, kafka: k, importDir: cfg.ImportDir}
}

func (e *env) writeCSV(t *testing.T, name string, rows int64, seed uint64) {
	t.Helper()
	f, err := os.Create(filepath.Join(e.importDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := gen.DefaultConfig(rows)
	c.Seed = seed
	if _, err := gen.Generate(f, c); err != nil {
		t.Fatal(err)
	}
}

func post(t *testing.T, u string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %s", err, b)
	}
	return resp.StatusCode, m
}

// consume returns the next dataset event on the topic, or fails after d.
func consume(t *testing.T, r *kafka.Reader, d time.Duration) events.DatasetCommitted {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	msg, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatalf("no dataset event within %v: %v", d, err)
	}
	e, err := events.Decode(msg.Value)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Key) != "promotions" {
		t.Fatalf("event key %q", msg.Key)
	}
	return e
}

func reader(k *localsvc.Kafka, group string) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{Brokers: []string{k.Addr()}, Topic: events.Topic, GroupID: group,
		MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond, StartOffset: kafka.FirstOffset})
}

func countRows(t *testing.T, pgURL string, version int) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT tablename FROM pg_tables WHERE tablename LIKE $1", fmt.Sprintf("promo_v%d_p%%", version))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, tb := range tables {
		var n int
		// rows: the bytes of each group's records over promotion.PackedLen
		if err := conn.QueryRow(ctx, "SELECT coalesce(sum(length(recs)/32), 0) FROM "+tb).Scan(&n); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}

func TestImportCommitsAndAnnounces(t *testing.T) {
	k := localsvctest.Kafka(t, events.Topic)
	e := start(t, localsvctest.Database(t), k)
	e.writeCSV(t, "p.csv", 30_000, 1)
	status, st := post(t, e.url+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}})
	if status != 200 || st["dataset_version"] != float64(1) || st["rows"] != float64(30_000) {
		t.Fatalf("import: %d %v", status, st)
	}
	if n := countRows(t, e.pgURL, 1); n != 30_000 {
		t.Fatalf("PostgreSQL holds %d rows of version 1", n)
	}
	r := reader(k, "t1")
	defer r.Close()
	ev := consume(t, r, 20*time.Second)
	if ev.Version != 1 || ev.Rows != 30_000 || ev.Slots != 4096 || ev.Partitions != 16 || ev.Checksum == "" {
		t.Fatalf("event %+v", ev)
	}
	// No read node activated it: nothing serves yet.
	resp, _ := http.Get(e.url + "/datasets/current")
	var cur map[string]any
	json.NewDecoder(resp.Body).Decode(&cur)
	resp.Body.Close()
	if resp.StatusCode != 404 || cur["latest_committed"] != float64(1) {
		t.Fatalf("current before activation: %d %v", resp.StatusCode, cur)
	}
	resp, _ = http.Get(e.url + "/datasets")
	var list struct {
		Datasets []map[string]any `json:"datasets"`
	}
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Datasets) != 1 || list.Datasets[0]["state"] != "committed" || list.Datasets[0]["checksum"] != ev.Checksum {
		t.Fatalf("datasets %v", list)
	}
	// Bad rows: 422, nothing new in PostgreSQL.
	os.WriteFile(filepath.Join(e.importDir, "bad.csv"), []byte("not-a-uuid,1,2018-08-04 05:32:31 +0200 CEST\n"), 0o644)
	if status, st := post(t, e.url+"/process-csv?wait=true", url.Values{"filename": {"bad.csv"}}); status != 422 {
		t.Fatalf("bad file: %d %v", status, st)
	}
	if n := countRows(t, e.pgURL, 2); n != 0 {
		t.Fatalf("a rejected import left %d rows", n)
	}
}

func TestBrokerDownDuringImport(t *testing.T) {
	k := localsvctest.Kafka(t, events.Topic)
	e := start(t, localsvctest.Database(t), k)
	e.writeCSV(t, "p.csv", 5_000, 2)
	k.Stop()
	start := time.Now()
	status, st := post(t, e.url+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}})
	if status != 200 || st["dataset_version"] != float64(1) {
		t.Fatalf("import with the broker down: %d %v", status, st)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the import took %v with the broker down: it must not wait for it", d)
	}
	// The relay fails at least once before the broker is back.
	localsvctest.SucceedsSoon(t, 10*time.Second, func() error {
		if n := scrapeMetric(t, e.url, "promo_outbox_publish_failures_total"); n == 0 {
			return fmt.Errorf("no failed publish counted yet")
		}
		return nil
	})
	if err := k.Restart(); err != nil {
		t.Fatal(err)
	}
	r := reader(k, "t2")
	defer r.Close()
	if ev := consume(t, r, 60*time.Second); ev.Version != 1 {
		t.Fatalf("event %+v", ev)
	}
}

func TestConcurrentImportConflicts(t *testing.T) {
	k := localsvctest.Kafka(t, events.Topic)
	e := start(t, localsvctest.Database(t), k)
	e.writeCSV(t, "p.csv", 100, 3)
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan int, 1)
	go func() {
		resp, err := http.Post(e.url+"/process-csv?wait=true", "text/csv", pr)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	var first bytes.Buffer
	gen.Generate(&first, gen.DefaultConfig(100))
	pw.Write(first.Bytes())
	waitRunning(t, e.url, false)
	status, m := post(t, e.url+"/process-csv", url.Values{"filename": {"p.csv"}})
	if status != 409 || !strings.Contains(m["error"].(string), "already running") {
		t.Fatalf("second import: %d %v", status, m)
	}
	pw.Close()
	if s := <-done; s != 200 {
		t.Fatalf("streamed import: %d", s)
	}
}

func TestPostgresDown(t *testing.T) {
	k := localsvctest.Kafka(t, events.Topic)
	pg := localsvctest.NewPostgres(t)
	e := start(t, pg.URL, k)
	e.writeCSV(t, "p.csv", 2_000, 4)
	if status, st := post(t, e.url+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}}); status != 200 {
		t.Fatalf("first import: %d %v", status, st)
	}
	// Down before an import: 503 with a JSON error.
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	status, st := post(t, e.url+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}})
	if status != 503 || !strings.Contains(st["error"].(string), "unavailable") {
		t.Fatalf("import with PostgreSQL down: %d %v", status, st)
	}
	resp, _ := http.Get(e.url + "/readyz")
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("readyz with PostgreSQL down: %d", resp.StatusCode)
	}
	// Down during an import: the job fails with 503, nothing partial
	// remains once PostgreSQL is back.
	// Restart keeps pg the server NewPostgres stops when the test ends.
	if err := pg.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan map[string]any, 1)
	codes := make(chan int, 1)
	go func() {
		resp, err := http.Post(e.url+"/process-csv?wait=true", "text/csv", pr)
		if err != nil {
			codes <- 0
			done <- nil
			return
		}
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		codes <- resp.StatusCode
		done <- m
	}()
	var rows bytes.Buffer
	gen.Generate(&rows, gen.DefaultConfig(80_000)) // more than one 1 MiB chunk in each half
	pw.Write(rows.Bytes()[:rows.Len()/2])
	waitRunning(t, e.url, true)
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	pw.Write(rows.Bytes()[rows.Len()/2:])
	pw.Close()
	if code := <-codes; code != 503 {
		t.Fatalf("import while PostgreSQL died: %d %v", code, <-done)
	}
	if m := <-done; m["state"] != "failed" {
		t.Fatalf("job after PostgreSQL died: %v", m)
	}
	if err := pg.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// The kill landed mid-import: its version was left building. (Its
	// tables, created in the transactions of their COPY, died with them.)
	building, _, err := leftovers(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if building != 1 {
		t.Fatalf("after the kill: %d versions building, want the dead import's one", building)
	}
	var tables int
	status, st = post(t, e.url+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}})
	if status != 200 || st["dataset_version"] != float64(2) {
		t.Fatalf("import after PostgreSQL came back: %d %v", status, st)
	}
	// The dead import took number 2 too (numbers of failed imports are
	// reused): what must be gone is every building version and every
	// table of a version that is not committed.
	if building, tables, err = leftovers(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if building != 0 || tables != 0 {
		t.Fatalf("%d building versions and %d tables of the dead import remain", building, tables)
	}
	if n := countRows(t, pg.URL, 2); n != 2_000 {
		t.Fatalf("version 2 has %d rows, want the 2,000 of p.csv and none of the dead import", n)
	}
}

func pgDir(t *testing.T, pg *localsvc.Postgres) string {
	t.Helper()
	return pg.Dir()
}

// waitRunning waits until the newest import runs (and has rows, when
// withRows).
func waitRunning(t *testing.T, base string, withRows bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/imports")
		if err == nil {
			var l struct {
				Imports []map[string]any `json:"imports"`
			}
			json.NewDecoder(resp.Body).Decode(&l)
			resp.Body.Close()
			if len(l.Imports) > 0 && l.Imports[0]["state"] == "running" && (!withRows || l.Imports[0]["rows_accepted"].(float64) > 0) {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the import never started")
}

// TestFailedImportsKeepMemoryFlat runs 100 imports that fail (a bad row
// after 20,000 good ones: 422) against a real PostgreSQL and checks, every
// 10 imports, that the service's goroutines and heap in use after GC are
// back where they were before the first: each failed import's batch (its
// COPY streams and 64 MiB bloom filter) must be released. It logs the
// figures: go test -run TestFailedImportsKeepMemoryFlat -v ./ingestsvc
func TestFailedImportsKeepMemoryFlat(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("100 imports, measured in the plain run without -short")
	}
	k := localsvctest.Kafka(t, events.Topic)
	e := start(t, localsvctest.Database(t), k)
	var bad bytes.Buffer
	if _, err := gen.Generate(&bad, gen.DefaultConfig(20_000)); err != nil {
		t.Fatal(err)
	}
	bad.WriteString("not-a-uuid,1,2018-08-04 05:32:31 +0200 CEST\n")
	if err := os.WriteFile(filepath.Join(e.importDir, "bad.csv"), bad.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	type usage struct {
		goroutines int
		heap       uint64 // HeapInuse after GC
	}
	measure := func() usage {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return usage{runtime.NumGoroutine(), ms.HeapInuse}
	}
	base := measure()
	t.Logf("before the first import: %d goroutines, %d MiB heap in use", base.goroutines, base.heap>>20)
	// Generous bounds: one leaked batch is 16 goroutines and 64 MiB. The
	// last import's batch and connections take a few milliseconds to go
	// after its answer, so each check waits for them.
	const slackGoroutines, slackHeap = 16, 64 << 20
	waitFlat := func(imports int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			u := measure()
			if u.goroutines <= base.goroutines+slackGoroutines && u.heap <= base.heap+slackHeap {
				t.Logf("after %d failed imports: %d goroutines, %d MiB heap in use", imports, u.goroutines, u.heap>>20)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %d failed imports: %d goroutines and %d MiB heap in use, from %d and %d MiB",
					imports, u.goroutines, u.heap>>20, base.goroutines, base.heap>>20)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for i := 1; i <= 100; i++ {
		status, st := post(t, e.url+"/process-csv?wait=true", url.Values{"filename": {"bad.csv"}})
		if status != 422 || st["state"] != "failed" || st["rows_rejected"] != float64(1) {
			t.Fatalf("import %d of the bad file: %d %v", i, status, st)
		}
		if i%10 == 0 {
			waitFlat(i)
		}
	}
}

// freeze stops every process of pg with SIGSTOP, as a hung server or a
// frozen VM would, until the returned function or the end of the test
// resumes them. The postmaster stops first, so that it forks no backend
// after its children were listed (they are in process groups of their
// own: PostgreSQL's children call setsid).
func freeze(t *testing.T, pg *localsvc.Postgres) (thaw func()) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pg.Dir(), "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil || pid <= 1 {
		t.Fatalf("postmaster.pid: %q", b)
	}
	var stopped []int
	thaw = func() {
		for i := len(stopped) - 1; i >= 0; i-- {
			_ = syscall.Kill(stopped[i], syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP to PostgreSQL (pid %d): %v", pid, err)
	}
	stopped = append(stopped, pid)
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		child, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue // gone
		}
		// pid (comm) state ppid ...: comm may hold spaces, not ")".
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			if err := syscall.Kill(child, syscall.SIGSTOP); err == nil {
				stopped = append(stopped, child)
			}
		}
	}
	if len(stopped) < 2 {
		t.Fatalf("PostgreSQL (pid %d) has no child process to stop", pid)
	}
	return thaw
}

// getWithin answers GET u, or an error when it takes longer than d.
func getWithin(u string, d time.Duration) (int, []byte, error) {
	c := &http.Client{Timeout: d}
	resp, err := c.Get(u)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// TestFrozenPostgresDoesNotFreezeTheAPI: with PostgreSQL stopped dead
// (SIGSTOP) while an import starts, GET /imports and /metrics answer at
// once, /datasets and the import answer 503 within PostgresTimeout, and
// imports work again once PostgreSQL resumes.
func TestFrozenPostgresDoesNotFreezeTheAPI(t *testing.T) {
	k := localsvctest.Kafka(t, events.Topic)
	pg := localsvctest.NewPostgres(t)
	const timeout = time.Second
	e := start(t, pg.URL, k, func(c *Config) { c.PostgresTimeout = timeout })
	e.writeCSV(t, "p.csv", 1_000, 5)
	if status, st := post(t, e.url+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}}); status != 200 {
		t.Fatalf("first import: %d %v", status, st)
	}
	thaw := freeze(t, pg)

	type result struct {
		status  int
		body    map[string]any
		err     error
		elapsed time.Duration
	}
	posted := make(chan result, 1)
	go func() {
		begin := time.Now()
		c := &http.Client{Timeout: 30 * time.Second}
		resp, err := c.PostForm(e.url+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}})
		if err != nil {
			posted <- result{err: err, elapsed: time.Since(begin)}
			return
		}
		defer resp.Body.Close()
		var m map[string]any
		err = json.NewDecoder(resp.Body).Decode(&m)
		posted <- result{resp.StatusCode, m, err, time.Since(begin)}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if e.srv.ingest.Running() != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the import never started to begin")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, path := range []string{"/imports", "/imports/2", "/metrics", "/healthz"} {
		status, body, err := getWithin(e.url+path, 500*time.Millisecond)
		if err != nil || status != 200 {
			t.Fatalf("GET %s with PostgreSQL frozen: %d %v %.200s", path, status, err, body)
		}
		if path == "/imports/2" && !strings.Contains(string(body), `"state":"queued"`) {
			t.Fatalf("GET %s with PostgreSQL frozen: %s", path, body)
		}
	}
	for _, path := range []string{"/datasets", "/datasets/current", "/readyz"} {
		status, body, err := getWithin(e.url+path, timeout+3*time.Second)
		if err != nil || status != 503 {
			t.Fatalf("GET %s with PostgreSQL frozen: %d %v %s", path, status, err, body)
		}
	}
	res := <-posted
	if res.err != nil {
		t.Fatalf("POST with PostgreSQL frozen: %v after %v", res.err, res.elapsed)
	}
	msg, _ := res.body["error"].(string)
	if res.status != 503 || !strings.Contains(msg, "did not answer within 1s") || res.elapsed > timeout+3*time.Second {
		t.Fatalf("POST with PostgreSQL frozen: %d after %v: %v", res.status, res.elapsed, res.body)
	}
	thaw()
	deadline = time.Now().Add(30 * time.Second)
	for {
		status, st := post(t, e.url+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}})
		if status == 200 {
			if st["dataset_version"] != float64(2) {
				t.Fatalf("import after PostgreSQL resumed: %v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("import after PostgreSQL resumed: %d %v", status, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestImportHistorySurvivesRestartAndDeleteCancels: DELETE /imports/{id}
// cancels a running upload, whose version leaves nothing in PostgreSQL;
// a new ingest process over the same database lists the earlier imports
// and gives out higher ids.
func TestImportHistorySurvivesRestartAndDeleteCancels(t *testing.T) {
	k := localsvctest.Kafka(t, events.Topic)
	pgURL := localsvctest.Database(t)
	importDir := t.TempDir()
	startServer := func() (*Server, string) {
		t.Helper()
		cfg := DefaultConfig()
		cfg.Addr = "127.0.0.1:0"
		cfg.PostgresURL = pgURL
		cfg.KafkaBrokers = []string{k.Addr()}
		cfg.ImportDir = importDir
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		srv, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return srv, "http://" + srv.Addr()
	}
	stop := func(srv *Server) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	srv, base := startServer()
	e := &env{importDir: importDir}
	e.writeCSV(t, "p.csv", 1_000, 6)
	if status, st := post(t, base+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}}); status != 200 {
		t.Fatalf("import 1: %d %v", status, st)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	posted := make(chan struct{})
	go func() {
		defer close(posted)
		resp, err := http.Post(base+"/process-csv", "text/csv", pr)
		if err == nil {
			resp.Body.Close()
		}
	}()
	var rows bytes.Buffer
	if _, err := gen.Generate(&rows, gen.DefaultConfig(20_000)); err != nil {
		t.Fatal(err)
	}
	if _, err := pw.Write(rows.Bytes()); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, base, true)
	req, err := http.NewRequest(http.MethodDelete, base+"/imports/2", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || st["state"] != "failed" {
		t.Fatalf("DELETE of the running upload: %d %v %v", resp.StatusCode, st, err)
	}
	<-posted
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var versions, tables int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM datasets WHERE version <> 1").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'promo_v2_%'").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if versions != 0 || tables != 0 {
		t.Fatalf("the cancelled import left %d versions and %d tables", versions, tables)
	}
	stop(srv)

	srv, base = startServer()
	defer stop(srv)
	status, body, err := getWithin(base+"/imports", 5*time.Second)
	if err != nil || status != 200 {
		t.Fatalf("GET /imports after restart: %d %v", status, err)
	}
	var l struct{ Imports []map[string]any }
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Imports) != 2 || l.Imports[0]["state"] != "failed" || l.Imports[1]["state"] != "succeeded" || l.Imports[1]["dataset_version"] != float64(1) {
		t.Fatalf("imports after restart: %s", body)
	}
	if status, st := post(t, base+"/process-csv?wait=true", url.Values{"filename": {"p.csv"}}); status != 200 || st["import_id"] != float64(3) || st["dataset_version"] != float64(2) {
		t.Fatalf("first import after restart: %d %v", status, st)
	}
}
