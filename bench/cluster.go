package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/cache"
	"github.com/promotion-service/promo/devcluster"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// ClusterBenchConfig describes promo bench cluster: a whole cluster on
// this machine (a devcluster: PostgreSQL, broker, Redis, ingest, read
// nodes, proxy), the pull rate of each node, and load tests of one read
// node.
type ClusterBenchConfig struct {
	Rows     int64
	Nodes    int
	Replicas int
	// Load, when its Rate is positive, is run against node n1 with ids it
	// holds, once without and once with the Redis cache, each for uniform
	// and Zipf keys. Target and IDsFile are filled in.
	Load LoadConfig
	// WhileServing, if set, is called once every node serves, with the
	// URL of node n1, the URL of a proxy in front of all nodes and a file
	// of the ids n1 holds, before the load tests (promo bench cluster
	// --wrk runs RunWrk there).
	WhileServing func(node, proxy, ids string) error
	// OutageRate, when positive, runs a load of this many requests per
	// second through the proxy for OutageDuration, stopping node n2 after
	// a third of it and starting it again after two thirds; the report
	// says how many requests failed (the target is none).
	OutageRate     int
	OutageDuration time.Duration
	// ChangeRate, when positive, runs a load of this many requests per
	// second through the proxy for ChangeDuration, then another one for
	// ChangeDuration while a read node joins the ring and is removed
	// again; the report has both, and how long each change took.
	ChangeRate     int
	ChangeDuration time.Duration
	// Paths, when positive, compares the ways to a read node for this long
	// each (paths.go): direct, through the Go client and through the
	// proxy, closed loop; batches of PathsBatch ids (default 100) against
	// single lookups; the client at PathsRate req/s (default 3000) healthy
	// and with node n2 slowed.
	Paths      time.Duration
	PathsBatch int
	PathsRate  int
	// PathsRounds is how many times each comparison is run in turn
	// (default 3): a rate ratio is the median of the rounds', a CPU ratio
	// that of the CPU time over all of them.
	PathsRounds int
	// Freshness, when positive, runs the freshness test instead of the
	// others (freshness.go): with every read node running, the file is
	// imported Freshness+1 times, each timed from its POST to every node
	// serving its version; the first import is the cluster's first.
	Freshness int
	// Out is the directory of the reports.
	Out    string
	Logger *slog.Logger
	// Progress receives a line per step.
	Progress io.Writer
}

// PullReport is the pull of one read node, alone on the machine.
type PullReport struct {
	Node          string  `json:"node"`
	Rows          int64   `json:"rows"`
	Seconds       float64 `json:"seconds"`
	RowsPerSecond float64 `json:"rows_per_second"`
}

// ClusterReport is what promo bench cluster measured.
type ClusterReport struct {
	Rows     int64        `json:"rows"`
	Nodes    int          `json:"nodes"`
	Replicas int          `json:"replicas"`
	Pulls    []PullReport `json:"pulls"`
	Loads    []LoadReport `json:"loads,omitempty"`
	// Outage is the load through the proxy while n2 was down.
	Outage *LoadReport `json:"outage,omitempty"`
	// Paths compares the ways to a read node.
	Paths *PathsReport `json:"paths,omitempty"`
	// Change is the membership change under load.
	Change *ChangeReport `json:"change,omitempty"`
	// Freshness times imports from the POST to every node serving.
	Freshness []FreshnessReport `json:"freshness,omitempty"`
}

// ChangeReport is a read node joining the ring and leaving it again under
// a load through the proxy.
type ChangeReport struct {
	// JoinSeconds runs from the start of the joining node to its ring
	// serving (activated in PostgreSQL), LeaveSeconds from the DELETE to
	// the ring without it serving.
	JoinSeconds  float64 `json:"join_seconds"`
	LeaveSeconds float64 `json:"leave_seconds"`
	// SlotsMoved counts the slot replicas the join made nodes pull.
	SlotsMoved int        `json:"slots_moved"`
	Before     LoadReport `json:"before"`
	During     LoadReport `json:"during"`
}

// RunClusterBench starts a devcluster with its read nodes stopped, imports
// c.Rows rows, starts the read nodes one after the other (so each pull has
// the machine to itself) and runs the load tests.
func RunClusterBench(ctx context.Context, c ClusterBenchConfig) (ClusterReport, error) {
	rep := ClusterReport{Rows: c.Rows, Nodes: c.Nodes, Replicas: c.Replicas}
	if c.Rows <= 0 {
		return rep, fmt.Errorf("bench: rows must be positive, got %d", c.Rows)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.PathsBatch == 0 {
		c.PathsBatch = 100
	}
	if c.PathsRate == 0 {
		c.PathsRate = 3000
	}
	if c.PathsRounds == 0 {
		c.PathsRounds = 3
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	dir, err := os.MkdirTemp("", "promo-bench-cluster-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	cl, err := devcluster.Start(ctx, devcluster.Config{Dir: dir, ImportDir: dir, Nodes: c.Nodes, Replicas: c.Replicas,
		NodePrefix: "n", NodesStopped: true, Ephemeral: true, Logger: c.Logger})
	if err != nil {
		return rep, err
	}
	defer cl.Close(context.Background())
	b := &clusterBench{c: c, cl: cl, e: cl.Endpoints(), csv: filepath.Join(dir, "promotions.csv")}
	if c.Freshness > 0 {
		rep.Freshness, err = b.freshness(ctx)
		return rep, err
	}
	if err := b.importRows(); err != nil {
		return rep, err
	}
	if rep.Pulls, err = b.pullEach(ctx); err != nil {
		return rep, err
	}
	if c.Load.Rate <= 0 && c.WhileServing == nil && c.OutageRate <= 0 && c.ChangeRate <= 0 && c.Paths <= 0 {
		return rep, nil
	}
	if err := waitProxy(ctx, b.e); err != nil {
		return rep, err
	}
	if c.OutageRate > 0 {
		if rep.Outage, err = b.outage(ctx); err != nil {
			return rep, err
		}
	}
	if c.ChangeRate > 0 {
		if rep.Change, err = b.change(ctx); err != nil {
			return rep, err
		}
	}
	ids := filepath.Join(dir, "n1-ids.txt")
	if err := b.writeOwnedIDs(ids, 0); err != nil {
		return rep, err
	}
	if c.WhileServing != nil {
		if err := c.WhileServing(b.e.Nodes[0].URL, b.e.Proxy, ids); err != nil {
			return rep, err
		}
	}
	if c.Paths > 0 {
		if rep.Paths, err = b.paths(ctx, ids); err != nil {
			return rep, err
		}
	}
	if c.Load.Rate > 0 {
		rep.Loads, err = b.nodeLoads(ctx, ids)
	}
	return rep, err
}

// clusterBench is one run of RunClusterBench on its cluster.
type clusterBench struct {
	c   ClusterBenchConfig
	cl  *devcluster.Cluster
	e   devcluster.Endpoints
	csv string // the generated file, in the cluster's import directory
}

// importRows generates c.Rows rows and imports them; the read nodes,
// stopped, pull nothing yet.
func (b *clusterBench) importRows() error {
	if _, err := generateFile(b.csv, gen.DefaultConfig(b.c.Rows)); err != nil {
		return err
	}
	fmt.Fprintf(b.c.Progress, "importing %d rows into PostgreSQL\n", b.c.Rows)
	return importFile(context.Background(), b.e.Ingest, filepath.Base(b.csv))
}

// pullEach starts the read nodes one at a time, each once the one before
// has pulled its slots, and returns what each pull measured.
func (b *clusterBench) pullEach(ctx context.Context) ([]PullReport, error) {
	var pulls []PullReport
	for i, m := range b.e.Nodes {
		start := time.Now()
		if err := b.cl.StartNode(ctx, i); err != nil {
			return pulls, err
		}
		if err := waitPrepared(ctx, m.URL); err != nil {
			return pulls, err
		}
		rows := scrape(m.URL, "promo_readnode_pull_rows_total")
		rate := scrape(m.URL, "promo_readnode_pull_rows_per_second")
		pr := PullReport{Node: m.Name, Rows: int64(rows), RowsPerSecond: rate, Seconds: rows / max(rate, 1)}
		pulls = append(pulls, pr)
		fmt.Fprintf(b.c.Progress, "%s pulled %d rows in %.2f s (%.0f rows/s), %v after its start\n", m.Name, pr.Rows, pr.Seconds, pr.RowsPerSecond, time.Since(start).Round(time.Millisecond))
	}
	return pulls, waitReady(ctx, b.e.Nodes)
}

// outage runs a load through the proxy while node n2 is stopped and
// started again.
func (b *clusterBench) outage(ctx context.Context) (*LoadReport, error) {
	c := b.c
	lc := DefaultLoadConfig()
	lc.Target, lc.IDsFile, lc.Rate, lc.Duration, lc.Name = b.e.Proxy, b.csv, c.OutageRate, c.OutageDuration, "proxy-outage"
	if c.Out != "" {
		lc.Out = filepath.Join(c.Out, "load-proxy-outage")
	}
	fmt.Fprintf(c.Progress, "outage: %d req/s through the proxy for %v\n", c.OutageRate, c.OutageDuration)
	bounced := make(chan error, 1)
	go func() { bounced <- b.bounceNode(ctx, 1, c.OutageDuration/3) }()
	lr, err := RunLoad(ctx, lc)
	if berr := <-bounced; err == nil {
		err = berr
	}
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, b.e.Nodes); err != nil {
		return nil, err
	}
	return &lr, waitProxy(ctx, b.e)
}

// change runs a load through the proxy, then another while a node joins
// the ring and leaves it again.
func (b *clusterBench) change(ctx context.Context) (*ChangeReport, error) {
	c := b.c
	lc := DefaultLoadConfig()
	lc.Target, lc.IDsFile, lc.Rate, lc.Duration = b.e.Proxy, b.csv, c.ChangeRate, c.ChangeDuration
	run := func(name string) (LoadReport, error) {
		lc.Name = name
		if c.Out != "" {
			lc.Out = filepath.Join(c.Out, "load-"+name)
		}
		fmt.Fprintf(c.Progress, "change: %s, %d req/s through the proxy for %v\n", name, lc.Rate, lc.Duration)
		return RunLoad(ctx, lc)
	}
	rep := &ChangeReport{}
	var err error
	if rep.Before, err = run("proxy-before-change"); err != nil {
		return nil, err
	}
	changed := make(chan error, 1)
	go func() { changed <- b.joinAndLeave(ctx, rep, c.ChangeDuration) }()
	rep.During, err = run("proxy-during-change")
	if cerr := <-changed; err == nil {
		err = cerr
	}
	return rep, err
}

// joinAndLeave adds a read node after a fifth of d, waits for its ring to
// serve, removes it and waits again, all within the rest of d.
func (b *clusterBench) joinAndLeave(ctx context.Context, rep *ChangeReport, d time.Duration) error {
	if err := sleep(ctx, d/5); err != nil {
		return err
	}
	deadline := time.Now().Add(d * 4 / 5)
	before, err := getCluster(b.e.Ingest)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("n%d", len(b.e.Nodes)+1)
	fmt.Fprintf(b.c.Progress, "change: %s joins\n", name)
	start := time.Now()
	if _, err := b.cl.AddNode(ctx, name); err != nil {
		return err
	}
	joined, err := waitRing(ctx, b.e.Ingest, before.RingVersion+1, deadline)
	if err != nil {
		return err
	}
	rep.JoinSeconds = time.Since(start).Seconds()
	rep.SlotsMoved = movedReplicas(before, joined)
	fmt.Fprintf(b.c.Progress, "change: ring %d serves after %.2f s (%d slot replicas moved); %s leaves\n",
		joined.RingVersion, rep.JoinSeconds, rep.SlotsMoved, name)
	start = time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, b.e.Ingest+"/cluster/nodes/"+name, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("bench: DELETE /cluster/nodes/%s: status %d", name, resp.StatusCode)
	}
	left, err := waitRing(ctx, b.e.Ingest, joined.RingVersion+1, deadline)
	if err != nil {
		return err
	}
	rep.LeaveSeconds = time.Since(start).Seconds()
	fmt.Fprintf(b.c.Progress, "change: ring %d serves after %.2f s\n", left.RingVersion, rep.LeaveSeconds)
	return nil
}

func getCluster(base string) (ring.Cluster, error) {
	var c ring.Cluster
	resp, err := http.Get(base + "/cluster")
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("bench: GET %s/cluster: status %d", base, resp.StatusCode)
	}
	return c, json.NewDecoder(resp.Body).Decode(&c)
}

// waitRing waits until base serves ring version v, stable, until deadline.
func waitRing(ctx context.Context, base string, v uint64, deadline time.Time) (ring.Cluster, error) {
	for {
		c, err := getCluster(base)
		if err == nil && c.RingVersion == v && c.State == ring.StateStable {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return c, fmt.Errorf("bench: ring %d did not serve within the load (raise --change-duration): %v", v, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// movedReplicas counts the (slot, node) replicas of to that from lacked.
func movedReplicas(from, to ring.Cluster) int {
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

// bounceNode stops node i after pause and starts it again, on its data,
// after another pause.
func (b *clusterBench) bounceNode(ctx context.Context, i int, pause time.Duration) error {
	if err := sleep(ctx, pause); err != nil {
		return err
	}
	fmt.Fprintf(b.c.Progress, "outage: stopping %s\n", b.e.Nodes[i].Name)
	if err := b.cl.StopNode(ctx, i); err != nil {
		return err
	}
	if err := sleep(ctx, pause); err != nil {
		return err
	}
	fmt.Fprintf(b.c.Progress, "outage: starting %s again\n", b.e.Nodes[i].Name)
	return b.cl.StartNode(ctx, i)
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeOwnedIDs writes the ids of the generated file that node i holds.
func (b *clusterBench) writeOwnedIDs(out string, i int) error {
	assign, err := ring.Assign(ring.Names(b.e.Nodes), b.c.Replicas, ring.DefaultSlots, nil)
	if err != nil {
		return err
	}
	return ownedIDs(b.csv, out, assign, assign.Index(b.e.Nodes[i].Name))
}

// nodeLoads runs c.Load against node n1 with ids it holds: without a
// cache for uniform and Zipf keys (and the uniform one again through the
// proxy, to see what the proxy adds), then with the Redis cache.
func (b *clusterBench) nodeLoads(ctx context.Context, ids string) ([]LoadReport, error) {
	var reps []LoadReport
	n1 := b.e.Nodes[0]
	for _, mode := range []string{cache.ModeOff, cache.ModeRedis} {
		if mode == cache.ModeRedis {
			// n1 again, with the cache, on a fresh store.
			if err := b.cl.StopNode(ctx, 0); err != nil {
				return reps, err
			}
			if err := b.cl.StartNodeWith(ctx, 0, devcluster.NodeOptions{Cache: mode, Store: n1.Name + "-" + mode}); err != nil {
				return reps, err
			}
			if err := waitReady(ctx, b.e.Nodes[:1]); err != nil {
				return reps, err
			}
		}
		for _, zipf := range []float64{0, 1.1} {
			keys := "uniform"
			if zipf > 0 {
				keys = "zipf"
			}
			lr, err := b.load(ctx, n1.URL, ids, zipf, fmt.Sprintf("readnode-cache-%s-%s", mode, keys))
			if err != nil {
				return reps, err
			}
			reps = append(reps, lr)
			if mode == cache.ModeOff && zipf == 0 {
				// The same load through the proxy: what it adds.
				if lr, err = b.load(ctx, b.e.Proxy, ids, zipf, "proxy-to-n1-uniform"); err != nil {
					return reps, err
				}
				reps = append(reps, lr)
			}
		}
	}
	return reps, nil
}

// load runs c.Load, named name, against target with the ids of file ids.
func (b *clusterBench) load(ctx context.Context, target, ids string, zipf float64, name string) (LoadReport, error) {
	lc := b.c.Load
	lc.Target, lc.IDsFile, lc.Zipf, lc.Name = target, ids, zipf, name
	if b.c.Out != "" {
		lc.Out = filepath.Join(b.c.Out, "load-"+name)
	}
	fmt.Fprintf(b.c.Progress, "load: %s at %d req/s for %v\n", lc.Name, lc.Rate, lc.Duration)
	return RunLoad(ctx, lc)
}

// waitPrepared waits for a node's first pull to be measured (its rate is
// the last thing a pull records).
func waitPrepared(ctx context.Context, base string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for scrape(base, "promo_readnode_pull_rows_per_second") <= 0 {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench: %s prepared nothing", base)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func waitReady(ctx context.Context, nodes []ring.Node) error {
	deadline := time.Now().Add(2 * time.Minute)
	for _, n := range nodes {
		for {
			resp, err := http.Get(n.URL + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("bench: %s is not ready", n.Name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// waitProxy waits until the proxy in e is ready and sees every read node
// up: it started before the nodes and marked them down.
func waitProxy(ctx context.Context, e devcluster.Endpoints) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var ready struct {
			Nodes map[string]bool `json:"nodes"`
		}
		resp, err := http.Get(e.Proxy + "/readyz")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&ready)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		for _, n := range e.Nodes {
			if err == nil && !ready.Nodes[n.Name] {
				err = fmt.Errorf("%s is down", n.Name)
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench: the proxy is not ready: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scrape returns the value of an unlabelled metric of a node, or 0.
func scrape(base, name string) float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// ownedIDs writes the ids of csv whose slot node holds.
func ownedIDs(csv, out string, a *ring.Assignment, node int) error {
	in, err := os.Open(csv)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) < promotion.IDLen {
			continue
		}
		id, err := promotion.ParseID(line[:promotion.IDLen])
		if err == nil && a.Holds(node, ring.Slot(id, a.Slots())) {
			w.Write(line[:promotion.IDLen])
			w.WriteByte('\n')
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
