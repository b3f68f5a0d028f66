package readnode

import (
	"errors"
	"testing"
	"time"

	"github.com/promotion-service/promo/pgstore"
)

func TestRetriesBackOff(t *testing.T) {
	r := newRetries(time.Second, 5*time.Second)
	now := time.Unix(1_000_000, 0)
	committed := now.Add(-time.Hour)
	v := pgstore.Version{Version: 2, State: "committed", Rows: 10, Checksum: "c", CommittedAt: &committed}
	if !r.due(v, 2, now) {
		t.Fatal("a version that never failed is not due")
	}
	bad := errors.New("version 2, slot 7: checksum")
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		d := r.failed(v, 2, bad, now)
		if d > want || d <= want*3/4 {
			t.Fatalf("failure %d: wait %v, want in (%v, %v]", i+1, d, want*3/4, want)
		}
		if r.due(v, 2, now.Add(d-time.Nanosecond)) || !r.due(v, 2, now.Add(d)) {
			t.Fatalf("failure %d: due before or not after the wait of %v", i+1, d)
		}
		if versions, soonest := r.waiting(now); versions != 1 || soonest != d.Seconds() {
			t.Fatalf("failure %d: waiting = %d, %v; want 1, %v", i+1, versions, soonest, d.Seconds())
		}
		got := r.list(now)
		if len(got) != 1 || got[0].Version != 2 || got[0].Failures != i+1 || got[0].Error != bad.Error() ||
			!got[0].NextTry.Equal(now.Add(d)) || got[0].NextTryIn != d.Seconds() {
			t.Fatalf("failure %d: list = %+v", i+1, got)
		}
		now = now.Add(d)
	}
	if versions, soonest := r.waiting(now); versions != 0 || soonest != 0 {
		t.Fatalf("after the wait: waiting = %d, %v; want 0, 0", versions, soonest)
	}
	r.keep([]uint64{3})
	if got := r.list(now); len(got) != 0 {
		t.Fatalf("keep(3) left %+v", got)
	}
}

// TestRetriesEndOnChange: a version in backoff is due at once when it or
// the newest committed version changes, and starts over from the first
// delay.
func TestRetriesEndOnChange(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	committed := now.Add(-time.Hour)
	v := pgstore.Version{Version: 2, State: "committed", Rows: 10, Checksum: "c", CommittedAt: &committed}
	f := func(name string, change func(v *pgstore.Version, latest *uint64)) {
		t.Helper()
		r := newRetries(time.Second, time.Minute)
		for range 5 {
			r.failed(v, 2, errors.New("bad"), now)
		}
		if r.due(v, 2, now) {
			t.Fatalf("%s: due before any change", name)
		}
		w, latest := v, uint64(2)
		change(&w, &latest)
		if !r.due(w, latest, now) {
			t.Fatalf("%s: not due after the change", name)
		}
		if d := r.failed(w, latest, errors.New("bad"), now); d > time.Second {
			t.Fatalf("%s: the next failure waits %v, want the first delay", name, d)
		}
	}
	f("activated", func(v *pgstore.Version, _ *uint64) { at := now; v.ActivatedAt = &at })
	f("re-committed", func(v *pgstore.Version, _ *uint64) { at := now; v.CommittedAt = &at })
	f("rows", func(v *pgstore.Version, _ *uint64) { v.Rows++ })
	f("newer version", func(_ *pgstore.Version, latest *uint64) { *latest = 3 })
}
