package client

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/hedge"
	"github.com/promotion-service/promo/promotion"
)

func TestGetRoutesToThePrimary(t *testing.T) {
	fakes, a := fakeCluster(t, 3, 2)
	c := mustNew(t, Config{Seeds: []string{fakes[2].url}})
	if s := c.Stats(); s.RingVersion != 1 || s.Nodes != 3 {
		t.Fatalf("stats %+v: want ring version 1 and 3 nodes", s)
	}
	ctx := context.Background()
	// Each id is answered by a replica of its slot, its primary unless
	// routing by latency passed the primary over (measured over 4x slower
	// plus 5ms than the other replica: a slow moment under -race).
	fromPrimary, n := 0, 0
	for k := range fakes {
		for _, id := range idsLedBy(a, k, 20, 1) {
			p, err := c.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			pid, _ := promotion.ParseID([]byte(id))
			owners := a.OwnersOf(pid)
			want := time.Date(2018, 8, 4, 3, 32, 31, 0, time.UTC)
			if p.ID != id || !slices.Contains(owners, uint16(p.Price-1)) || !p.ExpirationDate.Equal(want) || p.ExpirationDate.Location() != time.UTC || p.Version != 1 {
				t.Fatalf("Get(%s) = %+v, want it from a replica of its slot %v (primary n%d)", id, p, owners, k)
			}
			n++
			if p.Price == float64(k+1) {
				fromPrimary++
			}
		}
	}
	// Not asserted: under -race a third of them went to the other
	// replica (latencies of a few ms, compared with a 5ms margin).
	t.Logf("%d of %d lookups answered by their primary", fromPrimary, n)
	// Upper case in, lower case out.
	id := idsLedBy(a, 0, 1, 2)[0]
	if p, err := c.Get(ctx, upper(id)); err != nil || p.ID != id {
		t.Fatalf("Get(upper case) = %+v, %v", p, err)
	}
	if _, err := c.Get(ctx, "not-a-uuid"); !errors.Is(err, ErrBadID) {
		t.Fatalf("malformed id: %v, want ErrBadID", err)
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// A primary that fails (5xx, or gone) is failed over to the next replica
// within the same Get.
func TestFailover(t *testing.T) {
	fakes, a := fakeCluster(t, 3, 2)
	c := mustNew(t, Config{Seeds: []string{fakes[0].url, fakes[1].url}, Hedge: hedgeOff()})
	ctx := context.Background()
	fakes[1].status.Store(500)
	for _, id := range idsLedBy(a, 1, 20, 3) {
		p, err := c.Get(ctx, id)
		if err != nil || p.Price == 2 {
			t.Fatalf("Get with n1 failing = %+v, %v", p, err)
		}
	}
	fakes[1].srv.Shutdown()
	for _, id := range idsLedBy(a, 1, 20, 4) {
		if p, err := c.Get(ctx, id); err != nil || p.Price == 2 {
			t.Fatalf("Get with n1 gone = %+v, %v", p, err)
		}
	}
	if s := c.Stats(); s.Failovers < 3 || s.Hedge.Hedges != 0 {
		t.Fatalf("stats %+v: want failovers (at least until n1 is asked last) and no hedge", s)
	}
}

// When every replica fails, Get gives up after Retries more rounds, with a
// clear error.
func TestAllReplicasFail(t *testing.T) {
	fakes, a := fakeCluster(t, 2, 2)
	c := mustNew(t, Config{Seeds: []string{fakes[0].url}, Retries: 1})
	for _, f := range fakes {
		f.status.Store(502)
	}
	before := fakes[0].gets.Load() + fakes[1].gets.Load()
	_, err := c.Get(context.Background(), idsLedBy(a, 0, 1, 5)[0])
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Get with no replica answering: %v", err)
	}
	if n := fakes[0].gets.Load() + fakes[1].gets.Load() - before; n != 4 {
		t.Fatalf("%d requests, want 2 rounds of 2 replicas", n)
	}
}

// An answer from a version older than one returned is passed over for the
// other replica.
func TestNeverOlder(t *testing.T) {
	fakes, a := fakeCluster(t, 2, 2)
	c := mustNew(t, Config{Seeds: []string{fakes[0].url}, CatchUpWait: 50 * time.Millisecond, Hedge: hedgeOff()})
	ctx := context.Background()
	fakes[1].version.Store(2)
	if p, err := c.Get(ctx, idsLedBy(a, 1, 1, 6)[0]); err != nil || p.Version != 2 {
		t.Fatalf("Get = %+v, %v", p, err)
	}
	// n0 is still on version 1: its answers are passed over for n1's.
	for _, id := range idsLedBy(a, 0, 10, 7) {
		if p, err := c.Get(ctx, id); err != nil || p.Version != 2 || p.Price != 2 {
			t.Fatalf("Get after version 2 = %+v, %v", p, err)
		}
	}
	// With no replica on version 2, Get waits CatchUpWait and fails
	// rather than going back.
	fakes[1].version.Store(1)
	if p, err := c.Get(ctx, idsLedBy(a, 0, 1, 8)[0]); err == nil {
		t.Fatalf("Get with every replica on version 1 after 2 = %+v", p)
	}
	if c.Stats().Behind == 0 {
		t.Fatal("no answer counted as behind")
	}
}

func hedgeOff() hedge.Config { return hedge.Config{Disabled: true} }

// A replica that stalls one request in ten: the stalled ones are answered
// by the other replica within about the hedge delay, and hedges stay
// within 10% of the requests (plus the burst).
func TestHedgeStalls(t *testing.T) {
	fakes, a := fakeCluster(t, 2, 2)
	fakes[0].stall.Store(int64(200 * time.Millisecond))
	fakes[0].stallEvery.Store(10)
	c := mustNew(t, Config{Seeds: []string{fakes[0].url}, TryTimeout: time.Second})
	ids := idsLedBy(a, 0, 100, 9)
	ctx := context.Background()
	var lat []time.Duration
	const n = 1500
	for i := range n {
		start := time.Now()
		if _, err := c.Get(ctx, ids[i%len(ids)]); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	s := c.Stats()
	t.Logf("stats %+v; n0 asked %d times, n1 %d", s, fakes[0].gets.Load(), fakes[1].gets.Load())
	if s.Hedge.Hedges > n/10+10 || s.Hedge.Wins == 0 {
		t.Fatalf("%d hedges (%d won) for %d requests: want some, at most 10%% + 10", s.Hedge.Hedges, s.Hedge.Wins, n)
	}
	if extra := fakes[0].gets.Load() + fakes[1].gets.Load() - n; extra > n/10+10 {
		t.Fatalf("%d requests beyond the %d lookups", extra, n)
	}
	slices.Sort(lat)
	// Without hedging one lookup in ten (or in twenty with the replica
	// passed over) takes 200ms, so the p99 would be 200ms.
	if p99 := lat[n*99/100]; p99 > 100*time.Millisecond {
		t.Fatalf("p99 %v with a replica stalling one request in ten", p99)
	}
}

// One of three nodes made slow (50ms): lookups of its slots are answered
// through the other replicas, within about the hedge delay, and hedges
// stay within budget.
func TestHedgeSlowNode(t *testing.T) {
	fakes, a := fakeCluster(t, 3, 2)
	fakes[0].delay.Store(int64(50 * time.Millisecond))
	c := mustNew(t, Config{Seeds: []string{fakes[1].url}})
	ids := idsLedBy(a, 0, 200, 10)
	ctx := context.Background()
	const workers, per = 4, 300
	lats := make([][]time.Duration, workers)
	var slowAnswers atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				start := time.Now()
				p, err := c.Get(ctx, ids[(w*per+i)%len(ids)])
				if err != nil {
					t.Error(err)
					return
				}
				if p.Price == 1 && i > 50 {
					// Every id here is led by the slow node: without
					// hedging and passing it over, all would be its.
					// Probes (1 in 128) and a hedge delay inflated past
					// 50ms (the race detector) let a few through.
					slowAnswers.Add(1)
				}
				lats[w] = append(lats[w], time.Since(start))
			}
		}()
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	s := c.Stats()
	t.Logf("stats %+v; p50 %v p99 %v; slow node asked %d times", s, all[len(all)/2], all[len(all)*99/100], fakes[0].gets.Load())
	if s.Hedge.Hedges > uint64(len(all))/10+10 {
		t.Fatalf("%d hedges for %d lookups", s.Hedge.Hedges, len(all))
	}
	if n := slowAnswers.Load(); n > int64(workers*(per-51))/20 {
		t.Fatalf("%d of %d lookups after the first 50 of each worker answered by the slow node, want at most 5%%", n, workers*(per-51))
	}
	// Without hedging and passing the slow node over, every lookup here
	// would wait its 50ms. Probes and hedges under the race detector's
	// inflated delays still wait some: the 95th percentile must not.
	if p95 := all[len(all)*95/100]; p95 >= 50*time.Millisecond {
		t.Fatalf("p95 %v with a node 50ms slow", p95)
	}
}

// A node that answers 421 (the ring changed) makes the client refresh the
// ring at once; meanwhile the other replica answers.
func TestRingChange(t *testing.T) {
	fakes, a := fakeCluster(t, 3, 2)
	c := mustNew(t, Config{Seeds: []string{fakes[1].url}, RefreshInterval: time.Hour, Hedge: hedgeOff()})
	setRing(t, fakes, 2, 2, 1, 2) // n0 leaves
	fakes[0].status.Store(421)
	ctx := context.Background()
	for _, id := range idsLedBy(a, 0, 5, 12) {
		if p, err := c.Get(ctx, id); err != nil || p.Price == 1 {
			t.Fatalf("Get = %+v, %v", p, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().RingVersion != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the ring was not refreshed after a 421: %+v", c.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	before := fakes[0].gets.Load()
	for _, id := range idsLedBy(a, 0, 50, 13) {
		if p, err := c.Get(ctx, id); err != nil || p.Price == 1 {
			t.Fatalf("Get = %+v, %v", p, err)
		}
	}
	if n := fakes[0].gets.Load() - before; n != 0 || c.Stats().Nodes != 2 {
		t.Fatalf("the node that left was asked %d times after the refresh; stats %+v", n, c.Stats())
	}
	// A 421 is not a failure: the node stays first for the slots it holds.
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.name == fakes[0].name && (n.fails.Load() != 0 || n.downUntil.Load() != 0) {
			t.Fatalf("n0 counted %d failures for its 421s", n.fails.Load())
		}
	}
}

// A node that closed the client's idle keep-alive connection (its idle
// timeout, a restart): the lookup is sent again at once on a new
// connection to the same node, within the same round, not failed. One
// replica per slot, so that no other replica can answer instead (a
// replica not measured yet may be asked first: a lookup whose first one
// was slow under -race went to n1, which is routing, not a failover), and
// one round per lookup, so that a failed round retried later is caught.
func TestStaleConnection(t *testing.T) {
	fakes, a := fakeClusterIdle(t, 2, 1, 50*time.Millisecond)
	c := mustNew(t, Config{Seeds: []string{fakes[1].url}, Hedge: hedgeOff()})
	ctx := context.Background()
	ids := idsLedBy(a, 0, 5, 12)
	for i, id := range ids {
		p, err := c.Get(ctx, id)
		if err != nil || p.Price != 1 {
			t.Fatalf("lookup %d: %v, price %v (want 1, from n0)", i, err, p.Price)
		}
		// Wait until n0 closed the connection the client keeps.
		deadline := time.Now().Add(5 * time.Second)
		for fakes[0].srv.GetOpenConnectionsCount() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("n0 still has %d connections open", fakes[0].srv.GetOpenConnectionsCount())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	s := c.Stats()
	if s.Hedge.Primaries != uint64(len(ids)) || s.Failovers != 0 {
		t.Fatalf("%d rounds and %d failovers for %d lookups: want one round each, no failover", s.Hedge.Primaries, s.Failovers, len(ids))
	}
	if n := fakes[0].gets.Load(); n != int64(len(ids)) {
		t.Fatalf("n0 answered %d lookups, want %d", n, len(ids))
	}
}

// MaxConnsPerNode bounds the connections to a node: lookups beyond it wait
// for a connection to be given back rather than dial more.
//
// One replica per slot: with two, n0 measured slower than 5 ms (its delay)
// against an n1 not measured yet makes n1 the first replica (routing by
// latency), and the lookups need not wait for n0's connection.
func TestMaxConnsPerNode(t *testing.T) {
	fakes, a := fakeCluster(t, 2, 1)
	fakes[0].delay.Store(int64(5 * time.Millisecond))
	var dials atomic.Int32
	dial := func(addr string) (net.Conn, error) {
		if addr == strings.TrimPrefix(fakes[0].url, "http://") {
			dials.Add(1)
		}
		return fasthttp.Dial(addr)
	}
	c := mustNew(t, Config{Seeds: []string{fakes[1].url}, MaxConnsPerNode: 1, TryTimeout: 2 * time.Second, Hedge: hedgeOff(), Dial: dial})
	ids := idsLedBy(a, 0, 8, 13)
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p, err := c.Get(context.Background(), id); err != nil || p.Price != 1 {
				t.Errorf("%s: %v, price %v (want 1, from n0)", id, err, p.Price)
			}
		}()
	}
	wg.Wait()
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections dialled to n0, want 1", n)
	}
	if s := c.Stats(); s.Failovers != 0 {
		t.Fatalf("%d failovers, want none", s.Failovers)
	}
}

// A batch whose request to one node stalls: after the batch hedge delay
// its ids go to the other replica of their slots, whose answer settles
// them, and the stalled request is left to finish on its own.
func TestBatchHedge(t *testing.T) {
	fakes, a := fakeCluster(t, 2, 2)
	// A delay well above a loopback batch's latency under -race, well
	// below the stall.
	c := mustNew(t, Config{Seeds: []string{fakes[1].url}, BatchTryTimeout: 10 * time.Second,
		Hedge: hedge.Config{Initial: 100 * time.Millisecond}})
	ids := append(idsLedBy(a, 0, 30, 21), idsLedBy(a, 1, 30, 22)...)
	ctx := context.Background()
	// Both nodes measured first, n1 10ms late, so that n0 stays the first
	// replica of its slots: a node measured more than 4x slower than the
	// other plus 5ms loses its turn, which a slow moment of n0's under
	// -race would otherwise risk. Any id sent to n0 then is hedged.
	fakes[1].delay.Store(int64(10 * time.Millisecond))
	if _, _, err := c.BatchGet(ctx, ids); err != nil {
		t.Fatal(err)
	}
	fakes[1].delay.Store(0)
	fakes[0].delay.Store(int64(time.Second))
	before := c.Stats().BatchHedge
	found, missing, err := c.BatchGet(ctx, ids)
	if err != nil || len(found) != len(ids) || len(missing) != 0 {
		t.Fatalf("%d found, missing %v, %v", len(found), missing, err)
	}
	for i, p := range found {
		// n0 answers price 1, n1 price 2: the stalled n0 answers nothing
		// within its 1s, so all come from n1.
		if p.ID != ids[i] || p.Price != 2 {
			t.Fatalf("found[%d] = %+v, want %s from n1 (price 2)", i, p, ids[i])
		}
	}
	s := c.Stats().BatchHedge
	if s.Hedges == before.Hedges || s.Wins-before.Wins != 1 {
		t.Fatalf("batch hedges %+v, before %+v: want n0's request hedged, and won", s, before)
	}
	if h := c.Stats().Hedge; h.Hedges != 0 {
		t.Fatalf("single-lookup hedges %+v: want none for batches", h)
	}
}

// Batches against a node that is always slow: hedges stay within 10% of
// the batch requests plus the burst, and every answer is right.
func TestBatchHedgeBudget(t *testing.T) {
	fakes, a := fakeCluster(t, 3, 2)
	fakes[0].delay.Store(int64(30 * time.Millisecond))
	c := mustNew(t, Config{Seeds: []string{fakes[1].url}, Hedge: hedge.Config{Initial: time.Millisecond}})
	ids := append(idsLedBy(a, 0, 200, 23), idsLedBy(a, 1, 200, 24)...)
	ctx := context.Background()
	const n = 300
	for i := range n {
		batch := ids[(i*7)%300 : (i*7)%300+100]
		found, missing, err := c.BatchGet(ctx, batch)
		if err != nil || len(found) != len(batch) || len(missing) != 0 {
			t.Fatalf("batch %d: %d found, missing %v, %v", i, len(found), missing, err)
		}
		for k, p := range found {
			if p.ID != batch[k] {
				t.Fatalf("batch %d: found[%d] = %s, want %s", i, k, p.ID, batch[k])
			}
		}
	}
	s := c.Stats().BatchHedge
	t.Logf("batch hedge stats %+v; requests n0 %d, n1 %d, n2 %d", s, fakes[0].gets.Load(), fakes[1].gets.Load(), fakes[2].gets.Load())
	if s.Hedges == 0 || s.Hedges > s.Primaries/10+10 {
		t.Fatalf("%d batch hedges for %d batch requests: want some, at most 10%% + 10", s.Hedges, s.Primaries)
	}
}
