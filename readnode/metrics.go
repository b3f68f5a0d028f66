package readnode

import (
	"math"
	"time"

	"github.com/promotion-service/promo/pebblestore"
)

// registerMetrics declares the node's promo_readnode_* metrics in its set,
// which /metrics serves with the request metrics.
func (n *Node) registerMetrics() {
	m := n.metrics
	n.pulledRows = m.NewCounter("promo_readnode_pull_rows_total")
	n.pullFailure = m.NewCounter("promo_readnode_pull_failures_total")
	n.beatFailure = m.NewCounter("promo_readnode_heartbeat_failures_total")
	m.NewGauge("promo_readnode_pull_backoff_versions", func() float64 {
		versions, _ := n.retries.waiting(time.Now())
		return float64(versions)
	})
	m.NewGauge("promo_readnode_pull_retry_seconds", func() float64 {
		_, soonest := n.retries.waiting(time.Now())
		return soonest
	})
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
	m.NewGauge("promo_readnode_ring_version", func() float64 {
		if mem := n.membership.Load(); mem != nil {
			return float64(mem.Serving.Version)
		}
		return 0
	})
	m.NewGauge("promo_readnode_slots_served", func() float64 { return float64(count(n.gate.Load().serves)) })
	m.NewGauge("promo_dataset_epoch", func() float64 {
		if vi, ok := n.store.Current(); ok {
			return float64(vi.Epoch)
		}
		return 0
	})
	m.NewGauge("promo_dataset_activated_timestamp_seconds", func() float64 {
		if vi, ok := n.store.Current(); ok && vi.ActivatedAt != nil {
			return float64(vi.ActivatedAt.UnixNano()) / 1e9
		}
		return 0
	})
	m.NewGauge("promo_readnode_ready", func() float64 {
		if n.ready() {
			return 1
		}
		return 0
	})
}
