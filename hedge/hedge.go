// Package hedge decides when a request that has not been answered yet is
// also sent to another replica (a hedged request), for the client library
// and the proxy alike.
//
// The delay is a quantile (default the p95) of the latencies of recent
// answers, kept in a fixed window, clamped between a floor and a ceiling:
// only the slowest few requests are hedged, and a cluster that turns slow
// as a whole raises the delay instead of doubling its load. Hedges are paid
// for from a budget, a token bucket that earns Ratio tokens (default 0.1)
// per primary request and starts full, so hedges never exceed Ratio of the
// primary requests plus Burst, however slow the replicas.
//
// A Policy is safe for concurrent use and allocates nothing per request.
package hedge

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Config configures a Policy.
type Config struct {
	// Quantile of the recent latencies after which a request is hedged
	// (default 0.95).
	Quantile float64
	// Floor and Ceiling bound the delay (defaults 1ms and 100ms).
	Floor, Ceiling time.Duration
	// Initial is the delay until Window/2 latencies were observed
	// (default 10ms, clamped to Floor and Ceiling).
	Initial time.Duration
	// Ratio is the most hedges per primary request, over time (default
	// 0.1: at most 10% extra requests).
	Ratio float64
	// Burst is the most hedges the budget holds in reserve (default 10).
	// The budget starts full, so that a node slow from the start is hedged
	// around from the first requests.
	Burst float64
	// Window is the number of recent latencies the delay is computed from,
	// a power of two (default 1024).
	Window int
	// Disabled turns hedging off: Allow always refuses.
	Disabled bool
}

// DefaultConfig returns the defaults described on Config.
func DefaultConfig() Config {
	return Config{Quantile: 0.95, Floor: time.Millisecond, Ceiling: 100 * time.Millisecond,
		Initial: 10 * time.Millisecond, Ratio: 0.1, Burst: 10, Window: 1024}
}

// Validate reports the first invalid field of c.
func (c *Config) Validate() error {
	switch {
	case c.Quantile <= 0 || c.Quantile >= 1:
		return fmt.Errorf("hedge: Quantile must be between 0 and 1, got %v", c.Quantile)
	case c.Floor <= 0 || c.Ceiling < c.Floor:
		return fmt.Errorf("hedge: want 0 < Floor <= Ceiling, got %v and %v", c.Floor, c.Ceiling)
	case c.Ratio < 0 || c.Ratio > 1 || c.Burst < 1:
		return errors.New("hedge: Ratio must be between 0 and 1 and Burst at least 1")
	case c.Window < 16 || c.Window&(c.Window-1) != 0:
		return fmt.Errorf("hedge: Window must be a power of two of at least 16, got %d", c.Window)
	}
	return nil
}

// milli is one token of the budget, in thousandths.
const milli = 1000

// Policy is a hedging policy: the latency window, the budget and their
// metrics.
type Policy struct {
	cfg     Config
	lat     []atomic.Int64 // ring of recent latencies, in ns
	n       atomic.Uint64  // latencies observed
	delay   atomic.Int64   // current delay, in ns
	every   uint64         // the delay is recomputed every this many observations
	scratch []int64
	mu      sync.Mutex // guards scratch

	tokens atomic.Int64 // budget, in thousandths of a hedge
	earn   int64
	burst  int64

	primaries, hedges, denied, wins *metrics.Counter
}

// New returns a policy of cfg; zero fields take their defaults. It
// registers in set (a private one when nil) prefix_primary_requests_total
// (requests that earn the budget), prefix_hedges_total (hedges sent),
// prefix_hedge_wins_total (hedges answered first),
// prefix_hedges_denied_total (hedges the budget refused) and
// prefix_hedge_delay_seconds (the current delay).
func New(cfg Config, set *metrics.Set, prefix string) (*Policy, error) {
	d := DefaultConfig()
	if cfg.Quantile == 0 {
		cfg.Quantile = d.Quantile
	}
	if cfg.Floor == 0 {
		cfg.Floor = d.Floor
	}
	if cfg.Ceiling == 0 {
		cfg.Ceiling = max(d.Ceiling, cfg.Floor)
	}
	if cfg.Initial == 0 {
		cfg.Initial = d.Initial
	}
	if cfg.Ratio == 0 {
		cfg.Ratio = d.Ratio
	}
	if cfg.Burst == 0 {
		cfg.Burst = d.Burst
	}
	if cfg.Window == 0 {
		cfg.Window = d.Window
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if set == nil {
		set = metrics.NewSet()
	}
	p := &Policy{cfg: cfg, lat: make([]atomic.Int64, cfg.Window), every: uint64(cfg.Window / 2),
		scratch: make([]int64, cfg.Window), earn: int64(cfg.Ratio * milli), burst: int64(cfg.Burst * milli)}
	p.delay.Store(int64(min(max(cfg.Initial, cfg.Floor), cfg.Ceiling)))
	p.tokens.Store(p.burst)
	p.primaries = set.NewCounter(prefix + "_primary_requests_total")
	p.hedges = set.NewCounter(prefix + "_hedges_total")
	p.wins = set.NewCounter(prefix + "_hedge_wins_total")
	p.denied = set.NewCounter(prefix + "_hedges_denied_total")
	set.NewGauge(prefix+"_hedge_delay_seconds", func() float64 { return time.Duration(p.delay.Load()).Seconds() })
	return p, nil
}

// Delay returns how long to wait for an answer before hedging.
func (p *Policy) Delay() time.Duration { return time.Duration(p.delay.Load()) }

// Observe records the latency of an answer. Every Window/2 observations
// the delay is recomputed from the window, by whichever caller crosses the
// mark (others do not wait for it).
func (p *Policy) Observe(d time.Duration) {
	n := p.n.Add(1)
	p.lat[(n-1)&uint64(len(p.lat)-1)].Store(int64(d))
	if n%p.every != 0 || !p.mu.TryLock() {
		return
	}
	defer p.mu.Unlock()
	k := min(n, uint64(len(p.lat)))
	s := p.scratch[:k]
	for i := range s {
		s[i] = p.lat[i].Load()
	}
	slices.Sort(s)
	q := time.Duration(s[min(int(float64(k)*p.cfg.Quantile), int(k)-1)])
	p.delay.Store(int64(min(max(q, p.cfg.Floor), p.cfg.Ceiling)))
}

// Primary records a primary request: it earns the budget Ratio of a hedge.
func (p *Policy) Primary() {
	p.primaries.Inc()
	for {
		t := p.tokens.Load()
		if t >= p.burst || p.tokens.CompareAndSwap(t, min(t+p.earn, p.burst)) {
			return
		}
	}
}

// Allow reports whether a hedge may be sent now, and if so spends its
// token and counts it.
func (p *Policy) Allow() bool { return p.AllowN(1) }

// AllowN reports whether n hedges that are worth sending only together
// (one request's ids going to several replicas) may be sent now, and if
// so spends their n tokens and counts them; otherwise it spends nothing
// and counts n denied.
func (p *Policy) AllowN(n int) bool {
	need := int64(n) * milli
	for !p.cfg.Disabled {
		t := p.tokens.Load()
		if t < need {
			break
		}
		if p.tokens.CompareAndSwap(t, t-need) {
			p.hedges.Add(n)
			return true
		}
	}
	p.denied.Add(n)
	return false
}

// Enabled reports whether the policy hedges at all.
func (p *Policy) Enabled() bool { return !p.cfg.Disabled }

// Won records a hedge that answered before the request it hedged.
func (p *Policy) Won() { p.wins.Inc() }

// Stats are the counts of a Policy.
type Stats struct {
	// Primaries are the requests that earned the budget.
	Primaries uint64
	// Hedges were sent, Wins of them answered first, and Denied were
	// refused by the budget.
	Hedges, Wins, Denied uint64
	// Delay is the current hedge delay.
	Delay time.Duration
}

// Stats returns the counts so far.
func (p *Policy) Stats() Stats {
	return Stats{Primaries: p.primaries.Get(), Hedges: p.hedges.Get(), Wins: p.wins.Get(), Denied: p.denied.Get(), Delay: p.Delay()}
}
