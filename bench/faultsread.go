package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// This file holds the drills of the read path: read nodes, their cache,
// their disk, and a version swap.

func drillSwap(ctx context.Context, r *drillRun) error {
	h := r.h
	start := time.Now()
	_, out, err := h.importGen(ctx)
	if err != nil {
		return err
	}
	r.expect("the import succeeds", out.succeeded(), "%s", out)
	if !out.succeeded() {
		return nil
	}
	_, err = h.waitServing(ctx, out.Status.DatasetVersion, allNodes(), time.Minute)
	took := time.Since(start)
	if err == nil {
		r.recovered(start)
	}
	ok, got := within(took, 10*time.Second, err)
	r.expect("every read node serves the new version within 10 s of the POST", ok, "%s", got)
	return nil
}

// n3Answers returns how many lookups the proxy has had n3 answer.
func (h *harness) n3Answers(ctx context.Context) float64 {
	return scrapeSum(ctx, h.e.Proxy, fmt.Sprintf("promo_proxy_backend_answers_total{node=%q}", h.e.Nodes[childNode].Name))
}

func drillNodeKillServing(ctx context.Context, r *drillRun) error {
	h := r.h
	before := h.n3Answers(ctx)
	if err := sleep(ctx, 500*time.Millisecond); err != nil {
		return err
	}
	served := h.n3Answers(ctx) - before
	pid := h.node.pid()
	if err := h.node.kill(); err != nil {
		return err
	}
	r.expect("the SIGKILL lands while n3 serves", served > 0, "n3 answered %.0f lookups in the 0.5 s before SIGKILL to pid %d", served, pid)
	if err := sleep(ctx, h.cfg.Hold); err != nil {
		return err
	}
	v, err := h.latestCommitted(ctx)
	if err != nil {
		return err
	}
	restart := time.Now()
	if err := h.startNode(ctx); err != nil {
		return err
	}
	up := time.Since(restart)
	_, err = h.waitServing(ctx, v, []int{childNode}, time.Minute)
	ready := time.Since(restart)
	ok, got := within(ready, 30*time.Second, err)
	r.expect("n3 is ready again within 30 s of its restart", ok, "%s (it answered /healthz in %v)", got, up.Round(time.Millisecond))
	if err != nil {
		return nil
	}
	// The proxy checks a node's health every 500 ms.
	err = h.waitProxyUp(ctx, time.Minute)
	if err == nil {
		r.recovered(restart)
	}
	ok, got = within(time.Since(restart)-ready, 5*time.Second, err)
	r.expect("the proxy routes to n3 again within 5 s of its being ready", ok, "%s", got)
	return nil
}

func drillNodeKillPull(ctx context.Context, r *drillRun) error {
	h := r.h
	last, err := h.latestCommitted(ctx)
	if err != nil {
		return err
	}
	done := h.importAsync(ctx)
	_, v, landErr := h.waitMidPull(ctx, []int{childNode}, last, time.Minute)
	if landErr == nil {
		if err := h.node.kill(); err != nil {
			return err
		}
		r.expect("the SIGKILL lands mid-pull", true, "n3 listed version %d as building when it was killed", v)
	} else {
		r.expect("the SIGKILL lands mid-pull", false, "%v", landErr)
	}
	res, err := awaitImport(ctx, done, 2*time.Minute)
	if err != nil {
		return err
	}
	r.expect("the import succeeds", res.out.succeeded(), "%s", res.out)
	if !res.out.succeeded() {
		return nil
	}
	nv := res.out.Status.DatasetVersion
	took, err := h.waitServing(ctx, nv, survivors(), 30*time.Second)
	ok, got := within(took, 10*time.Second, err)
	r.expect("n1 and n2 serve the new version without n3 within 10 s", ok, "%s", got)
	if err := sleep(ctx, h.cfg.Hold); err != nil {
		return err
	}
	logStart := fileSize(h.node.log)
	restart := time.Now()
	if err := h.startNode(ctx); err != nil {
		return err
	}
	_, err = h.waitServing(ctx, nv, []int{childNode}, time.Minute)
	if err == nil {
		r.recovered(restart)
	}
	ok, got = within(time.Since(restart), 30*time.Second, err)
	r.expect("n3 serves the new version within 30 s of its restart", ok, "%s", got)
	if landErr == nil {
		logged := strings.Contains(readFrom(h.node.log, logStart), "removing incomplete dataset version")
		r.expect("n3 drops the half-pulled version at its restart", logged, "n3's log at restart %s \"removing incomplete dataset version\"", map[bool]string{true: "has", false: "lacks"}[logged])
	}
	return nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns the content of path from offset on.
func readFrom(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || offset > int64(len(b)) {
		return ""
	}
	return string(b[offset:])
}

// cacheHits returns the cache hits of the in-process read nodes.
func (h *harness) cacheHits(ctx context.Context) float64 {
	var hits float64
	for _, i := range survivors() {
		hits += scrapeSum(ctx, h.e.Nodes[i].URL, "promo_cache_hits_total ")
	}
	return hits
}

// cacheCalls returns the lookups of the in-process read nodes that went
// to the cache: hits, misses and bypasses.
func (h *harness) cacheCalls(ctx context.Context) float64 {
	var n float64
	for _, i := range survivors() {
		for _, m := range []string{"promo_cache_hits_total ", "promo_cache_misses_total ", "promo_cache_bypasses_total "} {
			n += scrapeSum(ctx, h.e.Nodes[i].URL, m)
		}
	}
	return n
}

// waitCacheHits waits until the read nodes get cache hits again, at most
// d.
func (h *harness) waitCacheHits(ctx context.Context, d time.Duration) error {
	from := h.cacheHits(ctx)
	deadline := time.Now().Add(d)
	for h.cacheHits(ctx) <= from {
		if time.Now().After(deadline) {
			return fmt.Errorf("no cache hit in %v", d)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func drillRedis(ctx context.Context, r *drillRun, freeze bool) error {
	h := r.h
	// The cache steps aside for a second after a slow answer: on a busy
	// machine hits come in bursts.
	before, beforeAll := h.cacheHits(ctx), h.cacheCalls(ctx)
	err := h.waitCacheHits(ctx, 5*time.Second)
	hits, all := h.cacheHits(ctx)-before, h.cacheCalls(ctx)-beforeAll
	r.expect("the fault lands while the cache serves", err == nil, "n1 and n2 had %.0f cache hits of %.0f lookups (hits, misses, bypasses) before it", hits, all)
	if freeze {
		err = h.pauseRedis()
	} else {
		err = h.stopRedis()
	}
	if err != nil {
		return err
	}
	if err := sleep(ctx, h.cfg.Hold); err != nil {
		return err
	}
	back := time.Now()
	if freeze {
		err = h.resumeRedis()
	} else {
		err = h.restartRedis(ctx)
	}
	if err != nil {
		return err
	}
	err = h.waitCacheHits(ctx, 30*time.Second)
	if err == nil {
		r.recovered(back)
	}
	ok, got := within(time.Since(back), 10*time.Second, err)
	r.expect("the read nodes use the cache again within 10 s", ok, "%s", got)
	return nil
}

func drillDiskPull(ctx context.Context, r *drillRun) (err error) {
	h := r.h
	failures := scrapeSum(ctx, h.e.Nodes[childNode].URL, "promo_readnode_pull_failures_total ")
	filler := filepath.Join(h.nodeStore, "filler")
	free, err := fill(filler, 128<<10)
	if err != nil {
		return err
	}
	removed := false
	defer func() {
		if !removed {
			os.Remove(filler)
		}
	}()
	r.note("n3's store: %d KiB left free", free>>10)
	// Long enough to tell a retry loop from a backoff.
	hold := 2 * h.cfg.Hold
	start := time.Now()
	_, out, err := h.importGen(ctx)
	if err != nil {
		return err
	}
	r.expect("the import succeeds", out.succeeded(), "%s", out)
	if !out.succeeded() {
		return nil
	}
	nv := out.Status.DatasetVersion
	took, err := h.waitServing(ctx, nv, survivors(), 30*time.Second)
	ok, got := within(took, 10*time.Second, err)
	r.expect("n1 and n2 serve the new version while n3's disk is full, within 10 s", ok, "%s", got)
	if err := sleep(ctx, time.Until(start.Add(hold))); err != nil {
		return err
	}
	alive := h.node.alive()
	var pulls float64
	if alive {
		pulls = scrapeSum(ctx, h.e.Nodes[childNode].URL, "promo_readnode_pull_failures_total ") - failures
	}
	rz, rzErr := h.nodeReadyz(ctx, childNode)
	switch {
	case !alive:
		r.note("n3 exited on the full disk: %s", h.node.logTail(600))
	case rzErr == nil && rz.Serving >= nv:
		r.note("n3 serves version %d although its disk is full", rz.Serving)
	}
	r.expect("n3's pull fails on the full disk", !alive || (pulls > 0 && (rzErr != nil || rz.Serving < nv)),
		"%.0f failed pulls in %v; n3 %s", pulls, time.Since(start).Round(time.Millisecond), map[bool]string{true: "running", false: "exited"}[alive])
	bound := hold.Seconds()
	r.expect(fmt.Sprintf("n3 backs off its failing pull: at most one attempt a second on average (%.0f in %v)", bound, hold), pulls <= bound,
		"%.0f failed pulls", pulls)
	back := time.Now()
	if err := os.Remove(filler); err != nil {
		return err
	}
	removed = true
	if !h.node.alive() {
		if err := h.startNode(ctx); err != nil {
			return err
		}
	}
	_, err = h.waitServing(ctx, nv, []int{childNode}, time.Minute)
	if err == nil {
		r.recovered(back)
	}
	ok, got = within(time.Since(back), 30*time.Second, err)
	r.expect("n3 serves the new version within 30 s once the space is back", ok, "%s", got)
	return nil
}

// fill writes path until its file system has only leave bytes free, and
// returns what is free then.
func fill(path string, leave int64) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		free, err := freeBytes(filepath.Dir(path))
		if err != nil {
			return 0, err
		}
		if free <= leave {
			return free, nil
		}
		n := min(int64(len(buf)), free-leave)
		if _, err := f.Write(buf[:n]); err != nil {
			return 0, err
		}
	}
}
