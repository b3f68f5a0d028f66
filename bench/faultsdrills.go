package bench

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// drill is one fault, injected under load: run does it, records what it
// expects beyond what every drill expects (no failed, wrong or older
// answer, no row lost: a replica of every slot survives every drill), and
// measures the recovery. An error is a drill that could not run as
// designed.
type drill struct {
	name, title string
	// fault says what is done, and when; recovery what the time to
	// recover measures.
	fault, recovery string
	// quick drills fit a CI run; root drills need root (a tmpfs).
	quick, root bool
	run         func(ctx context.Context, r *drillRun) error
}

// drillRun is one drill under way.
type drillRun struct {
	h    *harness
	rep  *DrillReport
	load *lookupLoad
}

// expect records an expectation and whether it held.
func (r *drillRun) expect(text string, pass bool, got string, args ...any) {
	r.rep.Expectations = append(r.rep.Expectations, Expectation{Text: text, Pass: pass, Got: fmt.Sprintf(got, args...)})
}

func (r *drillRun) note(format string, args ...any) {
	r.rep.Notes = append(r.rep.Notes, fmt.Sprintf(format, args...))
}

// recovered records the time to recover, measured from since.
func (r *drillRun) recovered(since time.Time) {
	r.rep.RecoverSeconds = time.Since(since).Seconds()
}

// within formats how long something took against its bound.
func within(took, bound time.Duration, err error) (bool, string) {
	if err != nil {
		return false, fmt.Sprintf("not within %v: %v", max(took, bound).Round(time.Millisecond), err)
	}
	return took <= bound, took.Round(time.Millisecond).String()
}

// runDrill runs d under load and checks what every drill expects.
func (h *harness) runDrill(ctx context.Context, d drill) DrillReport {
	rep := DrillReport{Name: d.name, Title: d.title, Fault: d.fault, Recovery: d.recovery, Rate: h.cfg.Rate,
		RowsLost: -1, RecoverSeconds: -1}
	if d.root && !isRoot() {
		rep.Skipped = "needs root, to mount a small tmpfs that fills up"
		return rep
	}
	h.progressf("%s: %s", d.name, d.title)
	if err := h.heal(ctx); err != nil {
		rep.Error = "the cluster did not settle before the drill: " + err.Error()
		return rep
	}
	committedBefore := h.newestKnown()
	nodeRequests := h.proxyNodeRequests(ctx)
	r := &drillRun{h: h, rep: &rep}
	r.load = h.startLoad(uint64(time.Now().UnixNano()))
	err := sleep(ctx, h.cfg.Warm)
	if err == nil {
		err = d.run(ctx, r)
	}
	if err != nil {
		rep.Error = err.Error()
	}
	_ = sleep(ctx, h.cfg.Warm)
	l := r.load
	l.stop(ctx)
	rep.Seconds = time.Since(l.start).Seconds()
	rep.Requests, rep.Failed, rep.Wrong, rep.Older = l.requests, l.failed, l.wrong, l.older
	rep.Statuses, rep.Examples = l.statuses, l.examples
	rep.P99MS, rep.MaxMS = ms(l.metrics.Latencies.P99), ms(l.metrics.Latencies.Max)
	if l.requests > 0 {
		rep.NodeRequestsPerLookup = (h.proxyNodeRequests(ctx) - nodeRequests) / float64(l.requests)
	}
	if last := l.lastBad.Load(); last > 0 {
		r.note("last failed or wrong answer %.1f s after the load started", time.Duration(last-l.start.UnixNano()).Seconds())
	}

	// Everything back, settled, and every row of the newest committed
	// version answered with its value.
	if err := h.heal(ctx); err != nil {
		r.note("after the drill the cluster did not settle: %v", err)
	}
	var lost string
	if v, err := h.latestCommitted(ctx); err != nil {
		lost = "cannot tell the newest committed version: " + err.Error()
	} else if g, ok := h.generation(v); !ok {
		lost = fmt.Sprintf("the newest committed version %d is not one of this run's files", v)
		rep.LastCommitted = v
	} else {
		rep.LastCommitted = v
		var examples []string
		rep.RowsLost, examples = h.sweep(ctx, v, g)
		lost = fmt.Sprintf("%d of %d rows of version %d", rep.RowsLost, len(h.data.ids), v)
		if len(examples) > 0 {
			lost += ", e.g. " + strings.Join(examples, "; ")
		}
	}
	newest := h.newestKnown()
	common := []Expectation{
		{Text: "0 failed requests (a replica of every slot survives)", Pass: rep.Failed == 0, Got: fmt.Sprintf("%d of %d", rep.Failed, rep.Requests)},
		{Text: "0 wrong answers", Pass: rep.Wrong == 0, Got: fmt.Sprintf("%d of %d", rep.Wrong, rep.Requests)},
		{Text: "0 answers from a version older than one the proxy had already answered", Pass: rep.Older == 0, Got: fmt.Sprintf("%d of %d", rep.Older, rep.Requests)},
		{Text: "0 rows lost: after the drill every row of the newest committed version is answered with its value", Pass: rep.RowsLost == 0, Got: lost},
		{Text: "no committed version lost", Pass: rep.LastCommitted >= newest && newest >= committedBefore,
			Got: fmt.Sprintf("newest committed %d, newest this run saw committed %d", rep.LastCommitted, newest)},
	}
	rep.Expectations = append(common, rep.Expectations...)
	return rep
}

// newestKnown returns the newest version this run saw committed.
func (h *harness) newestKnown() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var v uint64
	for k := range h.versions {
		v = max(v, k)
	}
	return v
}

// proxyNodeRequests returns how many requests the proxy has sent to read
// nodes for lookups.
func (h *harness) proxyNodeRequests(ctx context.Context) float64 {
	return scrapeSum(ctx, h.e.Proxy, "promo_proxy_backend_answers_total{") +
		scrapeSum(ctx, h.e.Proxy, "promo_proxy_backend_errors_total{") +
		scrapeSum(ctx, h.e.Proxy, "promo_proxy_behind_answers_total ")
}

// drills are every drill, in the order they run: the ones that leave the
// cluster as it was first, the disks last.
var drills = []drill{
	{
		name: "version-swap", title: "a version swap under load", quick: true,
		fault:    "imports a new version (every row's value changes) while the load runs",
		recovery: "from the POST until every read node serves the new version",
		run:      drillSwap,
	},
	{
		name: "node-kill-serving", title: "SIGKILL of read node n3 (a promo readnode process) while it serves", quick: true,
		fault:    "SIGKILL to n3 while it answers lookups; restarted on its store after the hold",
		recovery: "from n3's restart until it is ready and the proxy routes to it again",
		run:      drillNodeKillServing,
	},
	{
		name: "node-kill-pull", title: "SIGKILL of read node n3 in the middle of a pull",
		fault:    "imports a new version and sends SIGKILL to n3 while it lists that version as building; restarted after the hold",
		recovery: "from n3's restart until it serves the new version",
		run:      drillNodeKillPull,
	},
	{
		name: "redis-down", title: "Redis down", quick: true,
		fault:    "SIGKILL to redis-server (the read nodes' cache); started again, empty, after the hold",
		recovery: "from Redis' restart until the read nodes get cache hits again",
		run:      func(ctx context.Context, r *drillRun) error { return drillRedis(ctx, r, false) },
	},
	{
		name: "redis-slow", title: "Redis frozen (SIGSTOP): every cache call times out",
		fault:    "SIGSTOP to redis-server for the hold, then SIGCONT",
		recovery: "from SIGCONT until the read nodes get cache hits again",
		run:      func(ctx context.Context, r *drillRun) error { return drillRedis(ctx, r, true) },
	},
	{
		name: "broker-down", title: "the Kafka broker down during an import",
		fault:    "stops the broker, imports a new version, starts the broker again (empty) after the hold",
		recovery: "from the broker's restart until ingest's outbox is empty (the event delivered)",
		run:      drillBrokerDown,
	},
	{
		name: "postgres-stop-import", title: "PostgreSQL stopped in the middle of an import's COPY",
		fault:    "streams an import, stops PostgreSQL (fast shutdown) while its COPY runs, starts it again after the hold, imports again",
		recovery: "from PostgreSQL's restart until a new import is served by every read node",
		run:      func(ctx context.Context, r *drillRun) error { return drillPostgresImport(ctx, r, false) },
	},
	{
		name: "postgres-freeze-import", title: "PostgreSQL frozen (SIGSTOP) in the middle of an import's COPY",
		fault:    "streams an import, sends SIGSTOP to PostgreSQL and its backends while the COPY runs, SIGCONT after the hold",
		recovery: "from SIGCONT until the import's version (or a retry's) is served by every read node",
		run:      func(ctx context.Context, r *drillRun) error { return drillPostgresImport(ctx, r, true) },
	},
	{
		name: "postgres-freeze-begin", title: "PostgreSQL frozen (SIGSTOP) as an import begins",
		fault:    "sends SIGSTOP to PostgreSQL, then POSTs an import and asks ingest for GET /imports and /metrics; SIGCONT after the hold",
		recovery: "from SIGCONT until the import's version (or a retry's) is served by every read node",
		run:      drillPostgresFreezeBegin,
	},
	{
		name: "postgres-stop-pull", title: "PostgreSQL stopped while the read nodes pull a new version",
		fault:    "imports a new version and stops PostgreSQL (fast shutdown) while a read node lists it as building; starts it again after the hold",
		recovery: "from PostgreSQL's restart until every read node serves the new version",
		run:      func(ctx context.Context, r *drillRun) error { return drillPostgresPull(ctx, r, false) },
	},
	{
		name: "postgres-freeze-pull", title: "PostgreSQL frozen (SIGSTOP) while the read nodes pull a new version",
		fault:    "imports a new version and sends SIGSTOP to PostgreSQL while a read node lists it as building; SIGCONT after the hold",
		recovery: "from SIGCONT until every read node serves the new version",
		run:      func(ctx context.Context, r *drillRun) error { return drillPostgresPull(ctx, r, true) },
	},
	{
		name: "ingest-kill-copy", title: "SIGKILL of promo ingest in the middle of an import's COPY",
		fault:    "streams an import, sends SIGKILL to the promo ingest process while its COPY runs, restarts it after the hold, imports again",
		recovery: "from ingest's restart until a new import is served by every read node",
		run:      drillIngestKill,
	},
	{
		name: "disk-full-import", title: "PostgreSQL's disk fills up during an import", root: true,
		fault:    "puts new tables on a 2 MiB tmpfs (a tablespace, the database's default), imports a version that does not fit; after the hold frees the default and imports again",
		recovery: "from the space's return until a new import is served by every read node",
		run:      drillDiskImport,
	},
	{
		name: "disk-full-pull", title: "read node n3's disk fills up before it pulls a new version", root: true,
		fault:    "fills the tmpfs of n3's store (128 KiB left), imports a new version; frees the space after twice the hold",
		recovery: "from the space's return until n3 serves the new version",
		run:      drillDiskPull,
	},
}

// importAsync imports a new generation in the background.
func (h *harness) importAsync(ctx context.Context) <-chan asyncImport {
	done := make(chan asyncImport, 1)
	go func() {
		g, out, err := h.importGen(ctx)
		done <- asyncImport{g: g, out: out, err: err}
	}()
	return done
}

type asyncImport struct {
	g   int
	out importOutcome
	err error
}

// awaitImport waits for an import started by importAsync, at most d.
func awaitImport(ctx context.Context, done <-chan asyncImport, d time.Duration) (asyncImport, error) {
	select {
	case res := <-done:
		return res, res.err
	case <-time.After(d):
		return asyncImport{}, fmt.Errorf("the import had no answer after %v", d)
	case <-ctx.Done():
		return asyncImport{}, ctx.Err()
	}
}

// landMidCopy streams a new generation and waits until its COPY moves
// rows; it records whether the fault about to come lands mid-COPY.
func (r *drillRun) landMidCopy(ctx context.Context, what string) (*upload, uint64, bool, error) {
	h := r.h
	up, err := h.startUpload(ctx, 4*h.cfg.Hold+5*time.Second)
	if err != nil {
		return nil, 0, false, err
	}
	v, seen, err := h.waitMidCopy(ctx, up, 30*time.Second)
	if err != nil {
		r.expect(what+" lands mid-COPY", false, "%v", err)
		return up, 0, false, nil
	}
	r.expect(what+" lands mid-COPY", true, "%s", seen)
	return up, v, true, nil
}

// endsCleanly checks how an import that a fault hit ended: it committed a
// version, or it failed and committed nothing, and then a new import
// succeeds. It returns the version to serve.
func (r *drillRun) endsCleanly(ctx context.Context, up *upload, failedVersion uint64) (uint64, error) {
	h := r.h
	if err := up.wait(ctx, 2*time.Minute); err != nil {
		return 0, err
	}
	if up.err == nil && up.out.succeeded() {
		r.expect("the import succeeds once the fault is gone, or fails and commits nothing", true, "it succeeded: %s", up.out)
		return up.out.Status.DatasetVersion, nil
	}
	st, stErr := h.importState(ctx, up.g)
	state, tables, err := h.versionRows(ctx, failedVersion)
	if err != nil {
		return 0, err
	}
	listed := "state " + st.State
	if stErr != nil {
		listed = stErr.Error()
	}
	r.expect("the import succeeds once the fault is gone, or fails and commits nothing", state != "committed",
		"it failed (%s; GET /imports lists it in %s); version %d in table datasets: %q, %d tables",
		answerOf(up), listed, failedVersion, state, len(tables))
	_, out, err := h.importGen(ctx)
	if err != nil {
		return 0, err
	}
	r.expect("a new import succeeds", out.succeeded(), "%s", out)
	if !out.succeeded() {
		return 0, nil
	}
	return out.Status.DatasetVersion, nil
}

func answerOf(up *upload) string {
	if up.err != nil {
		return up.err.Error()
	}
	return up.out.String()
}

// checkLeftovers expects no table of an uncommitted version, once the
// imports of the drill have ended.
func (r *drillRun) checkLeftovers(ctx context.Context) error {
	tables, err := r.h.leftoverTables(ctx)
	if err != nil {
		return err
	}
	r.expect("no table of an uncommitted version is left in PostgreSQL once the imports have ended", len(tables) == 0, "%d tables %v", len(tables), tables)
	return nil
}

// probeIngest asks ingest for GET /imports and GET /metrics while
// PostgreSQL is frozen, in the background: reads that need no PostgreSQL,
// or bound what they ask of it, answer at once. The returned function,
// called once PostgreSQL runs again, waits for the answers and records
// the expectations.
func (r *drillRun) probeIngest(ctx context.Context) (record func()) {
	h := r.h
	type probe struct {
		path  string
		bound time.Duration
		took  time.Duration
		err   error
		done  chan struct{}
	}
	probes := []*probe{{path: "/imports", bound: time.Second}, {path: "/metrics", bound: 2 * time.Second}}
	client := &http.Client{Timeout: time.Minute}
	for _, p := range probes {
		p.done = make(chan struct{})
		go func() {
			defer close(p.done)
			start := time.Now()
			code, _, err := func() (int, []byte, error) {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.ingestURL+p.path, nil)
				if err != nil {
					return 0, nil, err
				}
				resp, err := client.Do(req)
				if err != nil {
					return 0, nil, err
				}
				resp.Body.Close()
				return resp.StatusCode, nil, nil
			}()
			p.took = time.Since(start)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("status %d", code)
			}
			p.err = err
		}()
	}
	frozen := time.Now()
	return func() {
		thawed := time.Since(frozen)
		for _, p := range probes {
			<-p.done
			ok, got := within(p.took, p.bound, p.err)
			if p.took >= thawed {
				got += fmt.Sprintf(": answered only after PostgreSQL was resumed, %v after the request", thawed.Round(time.Millisecond))
			}
			r.expect(fmt.Sprintf("ingest answers GET %s within %v while PostgreSQL is frozen", p.path, p.bound), ok, "%s", got)
		}
	}
}
