package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/promotion-service/promo/bench/gen"
)

// FreshnessReport is one import timed from its POST to every read node
// serving the version it made.
type FreshnessReport struct {
	Round int `json:"round"`
	// First is the import of the cluster's first version (the read nodes
	// held nothing); the others replace a serving version.
	First   bool   `json:"first"`
	Version uint64 `json:"version"`
	// CommitSeconds runs from the POST to its answer (?wait=true: parsed,
	// copied, committed with its outbox row).
	CommitSeconds float64 `json:"commit_seconds"`
	// DurableSeconds runs from the POST to the version's commit in
	// PostgreSQL (its committed_at): from then on read nodes may pull it.
	// The POST answers later, after retention dropped the oldest version.
	DurableSeconds float64 `json:"durable_seconds"`
	// FirstServingSeconds and AllServingSeconds run from the POST to the
	// first read node, and to the last, answering with the version.
	FirstServingSeconds float64 `json:"first_serving_seconds"`
	AllServingSeconds   float64 `json:"all_serving_seconds"`
	// BenchCPUSeconds is the CPU time of the bench's process (ingest, the
	// read nodes, the proxy, the broker) during the round, PostgresCPUSeconds
	// that of PostgreSQL's processes: what the round cost, which the other
	// loads of a shared machine disturb much less than its wall time.
	BenchCPUSeconds    float64 `json:"bench_cpu_seconds"`
	PostgresCPUSeconds float64 `json:"postgres_cpu_seconds"`
	// CommitCPUSeconds are the same until the POST answered.
	CommitBenchCPUSeconds    float64 `json:"commit_bench_cpu_seconds"`
	CommitPostgresCPUSeconds float64 `json:"commit_postgres_cpu_seconds"`
	// LoadAverage is the machine's 1-minute load average at the start of
	// the round (0 where unknown): other work on the 2 cores slows it.
	LoadAverage float64 `json:"load_average"`
	// Nodes has each node's time to serving and its pull's own length.
	Nodes []NodeFreshness `json:"nodes"`
}

// NodeFreshness is one read node in a FreshnessReport.
type NodeFreshness struct {
	Node           string  `json:"node"`
	ServingSeconds float64 `json:"serving_seconds"`
	// PullSeconds is the node's own measure of its pull: query, build and
	// ingest of its slots, from the start of the pull to prepared.
	PullSeconds float64 `json:"pull_seconds"`
	PullRows    int64   `json:"pull_rows"`
}

// freshness imports the generated file c.Freshness+1 times into a
// cluster whose read nodes run, and times each import from its POST to
// every node serving its version. The first round is the cluster's first
// version.
func (b *clusterBench) freshness(ctx context.Context) ([]FreshnessReport, error) {
	if _, err := generateFile(b.csv, gen.DefaultConfig(b.c.Rows)); err != nil {
		return nil, err
	}
	for i := range b.e.Nodes {
		if err := b.cl.StartNode(ctx, i); err != nil {
			return nil, err
		}
	}
	var reps []FreshnessReport
	var version uint64
	for round := range b.c.Freshness + 1 {
		version++
		rep, err := b.freshRound(ctx, filepath.Base(b.csv), version)
		if err != nil {
			return reps, err
		}
		rep.Round, rep.First = round, round == 0
		reps = append(reps, rep)
		fmt.Fprintf(b.c.Progress, "freshness round %d (version %d): durable %.2f s, POST answered %.2f s, first node serving %.2f s, all %.2f s; CPU %.2f s bench, %.2f s PostgreSQL (until committed %.2f s, %.2f s)\n",
			round, version, rep.DurableSeconds, rep.CommitSeconds, rep.FirstServingSeconds, rep.AllServingSeconds, rep.BenchCPUSeconds, rep.PostgresCPUSeconds,
			rep.CommitBenchCPUSeconds, rep.CommitPostgresCPUSeconds)
	}
	return reps, nil
}

// freshnessTimeout bounds one round: a 2M-row file serves in seconds.
const freshnessTimeout = 2 * time.Minute

// freshRound imports file, which becomes version v, and waits for every
// node to serve it.
func (b *clusterBench) freshRound(ctx context.Context, file string, v uint64) (FreshnessReport, error) {
	rep := FreshnessReport{Version: v, LoadAverage: loadAverage()}
	before := make([]float64, len(b.e.Nodes))
	for i, m := range b.e.Nodes {
		before[i] = scrape(m.URL, "promo_readnode_pull_rows_total")
	}
	ctx, cancel := context.WithTimeout(ctx, freshnessTimeout)
	defer cancel()
	pg := b.cl.Postgres().Pid()
	cpu0, pgCPU0 := processCPU(), serverCPU(pg)
	start := time.Now()
	committed := make(chan error, 1)
	go func() {
		err := importFile(ctx, b.e.Ingest, file)
		rep.CommitSeconds = time.Since(start).Seconds()
		rep.CommitBenchCPUSeconds, rep.CommitPostgresCPUSeconds = (processCPU() - cpu0).Seconds(), (serverCPU(pg) - pgCPU0).Seconds()
		committed <- err
	}()
	serving := make([]float64, len(b.e.Nodes))
	left := len(serving)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for left > 0 {
		select {
		case <-ctx.Done():
			return rep, fmt.Errorf("bench: version %d did not serve on every node within %v", v, freshnessTimeout)
		case err := <-committed:
			if err != nil {
				return rep, err
			}
			committed = nil
		case <-tick.C:
		}
		for i, m := range b.e.Nodes {
			if serving[i] == 0 && currentVersion(m.URL) >= v {
				serving[i] = time.Since(start).Seconds()
				left--
			}
		}
	}
	if committed != nil {
		if err := <-committed; err != nil {
			return rep, err
		}
	}
	rep.FirstServingSeconds, rep.AllServingSeconds = slices.Min(serving), slices.Max(serving)
	if at, err := committedAt(b.e.Ingest, v); err == nil {
		rep.DurableSeconds = at.Sub(start).Seconds()
	}
	rep.BenchCPUSeconds, rep.PostgresCPUSeconds = (processCPU() - cpu0).Seconds(), (serverCPU(pg) - pgCPU0).Seconds()
	for i, m := range b.e.Nodes {
		rows := scrape(m.URL, "promo_readnode_pull_rows_total") - before[i]
		rate := scrape(m.URL, "promo_readnode_pull_rows_per_second")
		rep.Nodes = append(rep.Nodes, NodeFreshness{Node: m.Name, ServingSeconds: serving[i],
			PullSeconds: rows / max(rate, 1), PullRows: int64(rows)})
	}
	return rep, nil
}

// committedAt returns when version v committed, as ingest lists it.
func committedAt(ingest string, v uint64) (time.Time, error) {
	resp, err := http.Get(ingest + "/datasets")
	if err != nil {
		return time.Time{}, err
	}
	defer resp.Body.Close()
	var list struct {
		Datasets []struct {
			Version     uint64     `json:"version"`
			CommittedAt *time.Time `json:"committed_at"`
		} `json:"datasets"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return time.Time{}, err
	}
	for _, d := range list.Datasets {
		if d.Version == v && d.CommittedAt != nil {
			return *d.CommittedAt, nil
		}
	}
	return time.Time{}, fmt.Errorf("bench: version %d is not listed committed", v)
}

// currentVersion returns the version a read node serves, or 0.
func currentVersion(base string) uint64 {
	resp, err := http.Get(base + "/datasets/current")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var cur struct {
		Version uint64 `json:"version"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&cur) != nil {
		return 0
	}
	return cur.Version
}
