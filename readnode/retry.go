package readnode

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/promotion-service/promo/pgstore"
)

// retries holds the versions whose last pull failed and when each may be
// pulled again: a pull that keeps failing (a slot whose checksum does not
// match, say) is retried after a delay that doubles from first up to max,
// not at every reconcile. The reconcile loop writes it; /readyz and the
// metrics read it.
type retries struct {
	first, max time.Duration

	mu        sync.Mutex
	byVersion map[uint64]*retry
}

// retry is the state of the failed pulls of one version.
type retry struct {
	seen     stamp // the version as it was when its pull failed
	failures int
	err      error
	failedAt time.Time
	next     time.Time
}

// stamp is what the node knew of a version when its pull failed. When it
// changes (the version is re-committed or activated, or a newer version
// is committed), the failures are forgotten and the version is pulled at
// once: the cause may be gone.
type stamp struct {
	state       string
	rows        int64
	checksum    string
	committedAt time.Time
	activatedAt time.Time
	latest      uint64 // the newest committed version
}

func stampOf(v pgstore.Version, latest uint64) stamp {
	s := stamp{state: v.State, rows: v.Rows, checksum: v.Checksum, latest: latest}
	if v.CommittedAt != nil {
		s.committedAt = *v.CommittedAt
	}
	if v.ActivatedAt != nil {
		s.activatedAt = *v.ActivatedAt
	}
	return s
}

func newRetries(first, max time.Duration) *retries {
	return &retries{first: first, max: max, byVersion: map[uint64]*retry{}}
}

// due reports whether version v may be pulled at now: its pull never
// failed, its delay has passed, or v or the newest committed version,
// latest, changed since it failed.
func (r *retries) due(v pgstore.Version, latest uint64, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.byVersion[v.Version]
	switch {
	case !ok:
		return true
	case f.seen != stampOf(v, latest):
		delete(r.byVersion, v.Version)
		return true
	}
	return !now.Before(f.next)
}

// failed records that a pull of v failed at now with err, and returns the
// delay before the next one: first, doubled at every failure in a row up
// to max, less up to a quarter at random, so that the nodes that failed
// together do not retry together.
func (r *retries) failed(v pgstore.Version, latest uint64, err error, now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.byVersion[v.Version]
	if !ok || f.seen != stampOf(v, latest) {
		f = &retry{seen: stampOf(v, latest)}
		r.byVersion[v.Version] = f
	}
	f.failures++
	d := r.max
	if f.failures <= 30 && r.first<<(f.failures-1) < r.max {
		d = r.first << (f.failures - 1)
	}
	if d >= 4 {
		d -= rand.N(d / 4)
	}
	f.err, f.failedAt, f.next = err, now, now.Add(d)
	return d
}

// keep forgets the failures of every version but those in versions: one
// pulled since, or no longer wanted.
func (r *retries) keep(versions []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for v := range r.byVersion {
		if !slices.Contains(versions, v) {
			delete(r.byVersion, v)
		}
	}
}

// pullFailure describes a version whose pulls fail, as /readyz shows it.
type pullFailure struct {
	Version  uint64    `json:"version"`
	Error    string    `json:"error"`
	Failures int       `json:"failures"`
	FailedAt time.Time `json:"failed_at"`
	NextTry  time.Time `json:"next_try_at"`
	// NextTryIn is the number of seconds until NextTry, 0 once it passed.
	NextTryIn float64 `json:"next_try_in_seconds"`
}

// list returns the versions whose pulls fail, oldest first.
func (r *retries) list(now time.Time) []pullFailure {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]pullFailure, 0, len(r.byVersion))
	for v, f := range r.byVersion {
		out = append(out, pullFailure{Version: v, Error: f.err.Error(), Failures: f.failures, FailedAt: f.failedAt,
			NextTry: f.next, NextTryIn: max(f.next.Sub(now), 0).Seconds()})
	}
	slices.SortFunc(out, func(a, b pullFailure) int { return cmp.Compare(a.Version, b.Version) })
	return out
}

// waiting returns how many versions wait for a retry, and the seconds
// until the soonest one.
func (r *retries) waiting(now time.Time) (versions int, soonest float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	first := time.Duration(-1)
	for _, f := range r.byVersion {
		if d := f.next.Sub(now); d > 0 {
			versions++
			if first < 0 || d < first {
				first = d
			}
		}
	}
	return versions, max(first, 0).Seconds()
}
