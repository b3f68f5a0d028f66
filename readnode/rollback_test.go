package readnode_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/proxy"
	"github.com/promotion-service/promo/readnode"
)

// csvOf builds the rows importVersion imports: the same ids for every tag,
// prices encoding the tag; n may be less to cut the file short.
func csvOf(n int, tag int64) (string, []promotion.Record) {
	rng := rand.New(rand.NewPCG(42, 42))
	recs := make([]promotion.Record, n)
	var b strings.Builder
	for i := range recs {
		r := &recs[i]
		for j := range r.ID {
			r.ID[j] = byte(rng.Uint32())
		}
		r.PriceMicros = tag*1_000_000 + int64(i%100)*10_000
		r.Expires = 1_600_000_000 + int64(i)
		b.Write(gen.AppendRow(nil, r, gen.FormatGo))
	}
	return b.String(), recs
}

// call sends a request to the ingest service and decodes its JSON answer.
func (c *cluster) call(method, path, contentType, body string) (int, map[string]any) {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://"+c.ingest.Addr()+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("%s %s: %d, not JSON: %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

// datasetStates returns the state of each version /datasets lists at base.
func datasetStates(t *testing.T, base string) map[uint64]string {
	t.Helper()
	resp, err := http.Get(base + "/datasets")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l struct {
		Datasets []struct {
			Version uint64 `json:"version"`
			State   string `json:"state"`
		} `json:"datasets"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		t.Fatal(err)
	}
	out := map[uint64]string{}
	for _, d := range l.Datasets {
		out[d.Version] = d.State
	}
	return out
}

// waitStamp waits until every running node serves version v at epoch e.
func (c *cluster) waitStamp(v, e int) {
	c.t.Helper()
	for name := range c.run {
		localsvctest.SucceedsSoon(c.t, 60*time.Second, func() error {
			resp, err := http.Get(c.url(name) + "/readyz")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var m map[string]any
			json.NewDecoder(resp.Body).Decode(&m)
			if resp.StatusCode != 200 || m["serving_version"] != float64(v) || m["serving_epoch"] != float64(e) {
				return fmt.Errorf("node %s: %d %v, want version %d at epoch %d", name, resp.StatusCode, m, v, e)
			}
			return nil
		})
	}
}

// A file with 30% of the serving rows is committed but held: ingest ends
// the import held (409 with the reason), lists the version held, read nodes
// keep serving the previous version, and an operator's activation serves
// it everywhere, at a new epoch.
func TestHeldVersionServesOnlyWhenActivated(t *testing.T) {
	c := newCluster(t, []string{"n1", "n2", "n3"}, 2, nil)
	full := c.importVersion(2000, 1)
	c.waitStamp(1, 1)
	small, _ := csvOf(600, 2)
	status, st := c.call(http.MethodPost, "/process-csv?wait=true", "text/csv", small)
	if status != 409 || st["state"] != "held" || st["dataset_version"] != float64(2) ||
		!strings.Contains(fmt.Sprint(st["error"]), "600 rows, fewer than 0.5 x the 2000 rows") {
		t.Fatalf("import of 30%%: %d %v, want 409 held with the reason", status, st)
	}
	if _, polled := c.call(http.MethodGet, fmt.Sprint(st["status_url"]), "", ""); polled["state"] != "held" || polled["error"] != st["error"] {
		t.Fatalf("GET %s: %v", st["status_url"], polled)
	}
	if states := datasetStates(t, "http://"+c.ingest.Addr()); states[1] != "committed" || states[2] != "held" {
		t.Fatalf("ingest /datasets: %v, want 1 committed and 2 held", states)
	}
	if got := metric(t, "http://"+c.ingest.Addr(), `promo_imports_total{result="held"}`); got != 1 {
		t.Fatalf(`promo_imports_total{result="held"} = %v, want 1`, got)
	}
	// Nodes may prepare the held version; none serves it.
	client := &http.Client{}
	checkServes := func(v, e int) {
		t.Helper()
		for i := 0; i < len(full); i += 50 {
			r := full[i]
			for _, o := range c.ring.OwnersOf(r.ID) {
				resp, err := client.Get(c.url(c.ring.Nodes()[o]) + "/promotions/" + r.ID.String())
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := r
				want.PriceMicros = int64(v)*1_000_000 + int64(i%100)*10_000
				inVersion := v == 1 || i < 600
				switch {
				case resp.Header.Get(lookup.VersionHeader) != fmt.Sprint(v) || resp.Header.Get(lookup.EpochHeader) != fmt.Sprint(e):
					t.Fatalf("row %d: version %s epoch %s, want %d at %d", i, resp.Header.Get(lookup.VersionHeader), resp.Header.Get(lookup.EpochHeader), v, e)
				case inVersion && (resp.StatusCode != 200 || string(body) != string(promotion.AppendJSON(nil, &want))):
					t.Fatalf("row %d in version %d: %d %s", i, v, resp.StatusCode, body)
				case !inVersion && resp.StatusCode != 404:
					t.Fatalf("row %d, not in version %d: %d %s, want 404", i, v, resp.StatusCode, body)
				}
			}
		}
	}
	c.waitStamp(1, 1)
	checkServes(1, 1)

	if status, _ := c.call(http.MethodPost, "/datasets/9/activate", "", ""); status != 404 {
		t.Fatalf("activate an unknown version: %d, want 404", status)
	}
	if status, _ := c.call(http.MethodPost, "/datasets/x/activate", "", ""); status != 400 {
		t.Fatalf("activate x: %d, want 400", status)
	}
	status, act := c.call(http.MethodPost, "/datasets/2/activate", "", "")
	if status != 202 || act["version"] != float64(2) {
		t.Fatalf("activate 2: %d %v, want 202", status, act)
	}
	c.waitStamp(2, 2)
	checkServes(2, 2)
	// Already serving: ?wait=true answers at once.
	status, act = c.call(http.MethodPost, "/datasets/2/activate?wait=true", "", "")
	if status != 200 || act["state"] != "serving" || act["epoch"] != float64(2) {
		t.Fatalf("activate what serves: %d %v, want 200 serving at epoch 2", status, act)
	}
	if states := datasetStates(t, "http://"+c.ingest.Addr()); states[2] != "committed" {
		t.Fatalf("ingest /datasets after the activation: %v, want 2 committed", states)
	}
	if status, cur := c.call(http.MethodGet, "/datasets/current", "", ""); status != 200 || cur["version"] != float64(2) || cur["epoch"] != float64(2) {
		t.Fatalf("ingest /datasets/current: %d %v, want version 2 at epoch 2", status, cur)
	}
	if ts := metric(t, c.url("n1"), "promo_dataset_activated_timestamp_seconds"); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("n1's promo_dataset_activated_timestamp_seconds = %v, want about now", ts)
	}
}

// answer is one lookup through the proxy during the rollback test.
type answer struct {
	start  time.Time
	stamp  lookup.Stamp
	failed string
}

// Roll the cluster back to the previous version and forward again under
// lookup load through the proxy: no request fails, every answer's body is
// the row of the version it names, no client sees (epoch, version) go
// back, and soon after each activate?wait=true returns every answer
// carries the version just activated. The nodes keep one version, so the
// rollback makes each of them pull the previous version again.
func TestRollbackUnderLoadThroughProxy(t *testing.T) {
	c := newCluster(t, []string{"n1", "n2", "n3"}, 2, func(cfg *readnode.Config) { cfg.KeepVersions = 1 })
	recs := c.importVersion(20_000, 1)
	c.waitStamp(1, 1)
	c.importVersion(20_000, 2)
	c.waitStamp(2, 2)
	for name := range c.run {
		localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
			if states := datasetStates(t, c.url(name)); len(states) != 1 || states[2] != "active" {
				return fmt.Errorf("node %s keeps %v, want only version 2", name, states)
			}
			return nil
		})
	}
	pc := proxy.DefaultConfig()
	pc.Addr = "127.0.0.1:0"
	pc.Nodes = c.nodes
	pc.Replicas = 2
	pc.Logger = slog.New(slog.DiscardHandler)
	p, err := proxy.Start(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })

	var (
		mu      sync.Mutex
		answers []answer
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(answers)
	}
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			var last lookup.Stamp
			for !stop.Load() {
				i := rng.IntN(len(recs))
				a := answer{start: time.Now()}
				resp, err := client.Get("http://" + p.Addr() + "/promotions/" + recs[i].ID.String())
				if err != nil {
					a.failed = err.Error()
				} else {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					a.stamp = lookup.ParseStamp([]byte(resp.Header.Get(lookup.VersionHeader)), []byte(resp.Header.Get(lookup.EpochHeader)))
					want := recs[i]
					want.PriceMicros = int64(a.stamp.Version)*1_000_000 + int64(i%100)*10_000
					switch {
					case resp.StatusCode != 200:
						a.failed = fmt.Sprintf("%d %s", resp.StatusCode, body)
					case string(body) != string(promotion.AppendJSON(nil, &want)):
						a.failed = fmt.Sprintf("%s answered %s", a.stamp, body)
					case a.stamp.Less(last):
						a.failed = fmt.Sprintf("went back from %s to %s", last, a.stamp)
					}
					last = a.stamp
				}
				mu.Lock()
				answers = append(answers, a)
				mu.Unlock()
			}
		}()
	}
	// moreAnswers waits for n more answers than now.
	moreAnswers := func(n int) {
		t.Helper()
		target := count() + n
		localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
			if got := count(); got < target {
				return fmt.Errorf("%d answers, want %d", got, target)
			}
			return nil
		})
	}
	moreAnswers(500)
	// activate returns when it asked and when it had its answer.
	activate := func(v int) (time.Time, time.Time) {
		t.Helper()
		asked := time.Now()
		status, st := c.call(http.MethodPost, fmt.Sprintf("/datasets/%d/activate?wait=true", v), "", "")
		if status != 200 || st["state"] != "serving" {
			t.Fatalf("activate %d: %d %v, want 200 serving", v, status, st)
		}
		return asked, time.Now()
	}
	askedBack, back := activate(1)
	c.waitStamp(1, 3) // every node, though it had dropped version 1
	moreAnswers(2000)
	askedForward, forward := activate(2)
	moreAnswers(2000)
	stop.Store(true)
	wg.Wait()
	c.waitStamp(2, 4)

	// Every node serves the versions it had dropped: it pulled them again.
	const bound = 2 * time.Second // from activate's answer to every answer on the new version
	var lagBack, lagForward time.Duration
	seen := map[lookup.Stamp]int{}
	for _, a := range answers {
		if a.failed != "" {
			t.Fatalf("a lookup failed: %s", a.failed)
		}
		seen[a.stamp]++
		switch {
		case a.start.After(forward):
			if a.stamp != (lookup.Stamp{Epoch: 4, Version: 2}) {
				lagForward = max(lagForward, a.start.Sub(forward))
			}
		case a.start.After(back) && a.start.Before(askedForward):
			if a.stamp != (lookup.Stamp{Epoch: 3, Version: 1}) {
				lagBack = max(lagBack, a.start.Sub(back))
			}
		}
	}
	t.Logf("%d lookups, by stamp %v; activate?wait=true took %v (rollback, pulling 1 again) and %v (forward); after the rollback's answer, older answers for %v; after the roll forward's, %v",
		len(answers), seen, back.Sub(askedBack).Round(time.Millisecond), forward.Sub(askedForward).Round(time.Millisecond), lagBack, lagForward)
	if lagBack > bound || lagForward > bound {
		t.Fatalf("answers from the version left %v (rollback) and %v (forward) after activate returned, want at most %v", lagBack, lagForward, bound)
	}
	if seen[lookup.Stamp{Epoch: 3, Version: 1}] == 0 || seen[lookup.Stamp{Epoch: 4, Version: 2}] == 0 {
		t.Fatalf("answers by stamp %v: the rollback or the roll forward never served", seen)
	}
}
