package bench

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// latencyChart collects a bounded sample of latencies per second of an
// attack and draws p50, p99 and max over time.
type latencyChart struct {
	seconds []*reservoir
	rng     *rand.Rand
}

// reservoir keeps a uniform sample of at most reservoirSize latencies and
// the maximum of all.
type reservoir struct {
	n      int
	sample []time.Duration
	max    time.Duration
}

const reservoirSize = 2048

func newLatencyChart() *latencyChart {
	return &latencyChart{rng: rand.New(rand.NewPCG(1, 1))}
}

func (c *latencyChart) add(at, latency time.Duration) {
	s := max(int(at/time.Second), 0)
	for len(c.seconds) <= s {
		c.seconds = append(c.seconds, &reservoir{})
	}
	r := c.seconds[s]
	r.n++
	r.max = max(r.max, latency)
	if len(r.sample) < reservoirSize {
		r.sample = append(r.sample, latency)
	} else if i := c.rng.IntN(r.n); i < reservoirSize {
		r.sample[i] = latency
	}
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

// save draws the chart as a PNG.
func (c *latencyChart) save(path, title string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = "latency (ms)"
	p.Legend.Top = true
	p.Legend.Left = true
	var p50, p99, mx plotter.XYs
	for s, r := range c.seconds {
		if r.n == 0 {
			continue
		}
		sorted := slices.Clone(r.sample)
		slices.Sort(sorted)
		x := float64(s) + 0.5
		p50 = append(p50, plotter.XY{X: x, Y: float64(quantile(sorted, 0.5)) / 1e6})
		p99 = append(p99, plotter.XY{X: x, Y: float64(quantile(sorted, 0.99)) / 1e6})
		mx = append(mx, plotter.XY{X: x, Y: float64(r.max) / 1e6})
	}
	if err := plotutil.AddLinePoints(p, "p50", p50, "p99", p99, "max", mx); err != nil {
		return fmt.Errorf("bench: cannot draw latency chart: %w", err)
	}
	return p.Save(10*vg.Inch, 5*vg.Inch, path)
}
