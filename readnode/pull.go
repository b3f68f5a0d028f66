package readnode

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/pebblestore"
	"github.com/promotion-service/promo/pgstore"
	"github.com/promotion-service/promo/promotion"
	"github.com/valyala/fasthttp"
)

// pull builds version v of the slots this node holds: it streams them from
// PostgreSQL partition by partition (only the tables holding its slots),
// straight into the store's sorted SSTables, checks every slot's row count
// and checksum against the ones ingest recorded, and prepares the version
// without serving it. A pull that fails or dies leaves nothing: the store
// drops an unfinished version.
func (n *Node) pull(ctx context.Context, v pgstore.Version) error {
	if v.Slots != n.cfg.Slots {
		return fmt.Errorf("version %d has %d slots, this cluster %d", v.Version, v.Slots, n.cfg.Slots)
	}
	start := time.Now()
	per := v.Slots / v.Partitions
	parts := map[int][]int{}
	var mine []int
	for s, held := range n.holds {
		if held {
			parts[s/per] = append(parts[s/per], s)
			mine = append(mine, s)
		}
	}
	workers := min(n.cfg.PullWorkers, max(len(parts), 1))
	b, err := n.store.BeginVersion(ctx, v.Version, fmt.Sprintf("pull of version %d", v.Version), workers)
	if errors.Is(err, pebblestore.ErrExists) {
		return nil
	}
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			b.Abort()
		}
	}()
	type sums struct {
		rows     []int64
		checksum []uint64
	}
	perWorker := make([]sums, workers)
	queue := make(chan int, len(parts))
	for p := range parts {
		queue <- p
	}
	close(queue)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acc := sums{rows: make([]int64, v.Slots), checksum: make([]uint64, v.Slots)}
			for p := range queue {
				err := n.pg.Pull(ctx, v.Version, p, parts[p], func(slot int, r *promotion.Record) error {
					acc.rows[slot]++
					acc.checksum[slot] += r.Checksum()
					return b.Add(w, r, 0)
				})
				if err != nil {
					cancel(err)
					return
				}
			}
			perWorker[w] = acc
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("cannot pull version %d: %w", v.Version, err)
	}
	copied := time.Since(start)
	want, err := n.pg.SlotSums(ctx, v.Version, mine)
	if err != nil {
		return err
	}
	var total int64
	for _, s := range mine {
		var got pgstore.SlotSum
		for _, acc := range perWorker {
			got.Rows += acc.rows[s]
			got.Checksum += acc.checksum[s]
		}
		if got != want[s] {
			return fmt.Errorf("version %d, slot %d: pulled %d rows with checksum %x, ingest recorded %d rows with %x",
				v.Version, s, got.Rows, got.Checksum, want[s].Rows, want[s].Checksum)
		}
		total += got.Rows
	}
	if _, _, err := b.Prepare(ctx); err != nil {
		return err
	}
	committed = true
	el := time.Since(start)
	rate := float64(total) / el.Seconds()
	n.pulledRows.Add(int(total))
	n.pullRate.Store(math.Float64bits(rate))
	n.log.Info("prepared version", "version", v.Version, "rows", total, "slots", len(mine),
		"partitions", len(parts), "elapsed", el.Round(time.Millisecond), "copy", copied.Round(time.Millisecond), "rows_per_second", int(rate))
	return n.pg.Report(ctx, n.cfg.Name, v.Version, pgstore.NodePrepared)
}

func (n *Node) registerMetrics() {
	m := n.metrics
	n.pulledRows = m.NewCounter("promo_readnode_pull_rows_total")
	n.pullFailure = m.NewCounter("promo_readnode_pull_failures_total")
	m.NewGauge("promo_readnode_pull_rows_per_second", func() float64 { return math.Float64frombits(n.pullRate.Load()) })
	m.NewGauge("promo_readnode_version_active", func() float64 {
		if vi, ok := n.store.Current(); ok {
			return float64(vi.Version)
		}
		return 0
	})
	m.NewGauge("promo_readnode_version_prepared", func() float64 {
		var newest uint64
		for _, vi := range n.store.Versions() {
			if vi.State == pebblestore.StateReady || vi.State == pebblestore.StateActive {
				newest = max(newest, vi.Version)
			}
		}
		return float64(newest)
	})
	m.NewGauge("promo_readnode_ready", func() float64 {
		if n.ready() {
			return 1
		}
		return 0
	})
}

// ready reports whether the node serves the version the cluster activated.
func (n *Node) ready() bool {
	a := n.activated.Load()
	cur, ok := n.store.Current()
	return a > 0 && ok && cur.Version >= a
}

func (n *Node) handler() fasthttp.RequestHandler {
	r := httpserver.NewRouter(httpserver.NewMetrics(n.metrics), "")
	r.Read("/datasets", func(ctx *fasthttp.RequestCtx) {
		httpserver.WriteJSON(ctx, fasthttp.StatusOK, struct {
			Datasets []pebblestore.VersionInfo `json:"datasets"`
		}{n.store.Versions()})
	})
	r.Read("/datasets/current", func(ctx *fasthttp.RequestCtx) {
		vi, ok := n.store.Current()
		if !ok {
			httpserver.Error(ctx, fasthttp.StatusNotFound, "this node serves no dataset version yet")
			return
		}
		httpserver.WriteJSON(ctx, fasthttp.StatusOK, vi)
	})
	r.Probe("/healthz", httpserver.Healthz(n.cfg.Version, "node", n.cfg.Name))
	r.Probe("/readyz", func(ctx *fasthttp.RequestCtx) {
		cur, _ := n.store.Current()
		body := map[string]any{"node": n.cfg.Name, "active_version": n.activated.Load(), "serving_version": cur.Version}
		if !n.ready() {
			body["status"] = "not ready: the node does not serve the active version of its slots yet"
			httpserver.WriteJSON(ctx, fasthttp.StatusServiceUnavailable, body)
			return
		}
		body["status"] = "ready"
		httpserver.WriteJSON(ctx, fasthttp.StatusOK, body)
	})
	r.Probe("/metrics", func(ctx *fasthttp.RequestCtx) { httpserver.WriteMetrics(ctx, n.metrics) })
	return lookup.Route(r, n.lookup.HandlePath)
}
