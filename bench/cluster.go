package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/ingestsvc"
	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/proxy"
	"github.com/promotion-service/promo/readnode"
	"github.com/promotion-service/promo/ring"
)

// ClusterBenchConfig describes promo bench cluster: a whole cluster on
// this machine (PostgreSQL, broker, Redis, ingest, read nodes), the pull
// rate of each node, and load tests of one read node.
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
	// of the ids n1 holds, before the load tests (the command runs wrk
	// there).
	WhileServing func(node, proxy, ids string) error
	// OutageRate, when positive, runs a load of this many requests per
	// second through the proxy for OutageDuration, stopping node n2 after
	// a third of it and starting it again after two thirds; the report
	// says how many requests failed (the target is none).
	OutageRate     int
	OutageDuration time.Duration
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
}

// RunClusterBench starts the cluster, imports c.Rows rows, starts the read
// nodes one after the other (so each pull has the machine to itself) and
// runs the load tests.
func RunClusterBench(ctx context.Context, c ClusterBenchConfig) (ClusterReport, error) {
	rep := ClusterReport{Rows: c.Rows, Nodes: c.Nodes, Replicas: c.Replicas}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	dir, err := os.MkdirTemp("", "promo-bench-cluster-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return rep, err
	}
	pg, err := localsvc.StartPostgres(ctx, localsvc.PostgresConfig{Dir: filepath.Join(dir, "pg")})
	if err != nil {
		return rep, err
	}
	defer pg.Stop()
	k, err := localsvc.StartKafka(0, events.Topic)
	if err != nil {
		return rep, err
	}
	defer k.Stop()
	rd, err := localsvc.StartRedis(ctx, localsvc.RedisConfig{Dir: dir})
	if err != nil {
		return rep, err
	}
	defer rd.Stop()
	ic := ingestsvc.DefaultConfig()
	ic.Addr, ic.PostgresURL, ic.KafkaBrokers, ic.ImportDir, ic.Logger = "127.0.0.1:0", pg.URL, []string{k.Addr()}, dir, c.Logger
	ing, err := ingestsvc.Start(ctx, ic)
	if err != nil {
		return rep, err
	}
	defer ing.Close(context.Background())
	csv := filepath.Join(dir, "promotions.csv")
	if _, err := generateFile(csv, gen.DefaultConfig(c.Rows)); err != nil {
		return rep, err
	}
	fmt.Fprintf(c.Progress, "importing %d rows into PostgreSQL\n", c.Rows)
	if err := importFile("http://"+ing.Addr(), "promotions.csv"); err != nil {
		return rep, err
	}

	var members []ring.Node
	for i := range c.Nodes {
		port, err := localsvc.FreePort()
		if err != nil {
			return rep, err
		}
		members = append(members, ring.Node{Name: fmt.Sprintf("n%d", i+1), URL: fmt.Sprintf("http://127.0.0.1:%d", port)})
	}
	startNode := func(m ring.Node, cache string) (*readnode.Node, error) {
		cfg := readnode.DefaultConfig()
		cfg.Name, cfg.Addr = m.Name, strings.TrimPrefix(m.URL, "http://")
		cfg.DataDir = filepath.Join(dir, m.Name+"-"+cache)
		cfg.PostgresURL, cfg.KafkaBrokers, cfg.Nodes, cfg.Replicas = pg.URL, []string{k.Addr()}, members, c.Replicas
		cfg.Cache, cfg.RedisURL, cfg.Logger = cache, rd.URL, c.Logger
		return readnode.Start(ctx, cfg)
	}
	var running []*readnode.Node
	defer func() {
		for _, n := range running {
			n.Close(context.Background())
		}
	}()
	for _, m := range members {
		start := time.Now()
		n, err := startNode(m, readnode.CacheOff)
		if err != nil {
			return rep, err
		}
		running = append(running, n)
		if err := waitPrepared(ctx, m.URL); err != nil {
			return rep, err
		}
		rows := scrape(m.URL, "promo_readnode_pull_rows_total")
		rate := scrape(m.URL, "promo_readnode_pull_rows_per_second")
		pr := PullReport{Node: m.Name, Rows: int64(rows), RowsPerSecond: rate, Seconds: rows / max(rate, 1)}
		rep.Pulls = append(rep.Pulls, pr)
		fmt.Fprintf(c.Progress, "%s pulled %d rows in %.2f s (%.0f rows/s), %v after its start\n", m.Name, pr.Rows, pr.Seconds, pr.RowsPerSecond, time.Since(start).Round(time.Millisecond))
	}
	if err := waitReady(ctx, members); err != nil {
		return rep, err
	}
	if c.Load.Rate <= 0 && c.WhileServing == nil && c.OutageRate <= 0 {
		return rep, nil
	}
	pc := proxy.DefaultConfig()
	pc.Addr, pc.Nodes, pc.Replicas, pc.Logger = "127.0.0.1:0", members, c.Replicas, c.Logger
	pc.HealthInterval = 500 * time.Millisecond
	px, err := proxy.Start(ctx, pc)
	if err != nil {
		return rep, err
	}
	defer px.Close(context.Background())
	proxyURL := "http://" + px.Addr()
	if c.OutageRate > 0 {
		lc := DefaultLoadConfig()
		lc.Target, lc.IDsFile, lc.Rate, lc.Duration, lc.Name = proxyURL, csv, c.OutageRate, c.OutageDuration, "proxy-outage"
		if c.Out != "" {
			lc.Out = filepath.Join(c.Out, "load-proxy-outage")
		}
		done := make(chan struct{})
		var outageErr error
		go func() {
			defer close(done)
			time.Sleep(c.OutageDuration / 3)
			fmt.Fprintln(c.Progress, "outage: stopping n2")
			running[1].Close(context.Background())
			time.Sleep(c.OutageDuration / 3)
			fmt.Fprintln(c.Progress, "outage: starting n2 again")
			running[1], outageErr = startNode(members[1], readnode.CacheOff)
		}()
		fmt.Fprintf(c.Progress, "outage: %d req/s through the proxy for %v\n", c.OutageRate, c.OutageDuration)
		lr, err := RunLoad(ctx, lc)
		<-done
		if err != nil {
			return rep, err
		}
		if outageErr != nil {
			return rep, outageErr
		}
		rep.Outage = &lr
		if err := waitReady(ctx, members); err != nil {
			return rep, err
		}
	}
	// Ids that n1 holds, for load tests on it alone.
	assign, err := ring.Assign(ring.Names(members), c.Replicas, ring.DefaultSlots, nil)
	if err != nil {
		return rep, err
	}
	ids := filepath.Join(dir, "n1-ids.txt")
	if err := ownedIDs(csv, ids, assign, assign.Index("n1")); err != nil {
		return rep, err
	}
	if c.WhileServing != nil {
		if err := c.WhileServing(members[0].URL, proxyURL, ids); err != nil {
			return rep, err
		}
	}
	if c.Load.Rate <= 0 {
		return rep, nil
	}
	for _, cache := range []string{readnode.CacheOff, readnode.CacheRedis} {
		if cache == readnode.CacheRedis {
			// n1 again, with the cache, on a fresh store.
			running[0].Close(context.Background())
			if running[0], err = startNode(members[0], cache); err != nil {
				return rep, err
			}
			if err := waitReady(ctx, members[:1]); err != nil {
				return rep, err
			}
		}
		for _, zipf := range []float64{0, 1.1} {
			lc := c.Load
			lc.Target, lc.IDsFile, lc.Zipf = members[0].URL, ids, zipf
			keys := "uniform"
			if zipf > 0 {
				keys = "zipf"
			}
			lc.Name = fmt.Sprintf("readnode-cache-%s-%s", cache, keys)
			if c.Out != "" {
				lc.Out = filepath.Join(c.Out, "load-"+lc.Name)
			}
			fmt.Fprintf(c.Progress, "load: %s at %d req/s for %v\n", lc.Name, lc.Rate, lc.Duration)
			lr, err := RunLoad(ctx, lc)
			if err != nil {
				return rep, err
			}
			rep.Loads = append(rep.Loads, lr)
			if cache == readnode.CacheOff && zipf == 0 {
				// The same load through the proxy: what it adds.
				lc.Target, lc.Name = proxyURL, "proxy-to-n1-uniform"
				if c.Out != "" {
					lc.Out = filepath.Join(c.Out, "load-"+lc.Name)
				}
				fmt.Fprintf(c.Progress, "load: %s at %d req/s for %v\n", lc.Name, lc.Rate, lc.Duration)
				pr, err := RunLoad(ctx, lc)
				if err != nil {
					return rep, err
				}
				rep.Loads = append(rep.Loads, pr)
			}
		}
	}
	return rep, nil
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
