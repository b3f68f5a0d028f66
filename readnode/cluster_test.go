package readnode_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/go-redis/v9"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/cache"
	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/ingestsvc"
	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/readnode"
	"github.com/promotion-service/promo/ring"
)

func TestMain(m *testing.M) { os.Exit(localsvctest.Run(m)) }

// cluster is PostgreSQL, a broker, an ingest service and read nodes.
type cluster struct {
	t      *testing.T
	pgURL  string
	kafka  *localsvc.Kafka
	ingest *ingestsvc.Server
	nodes  []ring.Node
	ring   *ring.Assignment
	run    map[string]*readnode.Node
	dirs   map[string]string
	cfg    func(*readnode.Config)
}

func newCluster(t *testing.T, names []string, replicas int, mutate func(*readnode.Config)) *cluster {
	t.Helper()
	return newClusterOn(t, localsvctest.Database(t), names, replicas, mutate)
}

// newClusterOn is newCluster on the PostgreSQL database pgURL.
func newClusterOn(t *testing.T, pgURL string, names []string, replicas int, mutate func(*readnode.Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, pgURL: pgURL, kafka: localsvctest.Kafka(t, events.Topic),
		run: map[string]*readnode.Node{}, dirs: map[string]string{}, cfg: mutate}
	ic := ingestsvc.DefaultConfig()
	ic.Addr = "127.0.0.1:0"
	ic.PostgresURL = c.pgURL
	ic.KafkaBrokers = []string{c.kafka.Addr()}
	ic.ImportDir = t.TempDir()
	ic.Logger = slog.New(slog.DiscardHandler)
	var err error
	if c.ingest, err = ingestsvc.Start(context.Background(), ic); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.ingest.Close(context.Background()) })
	for _, name := range names {
		port, err := localsvc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, ring.Node{Name: name, URL: fmt.Sprintf("http://127.0.0.1:%d", port)})
		c.dirs[name] = t.TempDir()
	}
	if c.ring, err = ring.Assign(names, replicas, ring.DefaultSlots, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		c.start(n.Name, replicas)
	}
	t.Cleanup(func() {
		for name := range c.run {
			c.stop(name)
		}
	})
	return c
}

func (c *cluster) url(name string) string {
	for _, n := range c.nodes {
		if n.Name == name {
			return n.URL
		}
	}
	c.t.Fatalf("no node %s", name)
	return ""
}

func (c *cluster) start(name string, replicas int) {
	c.t.Helper()
	cfg := readnode.DefaultConfig()
	cfg.Name = name
	cfg.Addr = strings.TrimPrefix(c.url(name), "http://")
	cfg.DataDir = c.dirs[name]
	cfg.PostgresURL = c.pgURL
	cfg.KafkaBrokers = []string{c.kafka.Addr()}
	cfg.Nodes = c.nodes
	cfg.Replicas = replicas
	cfg.PollInterval = 50 * time.Millisecond
	cfg.CacheSize = 16 << 20
	cfg.Logger = slog.New(slog.DiscardHandler)
	if c.cfg != nil {
		c.cfg(&cfg)
	}
	// The node's URL, in every node's membership, names its port: it was
	// free when the cluster was made, but a client socket may hold it a
	// moment. Retry, bounded, with backoff.
	var n *readnode.Node
	var err error
	for pause := 50 * time.Millisecond; ; pause *= 2 {
		n, err = readnode.Start(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "address already in use") || pause > 2*time.Second {
			break
		}
		time.Sleep(pause)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	c.run[name] = n
}

func (c *cluster) stop(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.run[name].Close(ctx)
	delete(c.run, name)
}

// importVersion imports n rows whose prices encode tag, with the same ids
// for every tag, and returns them.
func (c *cluster) importVersion(n int, tag int64) []promotion.Record {
	c.t.Helper()
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
	resp, err := http.Post("http://"+c.ingest.Addr()+"/process-csv?wait=true", "text/csv", strings.NewReader(b.String()))
	if err != nil {
		c.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		c.t.Fatalf("import: %d %s", resp.StatusCode, body)
	}
	return recs
}

// waitServing waits until every running node serves version v and is ready.
func (c *cluster) waitServing(v int) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for name := range c.run {
		for {
			resp, err := http.Get(c.url(name) + "/readyz")
			if err == nil {
				var m map[string]any
				json.NewDecoder(resp.Body).Decode(&m)
				resp.Body.Close()
				if resp.StatusCode == 200 && m["serving_version"] == float64(v) {
					break
				}
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("node %s does not serve version %d", name, v)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func get(t *testing.T, client *http.Client, url string) (int, string, string) {
	t.Helper()
	status, version, body, err := tryGet(client, url)
	if err != nil {
		t.Fatal(err)
	}
	return status, version, body
}

// tryGet is get for goroutines other than the test's: it returns the
// error instead of failing the test.
func tryGet(client *http.Client, url string) (status int, version, body string, err error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", "", err
	}
	return resp.StatusCode, resp.Header.Get("X-Dataset-Version"), string(b), nil
}

func TestEveryOwnerAnswers(t *testing.T) {
	c := newCluster(t, []string{"n1", "n2", "n3"}, 2, nil)
	recs := c.importVersion(5000, 1)
	c.waitServing(1)
	client := &http.Client{}
	for i := 0; i < len(recs); i += 37 {
		r := recs[i]
		owners := map[string]bool{}
		for _, o := range c.ring.OwnersOf(r.ID) {
			owners[c.ring.Nodes()[o]] = true
		}
		for _, n := range c.nodes {
			status, version, body := get(t, client, n.URL+"/promotions/"+r.ID.String())
			switch {
			case owners[n.Name] && (status != 200 || version != "1" || body != string(promotion.AppendJSON(nil, &r))):
				t.Fatalf("owner %s of %s: %d %s %s", n.Name, r.ID, status, version, body)
			case !owners[n.Name]:
				var m struct {
					Owners []struct{ Name, URL string } `json:"owners"`
				}
				json.Unmarshal([]byte(body), &m)
				if status != 421 || len(m.Owners) != 2 || !owners[m.Owners[0].Name] || m.Owners[0].URL == "" {
					t.Fatalf("non-owner %s of %s: %d %s", n.Name, r.ID, status, body)
				}
			}
		}
	}
	// Every node describes the same ring, the one it routes by.
	for _, n := range c.nodes {
		status, _, body := get(t, client, n.URL+"/cluster")
		var cl ring.Cluster
		if err := json.Unmarshal([]byte(body), &cl); status != 200 || err != nil {
			t.Fatalf("GET /cluster on %s: %d %v %s", n.Name, status, err, body)
		}
		a, _, err := cl.Ring()
		if err != nil {
			t.Fatalf("GET /cluster on %s: %v", n.Name, err)
		}
		for s := range cl.Slots {
			if got, want := a.Nodes()[a.Owners(s)[1]], c.ring.Nodes()[c.ring.Owners(s)[1]]; got != want {
				t.Fatalf("GET /cluster on %s: slot %d's second replica is %s, want %s", n.Name, s, got, want)
			}
		}
	}
	// Unknown and malformed ids, on an owner.
	unknown := promotion.ID{0xde, 0xad}
	owner := c.ring.Nodes()[c.ring.OwnersOf(unknown)[0]]
	if status, _, _ := get(t, client, c.url(owner)+"/promotions/"+unknown.String()); status != 404 {
		t.Fatalf("unknown id: %d", status)
	}
	if status, _, _ := get(t, client, c.url(owner)+"/promotions/nope"); status != 400 {
		t.Fatalf("malformed id: %d", status)
	}
}

// TestSwitchUnderLoad: lookups on every owner while a new version arrives
// never fail and never mix: each answer is the value of the version in
// its header, and a client's versions never go back.
func TestSwitchUnderLoad(t *testing.T) {
	c := newCluster(t, []string{"n1", "n2", "n3"}, 2, nil)
	recs := c.importVersion(20_000, 1)
	c.waitServing(1)
	var stop atomic.Bool
	var count atomic.Int64
	errs := make(chan string, 16)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			rng := rand.New(rand.NewPCG(uint64(g), 5))
			last := map[string]int{}
			for !stop.Load() {
				i := rng.IntN(len(recs))
				r := recs[i]
				o := c.ring.Nodes()[c.ring.OwnersOf(r.ID)[rng.IntN(2)]]
				status, vh, body, err := tryGet(client, c.url(o)+"/promotions/"+r.ID.String())
				if err != nil {
					errs <- fmt.Sprintf("%s: %v", o, err)
					return
				}
				var v int
				fmt.Sscan(vh, &v)
				want := r
				want.PriceMicros = int64(v)*1_000_000 + int64(i%100)*10_000
				switch {
				case status != 200:
					errs <- fmt.Sprintf("%s: %d %s", o, status, body)
					return
				case body != string(promotion.AppendJSON(nil, &want)):
					errs <- fmt.Sprintf("%s answered version %d with %s", o, v, body)
					return
				case v < last[o]:
					errs <- fmt.Sprintf("%s went back from version %d to %d", o, last[o], v)
					return
				}
				last[o] = v
				count.Add(1)
			}
		}()
	}
	for v := 2; v <= 3; v++ {
		c.importVersion(20_000, int64(v))
		c.waitServing(v)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if count.Load() == 0 {
		t.Fatal("no lookups ran")
	}
	t.Logf("%d lookups during two switches", count.Load())
}

// TestRestartMidPull stops a node while it pulls a version and starts it
// again: it redoes the pull, serves the version, and its shard checks out.
func TestRestartMidPull(t *testing.T) {
	c := newCluster(t, []string{"n1", "n2", "n3"}, 2, func(cfg *readnode.Config) { cfg.PullWorkers = 1 })
	c.importVersion(2000, 1)
	c.waitServing(1)
	c.stop("n2")
	recs := c.importVersion(150_000, 2)
	c.start("n2", 2)
	// Stop it while version 2 is being built.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(c.url("n2") + "/datasets")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"state":"building"`) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("n2 never started pulling version 2")
		}
		time.Sleep(2 * time.Millisecond)
	}
	c.stop("n2")
	c.start("n2", 2)
	c.waitServing(2)
	client := &http.Client{}
	n2 := c.ring.Index("n2")
	checked := 0
	for i, r := range recs {
		if !c.ring.Holds(n2, ring.Slot(r.ID, ring.DefaultSlots)) || i%13 != 0 {
			continue
		}
		status, v, body := get(t, client, c.url("n2")+"/promotions/"+r.ID.String())
		if status != 200 || v != "2" || body != string(promotion.AppendJSON(nil, &recs[i])) {
			t.Fatalf("n2 after a restart mid-pull: %d %s %s", status, v, body)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("nothing checked")
	}
}

func TestRedisCache(t *testing.T) {
	rd := localsvctest.Redis(t)
	c := newCluster(t, []string{"n1", "n2"}, 1, func(cfg *readnode.Config) {
		cfg.Metrics = metrics.NewSet()
		cc := cache.DefaultConfig(rd.URL)
		cc.Logger, cc.Metrics = cfg.Logger, cfg.Metrics
		var err error
		if cfg.NewCache, err = cache.ForMode(cache.ModeRedis, cc); err != nil {
			t.Fatal(err)
		}
	})
	recs := c.importVersion(2000, 1)
	c.waitServing(1)
	client := &http.Client{}
	check := func(version int) {
		t.Helper()
		for i := 0; i < 200; i++ {
			r := recs[i]
			r.PriceMicros = int64(version)*1_000_000 + int64(i%100)*10_000
			o := c.ring.Nodes()[c.ring.OwnersOf(r.ID)[0]]
			for range 2 { // a miss, then a hit
				status, v, body := get(t, client, c.url(o)+"/promotions/"+r.ID.String())
				if status != 200 || v != fmt.Sprint(version) || body != string(promotion.AppendJSON(nil, &r)) {
					t.Fatalf("version %d through the cache: %d %s %s", version, status, v, body)
				}
			}
		}
	}
	check(1)
	// Cache writes are asynchronous, and dropped while Redis is slow:
	// wait until a whole pass over the ids is answered from the cache.
	hits := func() float64 {
		return metric(t, c.url("n1"), "promo_cache_hits_total") + metric(t, c.url("n2"), "promo_cache_hits_total")
	}
	localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
		before := hits()
		check(1)
		if got := hits() - before; got < 2*200 {
			return fmt.Errorf("%v of the 400 reads of cached ids hit the cache", got)
		}
		return nil
	})
	// A new version never serves the values cached for the old one.
	c.importVersion(2000, 2)
	c.waitServing(2)
	check(2)
	// Redis down: lookups keep answering, and the bypass is counted.
	rd.Stop()
	check(2)
	if metric(t, c.url("n1"), "promo_cache_bypasses_total")+metric(t, c.url("n2"), "promo_cache_bypasses_total") == 0 {
		t.Fatal("no bypass counted with Redis down")
	}
}

func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// TestRedisSharedByClusters: two clusters (two databases) share a Redis,
// with the same version number and the same ids but different rows; each
// answers its own rows, under keys named by its cluster id.
func TestRedisSharedByClusters(t *testing.T) {
	rd := localsvctest.Redis(t)
	withCache := func(cfg *readnode.Config) {
		cfg.Metrics = metrics.NewSet()
		cc := cache.DefaultConfig(rd.URL)
		cc.Logger, cc.Metrics = cfg.Logger, cfg.Metrics
		var err error
		if cfg.NewCache, err = cache.ForMode(cache.ModeRedis, cc); err != nil {
			t.Fatal(err)
		}
	}
	a := newCluster(t, []string{"n1"}, 1, withCache)
	b := newCluster(t, []string{"n1"}, 1, withCache)
	recsA := a.importVersion(500, 1) // version 1 of each, the same ids,
	recsB := b.importVersion(500, 2) // other prices
	a.waitServing(1)
	b.waitServing(1)
	ctx := context.Background()
	opt, err := redis.ParseURL(rd.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	keysOf := func(id promotion.ID) []string {
		t.Helper()
		keys, err := rdb.Keys(ctx, "*"+id.String()).Result()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(keys)
		return keys
	}
	client := &http.Client{}
	lookup := func(c *cluster, r promotion.Record) {
		t.Helper()
		status, v, body := get(t, client, c.url("n1")+"/promotions/"+r.ID.String())
		if status != 200 || v != "1" || body != string(promotion.AppendJSON(nil, &r)) {
			t.Fatalf("cluster of %s: %d version %s %s, want %s", c.pgURL, status, v, body, promotion.AppendJSON(nil, &r))
		}
	}
	const ids = 20
	for i := range ids {
		if recsA[i].ID != recsB[i].ID || recsA[i].PriceMicros == recsB[i].PriceMicros {
			t.Fatalf("row %d: the clusters should hold the same id with other prices", i)
		}
		// Cluster a answers and caches its row (asked again until cached:
		// a busy Redis makes the cache step aside for a moment).
		localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
			lookup(a, recsA[i])
			if len(keysOf(recsA[i].ID)) == 0 {
				return fmt.Errorf("%s is not cached", recsA[i].ID)
			}
			return nil
		})
		// Cluster b, same version, same id: its own row, a miss then a hit.
		lookup(b, recsB[i])
		lookup(b, recsB[i])
		lookup(a, recsA[i])
	}
	// Each cluster cached its rows under its own id.
	var want []string
	for _, c := range []*cluster{a, b} {
		var id string
		if err := c.db().QueryRow(ctx, "SELECT id FROM cluster_id").Scan(&id); err != nil {
			t.Fatal(err)
		}
		want = append(want, "promo:"+id+":v1:"+recsA[0].ID.String())
	}
	slices.Sort(want)
	localsvctest.SucceedsSoon(t, 30*time.Second, func() error {
		if got := keysOf(recsA[0].ID); !slices.Equal(got, want) {
			lookup(b, recsB[0])
			return fmt.Errorf("keys of %s: %q, want %q", recsA[0].ID, got, want)
		}
		return nil
	})
}
