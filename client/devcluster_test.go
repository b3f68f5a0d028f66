package client

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/promotion-service/promo/devcluster"
	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
)

// startCluster runs a devcluster of 3 read nodes, R=2, for the test, or
// skips (fails on CI) without PostgreSQL or redis-server.
func startCluster(t *testing.T) (*devcluster.Cluster, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "promo-client-devcluster-")
	if err != nil {
		t.Fatal(err)
	}
	importDir := t.TempDir()
	c, err := devcluster.Start(context.Background(), devcluster.Config{Dir: dir, ImportDir: importDir, Nodes: 3, Replicas: 2,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		os.RemoveAll(dir)
		localsvctest.Unavailable(t, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		os.RemoveAll(dir)
	})
	return c, importDir
}

// importVersion writes n rows of tag to the import directory and imports
// them through ingest, waiting for the commit (not for the read nodes).
func importVersion(c *devcluster.Cluster, dir string, n int, tag int64) ([]promotion.Record, error) {
	recs, csv := dataset(n, tag)
	name := fmt.Sprintf("v%d.csv", tag)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(csv), 0o644); err != nil {
		return nil, err
	}
	resp, err := http.PostForm(c.Endpoints().Ingest+"/process-csv?wait=true", url.Values{"filename": {name}})
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("import %s: %d %s", name, resp.StatusCode, b)
	}
	return recs, nil
}

// waitVersion waits until the client answers id from version v.
func waitVersion(t *testing.T, c *Client, id promotion.ID, v uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		p, err := c.Get(context.Background(), id.String())
		if err == nil && p.Version == v {
			return
		}
		last = fmt.Errorf("version %d, %v", p.Version, err)
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("version %d never answered: %v", v, last)
}

// TestDevcluster: the client against a whole cluster finds every id of a
// dataset through Get and BatchGet, answers unknown ids as such, returns
// no error while a node is stopped, and never an older version after a
// newer one while a new version is imported.
func TestDevcluster(t *testing.T) {
	cl, dir := startCluster(t)
	e := cl.Endpoints()
	recs, err := importVersion(cl, dir, 3000, 1)
	if err != nil {
		t.Fatal(err)
	}
	c := mustNew(t, Config{Seeds: []string{e.Nodes[0].URL}})
	if s := c.Stats(); s.RingVersion != 1 || s.Nodes != 3 {
		t.Fatalf("stats %+v: want the ring of 3 nodes", s)
	}
	waitVersion(t, c, recs[0].ID, 1)
	ctx := context.Background()
	ids := make([]string, len(recs))
	for i := range recs {
		ids[i] = recs[i].ID.String()
		p, err := c.Get(ctx, ids[i])
		if w := want(&recs[i], 1); err != nil || p != w {
			t.Fatalf("Get(%s) = %+v, %v; want %+v", ids[i], p, err, w)
		}
	}
	for _, id := range unknownIDs(20) {
		if _, err := c.Get(ctx, id); err != ErrNotFound {
			t.Fatalf("Get(unknown) = %v", err)
		}
	}
	unknown := unknownIDs(20)
	found, missing, err := c.BatchGet(ctx, append(append([]string(nil), ids...), unknown...))
	if err != nil || len(found) != len(recs) || fmt.Sprint(missing) != fmt.Sprint(unknown) {
		t.Fatalf("BatchGet: %d found, missing %v, %v", len(found), missing, err)
	}
	for i := range recs {
		if w := want(&recs[i], 1); found[i] != w {
			t.Fatalf("BatchGet found[%d] = %+v, want %+v", i, found[i], w)
		}
	}
	t.Logf("every id found; stats %+v", c.Stats())

	// Load from 4 goroutines (Gets, and a BatchGet of 50 ids one time in
	// ten): every lookup answered, versions never going back per goroutine
	// nor below what the client returned before the lookup began.
	var stop atomic.Bool
	var lookups, errs atomic.Int64
	var mu sync.Mutex
	var problems []string
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			last := uint64(0)
			for k := 0; !stop.Load(); k++ {
				before := c.floor.get()
				var got []Promotion
				if k%10 == 9 {
					batch := make([]string, 50)
					for i := range batch {
						batch[i] = ids[rng.IntN(len(ids))]
					}
					f, m, err := c.BatchGet(ctx, batch)
					if err != nil || len(m) != 0 {
						errs.Add(1)
						report("BatchGet: %v, missing %v", err, m)
						continue
					}
					got = f
				} else {
					i := rng.IntN(len(ids))
					p, err := c.Get(ctx, ids[i])
					if err != nil {
						errs.Add(1)
						report("Get: %v", err)
						continue
					}
					got = []Promotion{p}
				}
				lookups.Add(1)
				for _, p := range got {
					if p.Version < last || p.Version < before.Version {
						report("version %d after %d (client had returned %d)", p.Version, last, before.Version)
					}
					if int64(p.Price) != int64(p.Version) {
						report("%s answered %v from version %d: a mix of versions", p.ID, p.Price, p.Version)
					}
					last = p.Version
				}
			}
		}()
	}
	waitLookups := func(n int64) {
		deadline := time.Now().Add(30 * time.Second)
		for target := lookups.Load() + n; lookups.Load() < target; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("no progress: %d lookups", lookups.Load())
				return
			}
		}
	}
	waitLookups(500)
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.StopNode(stopCtx, 1); err != nil {
		t.Fatal(err)
	}
	waitLookups(2000)
	t.Logf("node n2 stopped: %d lookups, %d errors; stats %+v", lookups.Load(), errs.Load(), c.Stats())
	// A new version while the load runs.
	if _, err := importVersion(cl, dir, 3000, 2); err != nil {
		t.Fatal(err)
	}
	waitVersion(t, c, recs[0].ID, 2)
	waitLookups(1000)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d lookups, %d errors; stats %+v", lookups.Load(), errs.Load(), c.Stats())
	for _, p := range problems {
		t.Error(p)
	}
	if errs.Load() > 0 {
		t.Fatalf("%d lookups failed", errs.Load())
	}
}
