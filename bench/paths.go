package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/client"
)

// PathsReport compares the three ways to a read node under the same load
// (promo bench cluster --paths): a fasthttp client straight to the owning
// node, the Go client library routing by the ring, and the proxy; then
// batches against single lookups, and the client's hedging with one node
// made slow.
type PathsReport struct {
	Loads []LoadReport `json:"loads"`
	// ClientToDirect and ClientToProxy are the client's req/s over those
	// of a fasthttp client to each id's primary owner and of the proxy,
	// closed loop, same ids and workers: the median of the rounds' ratios.
	ClientToDirect float64 `json:"client_to_direct"`
	ClientToProxy  float64 `json:"client_to_proxy"`
	// The same ratios from the CPU time used per lookup (by the whole
	// process: generator, client, proxy and nodes), which the other loads
	// of a shared machine disturb much less than the rates: the rate
	// ratio on a machine the bench has to itself.
	ClientToDirectByCPU float64 `json:"client_to_direct_by_cpu"`
	ClientToProxyByCPU  float64 `json:"client_to_proxy_by_cpu"`
	// BatchToSingle is the ids/s of batches of Batch ids over the ids/s of
	// single lookups, both straight to node n1 (the median of the
	// rounds');
	// BatchToSingleByCPU is the same from the CPU time per id.
	Batch              int     `json:"batch"`
	BatchToSingle      float64 `json:"batch_to_single"`
	BatchToSingleByCPU float64 `json:"batch_to_single_by_cpu"`
	// SlowP99ToHealthy is the client's p99 with node n2 answering
	// SlowBy later over its p99 with every node healthy, at the same
	// constant rate (the median of the rounds'); SlowHedges are the
	// client's hedges in the slow runs.
	SlowBy           string  `json:"slow_by"`
	SlowP99ToHealthy float64 `json:"slow_p99_to_healthy"`
	SlowRequests     uint64  `json:"slow_requests"`
	SlowHedges       uint64  `json:"slow_hedges"`
	SlowHedgeWins    uint64  `json:"slow_hedge_wins"`
}

// slowBy is how much later the slowed node answers.
const slowBy = 50 * time.Millisecond

// paths runs the comparison, each run for c.Paths; ids is the file of the
// ids node n1 holds.
func (b *clusterBench) paths(ctx context.Context, ids string) (*PathsReport, error) {
	c := b.c
	rep := &PathsReport{Batch: c.PathsBatch, SlowBy: slowBy.String()}
	n1 := b.e.Nodes[0].URL
	run := func(lc LoadConfig) (LoadReport, error) {
		if c.Out != "" {
			lc.Out = filepath.Join(c.Out, "load-"+lc.Name)
		}
		fmt.Fprintf(c.Progress, "paths: %s via %s, batch %d, at %s for %v\n", lc.Name, orHTTP(lc.Via), lc.Batch, rateName(lc.Rate), lc.Duration)
		lr, err := RunLoad(ctx, lc)
		if err != nil {
			return lr, fmt.Errorf("bench: %s: %w", lc.Name, err)
		}
		rep.Loads = append(rep.Loads, lr)
		return lr, nil
	}
	base := DefaultLoadConfig()
	base.IDsFile, base.Duration, base.Rate, base.Connections = ids, c.Paths, 0, c.Load.Connections
	if base.Connections == 0 {
		base.Connections = DefaultLoadConfig().Connections
	}
	// Warm the nodes' block caches and every path's connections.
	warm := base
	warm.Target, warm.IDsFile, warm.Duration, warm.Name = b.e.Proxy, b.csv, min(c.Paths, 2*time.Second), "warm-up"
	if _, err := RunLoad(ctx, warm); err != nil {
		return rep, err
	}
	// Rounds of the three paths over every id of the dataset, one after
	// the other, so that they meet the same state of the shared machine;
	// a rate ratio is the median of the rounds' ratios, a CPU ratio that of
	// the CPU time over all of them.
	var toOwner, toProxy []float64
	var cpu [3]struct{ us, n float64 } // owner, client, proxy
	add := func(k int, r LoadReport) {
		cpu[k].us += r.CPUPerRequestUS * float64(r.Requests)
		cpu[k].n += float64(r.Requests)
	}
	per := func(k int) float64 { return cpu[k].us / cpu[k].n }
	for round := range c.PathsRounds {
		lc := base
		lc.Target, lc.IDsFile, lc.Via, lc.Name = n1, b.csv, ViaOwner, fmt.Sprintf("path-owner-%d", round+1)
		o, err := run(lc)
		if err != nil {
			return rep, err
		}
		lc.Via, lc.Name = ViaClient, fmt.Sprintf("path-client-%d", round+1)
		cl, err := run(lc)
		if err != nil {
			return rep, err
		}
		lc.Via, lc.Target, lc.Name = ViaHTTP, b.e.Proxy, fmt.Sprintf("path-proxy-%d", round+1)
		p, err := run(lc)
		if err != nil {
			return rep, err
		}
		toOwner = append(toOwner, ratio(cl.Throughput, o.Throughput))
		toProxy = append(toProxy, ratio(cl.Throughput, p.Throughput))
		add(0, o)
		add(1, cl)
		add(2, p)
	}
	rep.ClientToDirect, rep.ClientToProxy = median(toOwner), median(toProxy)
	rep.ClientToDirectByCPU = ratio(per(0), per(1))
	rep.ClientToProxyByCPU = ratio(per(2), per(1))

	// Single lookups and batches straight to node n1, of ids it holds, in
	// turns.
	var batchToSingle []float64
	cpu = [3]struct{ us, n float64 }{}
	for round := range c.PathsRounds {
		lc := base
		lc.Target, lc.Name = n1, fmt.Sprintf("path-n1-single-%d", round+1)
		s, err := run(lc)
		if err != nil {
			return rep, err
		}
		lc.Batch, lc.Name = c.PathsBatch, fmt.Sprintf("path-n1-batch%d-%d", c.PathsBatch, round+1)
		bt, err := run(lc)
		if err != nil {
			return rep, err
		}
		batchToSingle = append(batchToSingle, ratio(bt.IDsPerSecond, s.IDsPerSecond))
		add(0, s)
		bt.Requests *= uint64(c.PathsBatch) // per id
		bt.CPUPerRequestUS /= float64(c.PathsBatch)
		add(1, bt)
	}
	rep.BatchToSingle = median(batchToSingle)
	rep.BatchToSingleByCPU = ratio(per(0), per(1))

	// The client at a constant rate over every id of the dataset, healthy,
	// then with node n2 answering slowBy late, in turns.
	slow, err := url.Parse(b.e.Nodes[1].URL)
	if err != nil {
		return rep, err
	}
	var slowToHealthy []float64
	for round := range c.PathsRounds {
		for _, slowed := range []bool{false, true} {
			cfg := client.Config{Seeds: []string{n1}, Logger: slog.New(slog.DiscardHandler)}
			name := fmt.Sprintf("path-client-healthy-%d-%d", c.PathsRate, round+1)
			if slowed {
				cfg.Dial = slowDial(slow.Host, slowBy)
				name = fmt.Sprintf("path-client-n2-slow-%d-%d", c.PathsRate, round+1)
			}
			cl, err := client.New(ctx, cfg)
			if err != nil {
				return rep, err
			}
			lc := base
			lc.Target, lc.IDsFile, lc.Via, lc.Client, lc.Rate, lc.Name = n1, b.csv, ViaClient, cl, c.PathsRate, name
			lr, err := run(lc)
			st := cl.Stats()
			cl.Close()
			if err != nil {
				return rep, err
			}
			if slowed {
				slowToHealthy = append(slowToHealthy, ratio(lr.Latency.P99, rep.Loads[len(rep.Loads)-2].Latency.P99))
				rep.SlowRequests += st.Requests
				rep.SlowHedges += st.Hedge.Hedges
				rep.SlowHedgeWins += st.Hedge.Wins
			}
		}
	}
	rep.SlowP99ToHealthy = median(slowToHealthy)
	return rep, nil
}

// median returns the median of xs (the mean of the middle two for an even
// count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else if n > 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return 0
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return float64(int(a/b*1000+0.5)) / 1000
}

func orHTTP(via string) string {
	if via == "" {
		return ViaHTTP
	}
	return via
}

func rateName(rate int) string {
	if rate == 0 {
		return "full speed"
	}
	return fmt.Sprintf("%d req/s", rate)
}

// slowDial dials like fasthttp, and delays every answer on connections to
// addr by d.
func slowDial(addr string, d time.Duration) func(string) (net.Conn, error) {
	return func(a string) (net.Conn, error) {
		conn, err := fasthttp.Dial(a)
		if err != nil || a != addr {
			return conn, err
		}
		return &slowConn{Conn: conn, delay: d}, nil
	}
}

// slowConn delays the first read after each write (the answer to a
// request) until delay after the write. The delay honours the read
// deadline, like a slow network would: a reader waiting for the first
// byte until a hedge delay gets a timeout then, and may read on.
type slowConn struct {
	net.Conn
	delay    time.Duration
	due      time.Time
	deadline time.Time // read deadline
}

func (c *slowConn) Write(b []byte) (int, error) {
	if c.due.IsZero() {
		c.due = time.Now().Add(c.delay)
	}
	return c.Conn.Write(b)
}

func (c *slowConn) SetReadDeadline(t time.Time) error {
	c.deadline = t
	return c.Conn.SetReadDeadline(t)
}

func (c *slowConn) SetDeadline(t time.Time) error {
	c.deadline = t
	return c.Conn.SetDeadline(t)
}

func (c *slowConn) Read(b []byte) (int, error) {
	if !c.due.IsZero() {
		if !c.deadline.IsZero() && c.deadline.Before(c.due) {
			time.Sleep(time.Until(c.deadline))
			return 0, os.ErrDeadlineExceeded
		}
		time.Sleep(time.Until(c.due))
		c.due = time.Time{}
	}
	return c.Conn.Read(b)
}
