package client

import "sync/atomic"

// floor is the version rule, shared with the proxy: no answer may come
// from a dataset version older than one already returned, so a caller
// never sees versions go back, even while the read nodes switch one after
// the other.
//
// It is the one place that compares versions: when the cluster gains an
// activation epoch (a deliberate rollback raises the epoch and is followed,
// not blocked), the stamp compared here becomes (epoch, version), e.g.
// packed as epoch<<40 | version, and nothing else changes.
type floor struct{ newest atomic.Uint64 }

// behind reports whether an answer of version v would go back.
func (f *floor) behind(v uint64) bool { return v < f.newest.Load() }

// raise records that an answer of version v was returned.
func (f *floor) raise(v uint64) {
	for {
		cur := f.newest.Load()
		if v <= cur || f.newest.CompareAndSwap(cur, v) {
			return
		}
	}
}

// get returns the newest version returned.
func (f *floor) get() uint64 { return f.newest.Load() }
