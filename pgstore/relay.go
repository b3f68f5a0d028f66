package pgstore

import (
	"context"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Publisher sends one message and returns once the broker acknowledged it.
type Publisher interface {
	Publish(ctx context.Context, topic, key string, value []byte) error
}

// RelayConfig configures a Relay.
type RelayConfig struct {
	// Interval is how often pending rows are looked for when nothing kicks
	// the relay (default 1s).
	Interval time.Duration
	// MaxBackoff caps the wait between attempts while the broker fails
	// (default 30s).
	MaxBackoff time.Duration
	// Logger receives failures (default slog.Default()).
	Logger *slog.Logger
	// Metrics receives promo_outbox_* metrics (default: a new set).
	Metrics *metrics.Set
}

// Relay publishes the outbox: committed rows in id order, each marked sent
// only after the broker acknowledged it. A crash between the two sends the
// row again after restart: consumers tolerate duplicates (see events).
type Relay struct {
	s         *Store
	pub       Publisher
	cfg       RelayConfig
	log       *slog.Logger
	kick      chan struct{}
	published *metrics.Counter
	failures  *metrics.Counter
}

// NewRelay returns a relay of s's outbox to pub.
func NewRelay(s *Store, pub Publisher, cfg RelayConfig) *Relay {
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	r := &Relay{s: s, pub: pub, cfg: cfg, log: cfg.Logger.With("component", "outbox"), kick: make(chan struct{}, 1)}
	r.published = cfg.Metrics.NewCounter("promo_outbox_published_total")
	r.failures = cfg.Metrics.NewCounter("promo_outbox_publish_failures_total")
	return r
}

// Kick makes the relay look for pending rows now.
func (r *Relay) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run publishes until ctx ends.
func (r *Relay) Run(ctx context.Context) {
	var backoff time.Duration
	for {
		n, err := r.flush(ctx)
		wait := r.cfg.Interval
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.failures.Inc()
			backoff = min(max(2*backoff, 100*time.Millisecond), r.cfg.MaxBackoff)
			wait = backoff
			r.log.Warn("cannot publish dataset events; retrying", "err", err, "retry_in", backoff)
		case n > 0:
			backoff = 0
			continue // there may be more
		default:
			backoff = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.kick:
			if err != nil {
				// Respect the backoff while the broker is down.
				<-t.C
			}
		case <-t.C:
		}
		t.Stop()
	}
}

// Pending returns how many rows wait to be published.
func (r *Relay) Pending(ctx context.Context) (int, error) {
	var n int
	err := r.s.pool.QueryRow(ctx, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").Scan(&n)
	return n, unavailable(err)
}

// flush publishes up to 100 pending rows in id order and stops at the first
// failure, so that events go out in commit order.
func (r *Relay) flush(ctx context.Context) (int, error) {
	rows, err := r.s.pool.Query(ctx, "SELECT id, topic, key, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT 100")
	if err != nil {
		return 0, unavailable(err)
	}
	type msg struct {
		id         int64
		topic, key string
		payload    []byte
	}
	var msgs []msg
	for rows.Next() {
		var m msg
		if err := rows.Scan(&m.id, &m.topic, &m.key, &m.payload); err != nil {
			rows.Close()
			return 0, err
		}
		msgs = append(msgs, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, unavailable(err)
	}
	for i, m := range msgs {
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := r.pub.Publish(pctx, m.topic, m.key, m.payload)
		cancel()
		if err != nil {
			_, _ = r.s.pool.Exec(ctx, "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1", m.id, err.Error())
			return i, err
		}
		if _, err := r.s.pool.Exec(ctx, "UPDATE outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1", m.id); err != nil {
			return i, unavailable(err)
		}
		r.published.Inc()
	}
	return len(msgs), nil
}
