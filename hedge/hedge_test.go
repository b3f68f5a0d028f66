package hedge

import (
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

func mustNew(t *testing.T, cfg Config) (*Policy, *metrics.Set) {
	t.Helper()
	set := metrics.NewSet()
	p, err := New(cfg, set, "promo_test")
	if err != nil {
		t.Fatal(err)
	}
	return p, set
}

// The delay follows the quantile of the window, clamped to the floor and
// the ceiling.
func TestDelayFollowsQuantile(t *testing.T) {
	p, _ := mustNew(t, Config{Window: 128, Floor: 100 * time.Microsecond, Ceiling: 50 * time.Millisecond, Initial: 7 * time.Millisecond})
	if d := p.Delay(); d != 7*time.Millisecond {
		t.Fatalf("initial delay %v, want 7ms", d)
	}
	// 1..128 ms: the p95 is the 122nd value.
	for i := 1; i <= 128; i++ {
		p.Observe(time.Duration(i) * 100 * time.Microsecond)
	}
	if d := p.Delay(); d != 12200*time.Microsecond {
		t.Fatalf("delay %v, want the p95 12.2ms", d)
	}
	for range 128 {
		p.Observe(time.Microsecond)
	}
	if d := p.Delay(); d != 100*time.Microsecond {
		t.Fatalf("delay %v, want the floor", d)
	}
	for range 128 {
		p.Observe(time.Second)
	}
	if d := p.Delay(); d != 50*time.Millisecond {
		t.Fatalf("delay %v, want the ceiling", d)
	}
}

// Hedges never exceed Ratio of the primaries plus Burst, concurrently.
func TestBudget(t *testing.T) {
	p, set := mustNew(t, Config{Ratio: 0.1, Burst: 5})
	for i := range 5 {
		if !p.Allow() {
			t.Fatalf("hedge %d refused: the budget starts full, with Burst = 5", i)
		}
	}
	if p.Allow() {
		t.Fatal("a sixth hedge before any request")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10_000 {
				p.Primary()
				p.Allow() // try to hedge every request
			}
		}()
	}
	wg.Wait()
	s := p.Stats()
	if s.Primaries != 40_000 || s.Hedges > 4_000+5+5 || s.Hedges < 3_900 || s.Hedges+s.Denied != 40_001+5 {
		t.Fatalf("stats %+v: want 40000 primaries and about 4000 hedges, never above 4005", s)
	}
	// Unused tokens pile up to Burst only.
	for range 1000 {
		p.Primary()
	}
	n := 0
	for p.Allow() {
		n++
	}
	if n != 5 {
		t.Fatalf("%d hedges after a quiet spell, want Burst = 5", n)
	}
	var b strings.Builder
	set.WritePrometheus(&b)
	for _, m := range []string{"promo_test_hedges_total", "promo_test_hedges_denied_total", "promo_test_hedge_delay_seconds", "promo_test_primary_requests_total"} {
		if !strings.Contains(b.String(), m+" ") {
			t.Fatalf("metric %s missing from\n%s", m, b.String())
		}
	}
}

func TestDisabled(t *testing.T) {
	p, _ := mustNew(t, Config{Disabled: true})
	for range 100 {
		p.Primary()
	}
	if p.Allow() || p.AllowN(1) || p.Enabled() {
		t.Fatal("a disabled policy hedged")
	}
}

// AllowN spends n tokens or none.
func TestAllowN(t *testing.T) {
	p, _ := mustNew(t, Config{Ratio: 0.5, Burst: 5})
	if !p.AllowN(3) || p.AllowN(3) {
		t.Fatal("want 3 of the 5 tokens spent, then 3 more refused")
	}
	if s := p.Stats(); s.Hedges != 3 || s.Denied != 3 {
		t.Fatalf("stats %+v: want 3 hedges and 3 denied", s)
	}
	if !p.AllowN(2) || p.Allow() {
		t.Fatal("the refusal must not have spent the 2 tokens left")
	}
	p.Primary()
	p.Primary()
	if !p.Allow() || !p.Enabled() {
		t.Fatal("two requests at Ratio 0.5 earn one hedge")
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{{Quantile: 1}, {Floor: time.Second, Ceiling: time.Millisecond}, {Window: 100}, {Ratio: 2}} {
		if _, err := New(c, nil, "x"); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func BenchmarkObserve(b *testing.B) {
	p, _ := New(Config{}, nil, "x")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.Observe(time.Duration(i%1000) * time.Microsecond)
		p.Primary()
		p.Allow()
	}
}

type countTask struct {
	n  *atomic.Int64
	wg *sync.WaitGroup
}

func (t countTask) Run() {
	t.n.Add(1)
	t.wg.Done()
}

// The pool runs every task, reuses its goroutines, and they exit after
// Close.
func TestPool(t *testing.T) {
	base := runtime.NumGoroutine()
	p := NewPool()
	var n atomic.Int64
	var wg sync.WaitGroup
	for range 1000 { // at once
		wg.Add(1)
		p.Go(countTask{&n, &wg})
	}
	wg.Wait()
	busy := runtime.NumGoroutine()
	for range 1000 { // one after the other: the idle goroutines take them
		wg.Add(1)
		p.Go(countTask{&n, &wg})
		wg.Wait()
	}
	if n.Load() != 2000 {
		t.Fatalf("%d tasks ran, want 2000", n.Load())
	}
	if g := runtime.NumGoroutine(); g > busy {
		t.Fatalf("%d goroutines after 1000 tasks in a row, %d before: not reused", g, busy)
	}
	p.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after Close", runtime.NumGoroutine()-base)
		}
		time.Sleep(time.Millisecond)
	}
}
