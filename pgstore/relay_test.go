package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/promotion-service/promo/events"
	"github.com/promotion-service/promo/localsvc/localsvctest"
)

// fakePublisher records what the relay publishes; each Publish waits for
// the test's answer on ack (nil: acknowledged).
type fakePublisher struct {
	mu        sync.Mutex
	published [][]byte // acknowledged payloads, in order
	calls     int
	asked     chan []byte
	ack       chan error
}

func (p *fakePublisher) Publish(ctx context.Context, topic, key string, value []byte) error {
	p.mu.Lock()
	p.calls++
	p.mu.Unlock()
	select {
	case p.asked <- value:
	case <-ctx.Done():
		return ctx.Err()
	}
	var err error
	select {
	case err = <-p.ack:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err == nil {
		p.mu.Lock()
		p.published = append(p.published, value)
		p.mu.Unlock()
	}
	return err
}

func (p *fakePublisher) counts() (calls, published int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls, len(p.published)
}

// outboxRow is the relay's state of the outbox row of version v.
type outboxRow struct {
	sent      bool
	attempts  int
	lastError *string
}

func outboxOf(t *testing.T, s *Store, v uint64) outboxRow {
	t.Helper()
	var r outboxRow
	err := s.pool.QueryRow(context.Background(),
		"SELECT sent_at IS NOT NULL, attempts, last_error FROM outbox WHERE (payload->>'version')::bigint = $1", v).
		Scan(&r.sent, &r.attempts, &r.lastError)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A row is marked sent only after the broker acknowledged it; a failed
// publish is recorded and retried; a sent row is never published again,
// however often the relay runs or is kicked.
func TestRelayMarksSentAfterTheAckAndNeverPublishesTwice(t *testing.T) {
	s := mustOpen(t, testConfig(localsvctest.Database(t)))
	rng := rand.New(rand.NewPCG(3, 4))
	commitVersion := func() uint64 {
		t.Helper()
		b := mustBegin(t, s, 1)
		addAll(t, b, randomRecords(rng, 100), 1)
		if _, _, err := b.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		return b.Version()
	}
	v1 := commitVersion()

	pub := &fakePublisher{asked: make(chan []byte), ack: make(chan error)}
	set := metrics.NewSet()
	r := NewRelay(s, pub, RelayConfig{Interval: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Metrics: set, Logger: s.log})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-stopped
	})
	next := func() events.DatasetCommitted {
		t.Helper()
		select {
		case b := <-pub.asked:
			e, err := events.Decode(b)
			if err != nil {
				t.Fatalf("published %s: %v", b, err)
			}
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("the relay published nothing within 10s")
		}
		return events.DatasetCommitted{}
	}

	// The first attempt fails: recorded, not sent.
	if e := next(); e.Version != v1 {
		t.Fatalf("published version %d first, want %d", e.Version, v1)
	}
	if row := outboxOf(t, s, v1); row.sent {
		t.Fatal("the outbox row is marked sent while its publish waits for the broker")
	}
	pub.ack <- errors.New("broker down")
	// The retry: while it waits for the acknowledgement the row is not
	// sent, and the failure is on record.
	if e := next(); e.Version != v1 {
		t.Fatalf("retried version %d, want %d", e.Version, v1)
	}
	row := outboxOf(t, s, v1)
	if row.sent || row.attempts != 1 || row.lastError == nil || *row.lastError != "broker down" {
		t.Fatalf("outbox row after a failed publish: sent %v, attempts %d, last_error %v", row.sent, row.attempts, row.lastError)
	}
	if n := r.failures.Get(); n != 1 {
		t.Fatalf("promo_outbox_publish_failures_total = %d, want 1", n)
	}
	pub.ack <- nil
	localsvctest.SucceedsSoon(t, 10*time.Second, func() error {
		if row := outboxOf(t, s, v1); !row.sent || row.attempts != 2 || row.lastError != nil {
			return fmt.Errorf("outbox row after the acknowledgement: %+v", row)
		}
		return nil
	})

	// Many more rounds, kicked or not: nothing more is published.
	for range 10 {
		r.Kick()
		select {
		case b := <-pub.asked:
			t.Fatalf("a sent row was published again: %s", b)
		case <-time.After(25 * time.Millisecond): // longer than Interval
		}
	}
	if calls, published := pub.counts(); calls != 2 || published != 1 {
		t.Fatalf("%d publishes (%d acknowledged) of one row, want 2 (1)", calls, published)
	}
	if n, err := r.Pending(context.Background()); err != nil || n != 0 {
		t.Fatalf("Pending = %d, %v once the row is sent, want 0", n, err)
	}

	// A new commit goes out once, after the first one.
	v2 := commitVersion()
	r.Kick()
	if e := next(); e.Version != v2 {
		t.Fatalf("published version %d, want %d", e.Version, v2)
	}
	pub.ack <- nil
	localsvctest.SucceedsSoon(t, 10*time.Second, func() error {
		if row := outboxOf(t, s, v2); !row.sent || row.attempts != 1 {
			return fmt.Errorf("outbox row of version %d: %+v", v2, row)
		}
		return nil
	})
	if n := r.published.Get(); n != 2 {
		t.Fatalf("promo_outbox_published_total = %d, want 2", n)
	}
}
