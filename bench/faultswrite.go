package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file holds the drills of the write path: ingest, PostgreSQL, the
// broker, and PostgreSQL's disk.

func drillBrokerDown(ctx context.Context, r *drillRun) error {
	h := r.h
	h.stopKafka()
	start := time.Now()
	done := h.importAsync(ctx)
	res, err := awaitImport(ctx, done, time.Minute)
	if err != nil {
		r.expect("an import succeeds while the broker is down", false, "%v", err)
		return nil
	}
	r.expect("an import succeeds while the broker is down", res.out.succeeded(), "%s in %v", res.out, time.Since(start).Round(time.Millisecond))
	if !res.out.succeeded() {
		return nil
	}
	nv := res.out.Status.DatasetVersion
	took, err := h.waitServing(ctx, nv, allNodes(), 30*time.Second)
	ok, got := within(took, 10*time.Second, err)
	r.expect("every read node serves it within 10 s without its event (they poll PostgreSQL)", ok, "%s", got)
	// ingest counts its outbox backlog for /metrics once a second.
	var pending float64
	for deadline := time.Now().Add(3 * time.Second); ; {
		if pending = scrape(h.ingestURL, "promo_outbox_pending"); pending > 0 || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	r.expect("its event waits in the outbox while the broker is down", pending > 0, "%.0f events pending", pending)
	if err := sleep(ctx, time.Until(start.Add(h.cfg.Hold))); err != nil {
		return err
	}
	back := time.Now()
	if err := h.restartKafka(); err != nil {
		return err
	}
	deadline := back.Add(time.Minute)
	for {
		// A failed scrape reads 0: ask until the gauge itself says 0.
		code, body, err := h.get(ctx, h.ingestURL+"/metrics")
		if err == nil && code == http.StatusOK && strings.Contains(string(body), "\npromo_outbox_pending 0\n") {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	took = time.Since(back)
	var drainErr error
	if took >= time.Minute {
		drainErr = errors.New("events still pending")
	} else {
		r.recovered(back)
	}
	ok, got = within(took, 30*time.Second, drainErr)
	r.expect("the outbox is delivered within 30 s of the broker's restart", ok, "%s", got)
	return nil
}

func drillPostgresImport(ctx context.Context, r *drillRun, freeze bool) error {
	h := r.h
	what := "the stop"
	if freeze {
		what = "the freeze"
	}
	up, v, landed, err := r.landMidCopy(ctx, what)
	if err != nil || !landed {
		if up != nil {
			up.unpace()
			_ = up.wait(ctx, 2*time.Minute)
		}
		return err
	}
	if freeze {
		err = h.pausePostgres()
	} else {
		err = h.stopPostgres()
	}
	if err != nil {
		return err
	}
	start := time.Now()
	record := func() {}
	if freeze {
		record = r.probeIngest(ctx)
	} else {
		// The rest of the upload keeps its pace: a client streaming a big
		// file should hear of the failure, not send the rest for nothing.
		const bound = 10 * time.Second
		err := up.wait(ctx, bound)
		got := fmt.Sprintf("answered %v after the stop, %.0f%% of the file sent", time.Since(start).Round(time.Millisecond), 100*up.sent())
		if err != nil {
			got = fmt.Sprintf("no answer %v after the stop, %.0f%% of the file sent", bound, 100*up.sent())
		}
		r.expect("ingest fails the import within 10 s of PostgreSQL's stop, without reading the rest of the upload", err == nil, "%s", got)
		up.unpace()
		if err := up.wait(ctx, time.Minute); err != nil {
			return err
		}
		r.expect("the import fails", up.err != nil || !up.out.succeeded(), "%s", answerOf(up))
	}
	if err := sleep(ctx, time.Until(start.Add(h.cfg.Hold))); err != nil {
		return err
	}
	back := time.Now()
	if freeze {
		err = h.resumePostgres()
		up.unpace()
		record()
	} else {
		err = h.restartPostgres(ctx)
	}
	if err != nil {
		return err
	}
	nv, err := r.endsCleanly(ctx, up, v)
	if err != nil || nv == 0 {
		return err
	}
	if err := r.checkLeftovers(ctx); err != nil {
		return err
	}
	_, err = h.waitServing(ctx, nv, allNodes(), time.Minute)
	if err == nil {
		r.recovered(back)
	}
	ok, got := within(time.Since(back), 30*time.Second, err)
	r.expect(fmt.Sprintf("version %d is served by every read node within 30 s", nv), ok, "%s", got)
	return nil
}

func drillPostgresFreezeBegin(ctx context.Context, r *drillRun) error {
	h := r.h
	if err := h.pausePostgres(); err != nil {
		return err
	}
	start := time.Now()
	up, err := h.startUpload(ctx, time.Second)
	if err != nil {
		return err
	}
	// Time for the request to reach the import's start.
	if err := sleep(ctx, 300*time.Millisecond); err != nil {
		return err
	}
	record := r.probeIngest(ctx)
	if err := sleep(ctx, time.Until(start.Add(h.cfg.Hold))); err != nil {
		return err
	}
	back := time.Now()
	if err := h.resumePostgres(); err != nil {
		return err
	}
	record()
	last, err := h.latestCommitted(ctx)
	if err != nil {
		return err
	}
	nv, err := r.endsCleanly(ctx, up, last+1)
	if err != nil || nv == 0 {
		return err
	}
	_, err = h.waitServing(ctx, nv, allNodes(), time.Minute)
	if err == nil {
		r.recovered(back)
	}
	ok, got := within(time.Since(back), 30*time.Second, err)
	r.expect(fmt.Sprintf("version %d is served by every read node within 30 s", nv), ok, "%s", got)
	return nil
}

func drillPostgresPull(ctx context.Context, r *drillRun, freeze bool) error {
	h := r.h
	last, err := h.latestCommitted(ctx)
	if err != nil {
		return err
	}
	failures := h.pullFailures(ctx)
	done := h.importAsync(ctx)
	node, v, landErr := h.waitMidPull(ctx, allNodes(), last, time.Minute)
	what := "the stop"
	if freeze {
		what = "the freeze"
	}
	if landErr != nil {
		r.expect(what+" lands mid-pull", false, "%v", landErr)
		_, err := awaitImport(ctx, done, 2*time.Minute)
		return err
	}
	if freeze {
		err = h.pausePostgres()
	} else {
		err = h.stopPostgres()
	}
	if err != nil {
		return err
	}
	start := time.Now()
	r.expect(what+" lands mid-pull", true, "%s listed version %d as building", h.e.Nodes[node].Name, v)
	if err := sleep(ctx, time.Until(start.Add(h.cfg.Hold))); err != nil {
		return err
	}
	back := time.Now()
	if freeze {
		err = h.resumePostgres()
	} else {
		err = h.restartPostgres(ctx)
	}
	if err != nil {
		return err
	}
	// The version committed before the pull began; the answer may still
	// have waited on PostgreSQL (retention runs after the commit).
	res, err := awaitImport(ctx, done, 2*time.Minute)
	if err != nil {
		return err
	}
	r.expect("the import's client is told it succeeded (its version committed before the fault)", res.out.succeeded(), "%s", res.out)
	_, err = h.waitServing(ctx, v, allNodes(), time.Minute)
	if err == nil {
		r.recovered(back)
	}
	ok, got := within(time.Since(back), 30*time.Second, err)
	r.expect(fmt.Sprintf("every read node serves version %d within 30 s of PostgreSQL's return", v), ok, "%s", got)
	r.note("pull failures on the three read nodes during the drill: %.0f", h.pullFailures(ctx)-failures)
	return nil
}

// pullFailures returns the failed pulls of every read node.
func (h *harness) pullFailures(ctx context.Context) float64 {
	var n float64
	for _, m := range h.e.Nodes {
		n += scrapeSum(ctx, m.URL, "promo_readnode_pull_failures_total ")
	}
	return n
}

func drillIngestKill(ctx context.Context, r *drillRun) error {
	h := r.h
	up, v, landed, err := r.landMidCopy(ctx, "the SIGKILL")
	if err != nil || !landed {
		if up != nil {
			up.unpace()
			_ = up.wait(ctx, 2*time.Minute)
		}
		return err
	}
	pid := h.ingest.pid()
	if err := h.ingest.kill(); err != nil {
		return err
	}
	r.note("SIGKILL to promo ingest (pid %d) while it copied version %d", pid, v)
	if err := up.wait(ctx, time.Minute); err != nil {
		return err
	}
	r.expect("the import's client gets an error, not a success", up.err != nil || !up.out.succeeded(), "%s", answerOf(up))
	if err := sleep(ctx, h.cfg.Hold); err != nil {
		return err
	}
	back := time.Now()
	if err := h.startIngest(ctx); err != nil {
		return err
	}
	// Leftovers go at the next start at the latest: a moment for the old
	// backends to notice their client is gone.
	var state string
	var tables []string
	deadline := time.Now().Add(15 * time.Second)
	for {
		state, tables, err = h.versionRows(ctx, v)
		if err != nil {
			return err
		}
		if (state == "" && len(tables) == 0) || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	r.expect("after ingest's restart nothing of the killed import is left", state == "" && len(tables) == 0,
		"version %d in table datasets: %q, %d tables, %v after the restart", v, state, len(tables), time.Since(back).Round(time.Millisecond))
	_, out, err := h.importGen(ctx)
	if err != nil {
		return err
	}
	r.expect("a new import succeeds", out.succeeded(), "%s", out)
	if !out.succeeded() {
		return nil
	}
	_, err = h.waitServing(ctx, out.Status.DatasetVersion, allNodes(), time.Minute)
	if err == nil {
		r.recovered(back)
	}
	ok, got := within(time.Since(back), 30*time.Second, err)
	r.expect("it is served by every read node within 30 s of ingest's restart", ok, "%s", got)
	return nil
}

// tablespace is where the disk-full drill puts new tables.
const tablespace = "promo_faults_small"

func drillDiskImport(ctx context.Context, r *drillRun) (err error) {
	h := r.h
	mnt := filepath.Join(h.dir, "pg-small")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if err := mountTmpfs(mnt, 2<<20); err != nil {
		return err
	}
	defer func() {
		if uerr := unmount(mnt); uerr != nil && err == nil {
			err = uerr
		}
	}()
	loc := filepath.Join(mnt, "ts")
	if err := os.Mkdir(loc, 0o700); err != nil {
		return err
	}
	if err := chownLike(loc, h.dc.Postgres().Dir()); err != nil {
		return err
	}
	exec := func(sql string) error {
		return h.withPostgres(ctx, 10*time.Second, func(ctx context.Context, c *pgx.Conn) error {
			_, err := c.Exec(ctx, sql)
			return err
		})
	}
	if err := exec(fmt.Sprintf("CREATE TABLESPACE %s LOCATION '%s'", tablespace, loc)); err != nil {
		return err
	}
	defer func() {
		if derr := exec("DROP TABLESPACE IF EXISTS " + tablespace); derr != nil && err == nil {
			err = derr
		}
	}()
	// New sessions create their tables there: restart ingest for its
	// pool to open new ones.
	setDefault := func(sql string) error {
		if err := exec(sql); err != nil {
			return err
		}
		h.ingest.stop(10 * time.Second)
		return h.startIngest(ctx)
	}
	if err := setDefault("ALTER DATABASE postgres SET default_tablespace = " + tablespace); err != nil {
		return err
	}
	restored := false
	defer func() {
		if !restored {
			_ = setDefault("ALTER DATABASE postgres RESET default_tablespace")
		}
	}()
	last, err := h.latestCommitted(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	g, out, err := h.importGen(ctx)
	if err != nil {
		return err
	}
	r.expect("the import fails", !out.succeeded(), "%s", out)
	if out.succeeded() {
		r.note("the version fit in 2 MiB: the disk never filled")
	} else if !strings.Contains(out.String(), "space") {
		r.note("the import's error does not mention the disk space")
	}
	r.expect("the import commits nothing", h.newestKnown() == last, "newest committed version %d (was %d); generation %d", h.newestKnown(), last, g)
	var inSpace int
	if err := h.withPostgres(ctx, 5*time.Second, func(ctx context.Context, c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_tablespace t ON c.reltablespace = t.oid WHERE t.spcname = $1`, tablespace).Scan(&inSpace)
	}); err != nil {
		return err
	}
	r.expect("the failed import leaves nothing on the full disk", inSpace == 0, "%d relations in the tablespace", inSpace)
	if err := sleep(ctx, time.Until(start.Add(h.cfg.Hold))); err != nil {
		return err
	}
	back := time.Now()
	if err := setDefault("ALTER DATABASE postgres RESET default_tablespace"); err != nil {
		return err
	}
	restored = true
	_, out, err = h.importGen(ctx)
	if err != nil {
		return err
	}
	r.expect("an import succeeds once there is space", out.succeeded(), "%s", out)
	if !out.succeeded() {
		return nil
	}
	if err := r.checkLeftovers(ctx); err != nil {
		return err
	}
	_, err = h.waitServing(ctx, out.Status.DatasetVersion, allNodes(), time.Minute)
	if err == nil {
		r.recovered(back)
	}
	ok, got := within(time.Since(back), 30*time.Second, err)
	r.expect("it is served by every read node within 30 s", ok, "%s", got)
	return nil
}
