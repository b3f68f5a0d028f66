package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/ingestsvc"
	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/proxy"
	"github.com/promotion-service/promo/ring"
)

// membersEnv is PostgreSQL, a broker, ingest and a proxy in this process,
// and read nodes as child processes of promo readnode.
type membersEnv struct {
	t         *testing.T
	pgURL     string
	broker    string
	ingest    *ingestsvc.Server
	importDir string
	proxy     *proxy.Proxy
}

func (e *membersEnv) startNode(name, addr string, extra ...string) *child {
	e.t.Helper()
	args := append([]string{"readnode", "--name", name, "--addr", addr, "--data-dir", filepath.Join(e.t.TempDir(), name),
		"--postgres-url", e.pgURL, "--kafka-brokers", e.broker, "--cache-size", "16MiB", "--drop-grace", "2s"}, extra...)
	return startProcess(e.t, "http://"+addr+"/healthz", args...)
}

func (e *membersEnv) importVersion(file string) {
	e.t.Helper()
	resp, err := http.PostForm("http://"+e.ingest.Addr()+"/process-csv?wait=true", url.Values{"filename": {file}})
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		e.t.Fatalf("import of %s: %d %s", file, resp.StatusCode, b)
	}
}

// cluster returns GET /cluster of base.
func (e *membersEnv) cluster(base string) ring.Cluster {
	e.t.Helper()
	var c ring.Cluster
	status, m := getJSON(e.t, base+"/cluster")
	if status != 200 {
		e.t.Fatalf("GET %s/cluster: %d %v", base, status, m)
	}
	b, _ := json.Marshal(m)
	if err := json.Unmarshal(b, &c); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// waitRing waits until ingest and the proxy both serve ring version v, stable.
func (e *membersEnv) waitRing(v uint64, within time.Duration) ring.Cluster {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		c := e.cluster("http://" + e.ingest.Addr())
		p := e.cluster("http://" + e.proxy.Addr())
		if c.RingVersion == v && c.State == ring.StateStable && p.RingVersion == v {
			return c
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("ring version %d not serving within %v: ingest has %d (%s, %+v), proxy %d", v, within,
				c.RingVersion, c.State, c.Change, p.RingVersion)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *membersEnv) change(method, path string, body string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, "http://"+e.ingest.Addr()+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// moved counts the (slot, node) replicas of to that from did not have:
// the slots that nodes had to pull.
func moved(t *testing.T, from, to ring.Cluster) int {
	t.Helper()
	n := 0
	for s, owners := range to.Assignment {
		for _, o := range owners {
			found := false
			for _, p := range from.Assignment[s] {
				found = found || p == o
			}
			if !found {
				n++
			}
		}
	}
	return n
}

// load looks up random ids through the proxy until stop, checking that
// every answer is 200, the row of the version it names, and never from a
// version older than one already answered.
type load struct {
	requests, failures, older atomic.Int64
	mu                        sync.Mutex
	errs                      []string
	stop                      chan struct{}
	done                      sync.WaitGroup
}

func startLoad(t *testing.T, base string, versions *sync.Map, ids []promotion.ID, workers int, bound time.Duration) *load {
	l := &load{stop: make(chan struct{})}
	var newest atomic.Int64
	client := &http.Client{Timeout: 5 * time.Second}
	for w := range workers {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			end := time.Now().Add(bound)
			for time.Now().Before(end) {
				select {
				case <-l.stop:
					return
				default:
				}
				i := rng.IntN(len(ids))
				floor := newest.Load()
				resp, err := client.Get(base + "/promotions/" + ids[i].String())
				l.requests.Add(1)
				if err != nil {
					l.fail("GET: " + err.Error())
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				v, _ := strconv.ParseInt(resp.Header.Get("X-Dataset-Version"), 10, 64)
				recs, ok := versions.Load(v)
				switch {
				case resp.StatusCode != 200:
					l.fail(fmt.Sprintf("%s: %d %s", ids[i], resp.StatusCode, body))
				case !ok || string(body) != string(promotion.AppendJSON(nil, &recs.([]promotion.Record)[i])):
					l.fail(fmt.Sprintf("%s: %s from version %d", ids[i], body, v))
				case v < floor:
					l.older.Add(1)
					l.fail(fmt.Sprintf("%s: version %d after %d was answered", ids[i], v, floor))
				default:
					for cur := newest.Load(); v > cur && !newest.CompareAndSwap(cur, v); cur = newest.Load() {
					}
				}
			}
		}()
	}
	return l
}

func (l *load) fail(msg string) {
	l.failures.Add(1)
	l.mu.Lock()
	if len(l.errs) < 5 {
		l.errs = append(l.errs, msg)
	}
	l.mu.Unlock()
}

func (l *load) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.done.Wait()
	t.Logf("%d lookups through the proxy during the changes", l.requests.Load())
	if l.failures.Load() > 0 || l.older.Load() > 0 {
		t.Fatalf("%d of %d lookups failed, %d from an older version: %v", l.failures.Load(), l.requests.Load(), l.older.Load(), l.errs)
	}
	if l.requests.Load() < 1000 {
		t.Fatalf("only %d lookups ran: the load did not cover the changes", l.requests.Load())
	}
}

// Under constant lookups through the proxy: a joining read node is killed
// mid-pull and the change reverted, a node joins (while a new dataset
// version is imported) and one is removed, with no failed lookup, no
// answer from an older version, the newcomer leading about a quarter of
// the primaries, and at most 1.1x the ideal share of slots moved.
func TestMembershipChangesUnderLoad(t *testing.T) {
	e := &membersEnv{t: t, pgURL: localsvctest.Database(t), broker: localsvctest.Kafka(t, events.Topic).Addr(), importDir: t.TempDir()}
	ic := ingestsvc.DefaultConfig()
	ic.Addr = "127.0.0.1:0"
	ic.PostgresURL, ic.KafkaBrokers, ic.ImportDir = e.pgURL, []string{e.broker}, e.importDir
	ic.Logger = slog.New(slog.DiscardHandler)
	var err error
	if e.ingest, err = ingestsvc.Start(context.Background(), ic); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.ingest.Close(context.Background()) })

	const rows = 600_000
	versions := &sync.Map{}
	recs1 := writeVersion(t, filepath.Join(e.importDir, "v1.csv"), rows, 1)
	versions.Store(int64(1), recs1)
	ids := make([]promotion.ID, len(recs1))
	for i := range recs1 {
		ids[i] = recs1[i].ID
	}
	var seeds []string
	addrs := map[string]string{}
	for _, name := range []string{"n1", "n2", "n3"} {
		addrs[name] = freeAddr(t)
		seeds = append(seeds, name+"=http://"+addrs[name])
	}
	for _, name := range []string{"n1", "n2", "n3"} {
		e.startNode(name, addrs[name], "--nodes", strings.Join(seeds, ","), "--replicas", "2")
	}
	e.importVersion("v1.csv")
	pc := proxy.DefaultConfig()
	pc.Addr = "127.0.0.1:0"
	if pc.Nodes, err = ring.ParseNodes(strings.Join(seeds, ","), true); err != nil {
		t.Fatal(err)
	}
	pc.RefreshInterval = 200 * time.Millisecond
	// As devcluster's tests do: three read nodes, a 600,000-row import
	// and the load share 2 cores; this test checks answers and versions,
	// not speed. (A CI run once saw 3 of 42,000 lookups answered 503: at
	// the ring switch both replicas of a slot answered 421, gainers that
	// had not seen the switch; read nodes now answer the pending ring's
	// slots once pulled.)
	pc.TryTimeout, pc.CatchUpWait = 2*time.Second, 5*time.Second
	pc.Logger = slog.New(slog.DiscardHandler)
	if e.proxy, err = proxy.Start(context.Background(), pc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.proxy.Close(context.Background()) })
	before := e.waitRing(1, 10*time.Second)
	// Every node serves version 1 before the load starts.
	for _, name := range []string{"n1", "n2", "n3"} {
		waitReady(t, "http://"+addrs[name], 60*time.Second)
	}
	l := startLoad(t, "http://"+e.proxy.Addr(), versions, ids, 4, 3*time.Minute)
	defer func() {
		select {
		case <-l.stop:
		default:
			close(l.stop)
			l.done.Wait()
		}
	}()

	// A joiner killed mid-pull: the change stays prepared and lookups go
	// on from the serving ring; removing the joiner reverts it.
	dir4 := filepath.Join(t.TempDir(), "n4-killed")
	addr4 := freeAddr(t)
	n4 := startProcess(t, "http://"+addr4+"/healthz", "readnode", "--name", "n4", "--addr", addr4, "--data-dir", dir4,
		"--postgres-url", e.pgURL, "--kafka-brokers", e.broker, "--cache-size", "16MiB", "--join")
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := e.cluster("http://" + e.ingest.Addr())
		if c.Change != nil && c.Change.RingVersion == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n4 did not join: %+v\n%s", c, n4.log)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Kill it once its pull of version 1 (300,000 rows) has begun: the
	// store's temporary directory for it exists.
	for {
		if _, err := os.Stat(filepath.Join(dir4, "tmp", "v1")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n4 did not start pulling\n%s", n4.log)
		}
		time.Sleep(time.Millisecond)
	}
	n4.kill(t)
	if strings.Contains(n4.log.String(), "prepared version") {
		t.Fatalf("the kill did not land mid-pull: n4 had prepared its slots\n%s", n4.log)
	}
	if c := e.cluster("http://" + e.ingest.Addr()); c.State != ring.StateRebalancing || len(c.Change.Prepared) == 4 {
		t.Fatalf("after the kill: %s %+v", c.State, c.Change)
	}
	time.Sleep(500 * time.Millisecond) // lookups go on meanwhile
	if status, body := e.change("DELETE", "/cluster/nodes/n4", ""); status != 202 || !strings.Contains(body, `"state":"stable"`) {
		t.Fatalf("DELETE the dead joiner: %d %s", status, body)
	}
	if c := e.waitRing(1, 5*time.Second); moved(t, before, c) != 0 {
		t.Fatal("the reverted change moved slots")
	}

	// n4 joins for real while version 2 is imported.
	recs2 := writeVersion(t, filepath.Join(e.importDir, "v2.csv"), rows, 2)
	versions.Store(int64(2), recs2)
	addr4 = freeAddr(t)
	start := time.Now()
	e.startNode("n4", addr4, "--join")
	e.importVersion("v2.csv")
	after := e.waitRing(3, 90*time.Second)
	t.Logf("join, with an import of %d rows meanwhile: ring 3 serves %v after the node started", rows, time.Since(start).Round(time.Millisecond))
	primaries := map[string]int{}
	for _, n := range after.Nodes {
		primaries[n.Name] = n.Slots
	}
	if p := primaries["n4"]; p < ring.DefaultSlots/4*98/100 || p > ring.DefaultSlots/4*102/100 {
		t.Fatalf("n4 leads %d primaries, want about %d: %v", p, ring.DefaultSlots/4, primaries)
	}
	ideal := 2 * ring.DefaultSlots / 4
	if m := moved(t, before, after); m > ideal*11/10 {
		t.Fatalf("the join moved %d slot replicas, more than 1.1x the ideal %d", m, ideal)
	} else {
		t.Logf("join moved %d slot replicas (ideal %d)", m, ideal)
	}

	// n1 leaves.
	start = time.Now()
	if status, body := e.change("DELETE", "/cluster/nodes/n1", ""); status != 202 || !strings.Contains(body, `"leaving"`) {
		t.Fatalf("DELETE n1: %d %s", status, body)
	}
	final := e.waitRing(4, 60*time.Second)
	t.Logf("removal: ring 4 serves %v after the request", time.Since(start).Round(time.Millisecond))
	if m := moved(t, after, final); m > ideal*11/10 {
		t.Fatalf("the removal moved %d slot replicas, more than 1.1x the ideal %d", m, ideal)
	} else {
		t.Logf("removal moved %d slot replicas (ideal %d)", m, ideal)
	}
	for _, n := range final.Nodes {
		if n.Name == "n1" {
			t.Fatalf("n1 is still a member: %+v", final.Nodes)
		}
	}
	time.Sleep(3 * time.Second) // past n1's drop grace
	l.end(t)
}

// waitReady waits until base's /readyz answers 200.
func waitReady(t *testing.T, base string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v", base, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
