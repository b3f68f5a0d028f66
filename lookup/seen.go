package lookup

import (
	"strconv"
	"sync/atomic"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
)

// EpochHeader names the response header that carries the activation
// epoch of the version an answer was read from, in decimal: every
// activation of a version (an import's, or an operator's rollback) raises
// the epoch, in a cluster the cluster's. With VersionHeader it forms the
// answer's Stamp.
const EpochHeader = "X-Dataset-Epoch"

var headerEpoch = []byte(EpochHeader)

// Stamp is what an answer was read from: the activation epoch and the
// dataset version activated at it. Stamps order by epoch, then version:
// within an epoch versions never go back, and a higher epoch's version is
// newer even when its number is lower (a deliberate rollback).
type Stamp struct {
	Epoch   uint64
	Version uint64
}

// Less reports whether s is older than t.
func (s Stamp) Less(t Stamp) bool {
	if s.Epoch != t.Epoch {
		return s.Epoch < t.Epoch
	}
	return s.Version < t.Version
}

// IsZero reports whether s names no version.
func (s Stamp) IsZero() bool { return s == Stamp{} }

// ParseStamp parses the values of VersionHeader and EpochHeader; an
// absent or malformed value is 0.
func ParseStamp(version, epoch []byte) Stamp {
	return Stamp{Epoch: parseUint(epoch), Version: parseUint(version)}
}

func parseUint(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
		v = v*10 + uint64(c-'0')
	}
	return v
}

// String formats s as "v<version>@e<epoch>", for messages.
func (s Stamp) String() string {
	return "v" + strconv.FormatUint(s.Version, 10) + "@e" + strconv.FormatUint(s.Epoch, 10)
}

// Seen is the "never go back" rule of the proxy, read nodes and the Go
// client: it remembers the newest Stamp answered, and an answer older
// than it is behind (a replica that has not switched yet), to be asked
// elsewhere or waited for rather than returned. The zero value has seen
// nothing. It is safe for concurrent use; Load and Behind do not
// allocate, Raise allocates only when the stamp moves.
type Seen struct {
	p atomic.Pointer[Stamp]
}

// Load returns the newest stamp seen.
func (s *Seen) Load() Stamp {
	if p := s.p.Load(); p != nil {
		return *p
	}
	return Stamp{}
}

// Behind reports whether an answer stamped t is older than the newest
// seen.
func (s *Seen) Behind(t Stamp) bool { return t.Less(s.Load()) }

// Raise records t as seen, if newer than the newest seen, and reports
// whether it was.
func (s *Seen) Raise(t Stamp) bool {
	cur := s.p.Load()
	if cur != nil && !cur.Less(t) {
		return false
	}
	// A copy made here, not &t: taking t's address would move it to the
	// heap on every call, the common one that does not raise included.
	n := new(Stamp)
	*n = t
	for !s.p.CompareAndSwap(cur, n) {
		if cur = s.p.Load(); cur != nil && !cur.Less(t) {
			return false
		}
	}
	return true
}

// Epocher is implemented by Views that know the activation epoch of their
// version (pebblestore's): their answers carry EpochHeader.
type Epocher interface {
	// Epoch returns the activation epoch.
	Epoch() uint64
	// EpochText returns it in decimal, in a slice the caller must not
	// modify, valid at least until Release.
	EpochText() []byte
}

// StampOf returns the stamp of v: its version and, if it is an Epocher,
// its epoch.
func StampOf(v View) Stamp {
	s := Stamp{Version: v.Version()}
	if e, ok := v.(Epocher); ok {
		s.Epoch = e.Epoch()
	}
	return s
}

// setStampHeaders sets VersionHeader and, for an Epocher, EpochHeader
// from v.
func setStampHeaders(h *fasthttp.ResponseHeader, v View) {
	h.SetCanonical(headerVersion, v.VersionText())
	if e, ok := v.(Epocher); ok {
		h.SetCanonical(headerEpoch, e.EpochText())
	}
}

// catchingUp answers 503 for a node behind min, the cluster's latest
// activation.
func catchingUp(ctx *fasthttp.RequestCtx, min Stamp) {
	const msg = "this node is catching up with the active dataset version"
	if min.Epoch == 0 {
		httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, msg, "version", min.Version)
		return
	}
	httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, msg, "version", min.Version, "epoch", min.Epoch)
}
