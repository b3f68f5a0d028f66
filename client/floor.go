package client

import "github.com/promotion-service/promo/lookup"

// floor is the version rule, shared with the proxy (lookup.Seen): no
// answer may come from a dataset (epoch, version) stamp older than one
// already returned, so a caller never sees versions go back, even while
// the read nodes switch one after the other; a deliberate rollback raises
// the cluster's activation epoch and is followed, not blocked.
type floor struct{ seen lookup.Seen }

// behind reports whether an answer stamped v would go back.
func (f *floor) behind(v lookup.Stamp) bool { return f.seen.Behind(v) }

// raise records that an answer stamped v was returned.
func (f *floor) raise(v lookup.Stamp) { f.seen.Raise(v) }

// get returns the newest stamp returned.
func (f *floor) get() lookup.Stamp { return f.seen.Load() }
