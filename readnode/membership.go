package readnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/promotion-service/promo/pebblestore"
	"github.com/promotion-service/promo/ring"
)

// This file follows the cluster's membership in PostgreSQL: the serving
// ring decides which slots the node answers, and during a change the node
// also pulls the slots it gains in the ring being prepared, reports them
// prepared, and keeps answering the slots it loses for DropGrace after the
// new ring serves. It also keeps, per local dataset version, the slots
// that version holds (a version gains slots when the ring changes).

// gate is what lookups read, swapped whole: the serving ring, the URLs of
// its nodes and the slots this node answers.
type gate struct {
	ring   *ring.Assignment // nil before the ring is known
	urls   map[string]string
	serves []bool
}

// ringState is the reconcile loop's view of the membership.
type ringState struct {
	mem        *ring.Membership
	head       [3]uint64 // serving, pending, reports: reload when it changes
	prevHeld   []bool    // slots held in the ring that served before this one
	graceUntil time.Time // prevHeld is answered until then
	reported   [2]uint64 // the last (ring, dataset version) reported prepared
	joinAt     time.Time // the next attempt to join
	joinWait   time.Duration
}

// refreshRing reloads the membership when it changed, joins the ring when
// configured to, and tracks the grace of the slots a ring switch took.
func (n *Node) refreshRing(ctx context.Context, force bool) error {
	st := &n.rs
	serving, pending, reports, err := n.pg.RingHead(ctx)
	if err != nil {
		return err
	}
	head := [3]uint64{serving, pending, uint64(reports)}
	if serving == 0 {
		return nil // not seeded yet: nothing to serve
	}
	if force || st.mem == nil || head != st.head {
		m, err := n.pg.Membership(ctx)
		if err != nil {
			return err
		}
		if st.mem != nil && st.mem.Serving.Version != m.Serving.Version {
			st.prevHeld = ring.Held(st.mem.Serving.Assignment, n.cfg.Name, n.cfg.Slots)
			st.graceUntil = time.Now().Add(n.cfg.DropGrace)
			n.log.Info("the cluster serves a new ring", "ring_version", m.Serving.Version,
				"slots_held", count(ring.Held(m.Serving.Assignment, n.cfg.Name, n.cfg.Slots)), "drop_grace", n.cfg.DropGrace)
		}
		if m.Serving.Assignment.Slots() != n.cfg.Slots {
			return fmt.Errorf("the ring has %d slots, this node %d", m.Serving.Assignment.Slots(), n.cfg.Slots)
		}
		st.mem, st.head = &m, head
		// Gate lookups by the new ring before /cluster describes it: a
		// client that learns the ring from this node must not be told 421
		// for a slot the node holds in it.
		n.updateGate()
		n.membership.Store(&m)
	}
	if n.cfg.Join {
		n.join(ctx)
	}
	return nil
}

// join adds this node to the ring unless it is a member of the serving or
// the pending one; while another change runs it tries again later, with a
// backoff from 1s to 30s.
func (n *Node) join(ctx context.Context) {
	st := &n.rs
	is := func(m ring.Node) bool { return m.Name == n.cfg.Name }
	if slices.ContainsFunc(st.mem.Serving.Members, is) || (st.mem.Pending != nil && slices.ContainsFunc(st.mem.Pending.Members, is)) {
		st.joinWait = 0
		return
	}
	if time.Now().Before(st.joinAt) {
		return
	}
	m, err := n.pg.AddNode(ctx, ring.Node{Name: n.cfg.Name, URL: n.cfg.URL})
	if err != nil {
		st.joinWait = min(max(2*st.joinWait, time.Second), 30*time.Second)
		st.joinAt = time.Now().Add(st.joinWait)
		n.log.Warn("cannot join the ring yet; trying again", "err", err, "retry_in", st.joinWait)
		return
	}
	n.log.Info("joining the ring", "url", n.cfg.URL)
	st.mem, st.head = &m, [3]uint64{}
	n.membership.Store(&m)
}

// wantSlots returns the slots to hold in every version the node pulls:
// those of the serving ring and of the ring being prepared.
func (n *Node) wantSlots() []bool {
	st := &n.rs
	if st.mem == nil {
		return make([]bool, n.cfg.Slots)
	}
	want := ring.Held(st.mem.Serving.Assignment, n.cfg.Name, n.cfg.Slots)
	if st.mem.Pending != nil {
		for s, h := range ring.Held(st.mem.Pending.Assignment, n.cfg.Name, n.cfg.Slots) {
			want[s] = want[s] || h
		}
	}
	return want
}

// reportRing reports the pending ring prepared once the node holds all
// its slots of it in the active version, and in the newest committed one
// when it has that one too; then it tries to activate the ring.
func (n *Node) reportRing(ctx context.Context, active uint64, latest uint64) error {
	st := &n.rs
	if st.mem == nil || st.mem.Pending == nil {
		return nil
	}
	p := st.mem.Pending
	if p.Assignment.Index(n.cfg.Name) >= 0 {
		held := ring.Held(p.Assignment, n.cfg.Name, n.cfg.Slots)
		ok := active == 0 || n.hasSlots(active, held)
		if ok && latest > active && n.complete(latest) {
			ok = n.hasSlots(latest, held)
		}
		if ok && st.reported != [2]uint64{p.Version, active} {
			if err := n.pg.ReportRingPrepared(ctx, p.Version, n.cfg.Name, active); err != nil {
				return err
			}
			st.reported = [2]uint64{p.Version, active}
			n.log.Info("prepared every slot of the pending ring", "ring_version", p.Version, "version", active,
				"slots", count(held))
		}
	}
	v, err := n.pg.ActivateRing(ctx)
	if err != nil {
		return err
	}
	if v > 0 {
		n.log.Info("every member prepared the pending ring: activated it for the cluster", "ring_version", v)
		return n.refreshRing(ctx, true)
	}
	return nil
}

// updateGate recomputes the slots lookups answer: those of the serving
// ring, those the pending ring gives the node, and those a ring switch
// took from it until DropGrace passed, of which the serving local version
// holds the rows. Answering the pending ring's slots once they are pulled
// closes a window at the switch: a client that learned the new ring from
// a node that activated it would otherwise be told 421 by a gainer that
// has not seen the switch yet (one busy pulling the next version polls
// only after the pull), and by both replicas of a slot that two gainers
// share.
func (n *Node) updateGate() {
	st := &n.rs
	if st.mem == nil {
		return
	}
	cur, ok := n.store.Current()
	serves := make([]bool, n.cfg.Slots)
	if ok {
		local := n.localSlots(cur.Version)
		held := ring.Held(st.mem.Serving.Assignment, n.cfg.Name, n.cfg.Slots)
		if p := st.mem.Pending; p != nil {
			for s, h := range ring.Held(p.Assignment, n.cfg.Name, n.cfg.Slots) {
				held[s] = held[s] || h
			}
		}
		grace := st.prevHeld != nil && time.Now().Before(st.graceUntil)
		if !grace {
			st.prevHeld = nil
		}
		for s := range serves {
			serves[s] = local[s] && (held[s] || (grace && st.prevHeld[s]))
		}
	}
	old := n.gate.Load()
	if old.ring == st.mem.Serving.Assignment && slices.Equal(old.serves, serves) {
		return
	}
	urls := map[string]string{}
	for _, m := range st.mem.Serving.Members {
		urls[m.Name] = m.URL
	}
	n.gate.Store(&gate{ring: st.mem.Serving.Assignment, urls: urls, serves: serves})
}

// complete reports whether the local store holds version v complete
// (whatever its slots).
func (n *Node) complete(v uint64) bool {
	for _, vi := range n.store.Versions() {
		if vi.Version == v && (vi.State == pebblestore.StateReady || vi.State == pebblestore.StateActive) {
			return true
		}
	}
	return false
}

// hasSlots reports whether the local version v is complete and holds
// every slot of want.
func (n *Node) hasSlots(v uint64, want []bool) bool {
	if !n.complete(v) {
		return false
	}
	local := n.localSlots(v)
	for s, w := range want {
		if w && !local[s] {
			return false
		}
	}
	return true
}

// localSlots returns the slots the local version v holds. A version
// without a record (pulled before rings changed) holds the slots of the
// serving ring.
func (n *Node) localSlots(v uint64) []bool {
	n.localMu.Lock()
	defer n.localMu.Unlock()
	if l, ok := n.local[v]; ok {
		return l
	}
	b, err := os.ReadFile(n.slotsFile(v))
	if err == nil && len(b) == (n.cfg.Slots+7)/8 {
		l := make([]bool, n.cfg.Slots)
		for s := range l {
			l[s] = b[s/8]&(1<<(s%8)) != 0
		}
		n.local[v] = l
		return l
	}
	var a *ring.Assignment
	if n.rs.mem != nil {
		a = n.rs.mem.Serving.Assignment
	}
	return ring.Held(a, n.cfg.Name, n.cfg.Slots)
}

// addLocalSlots records that the local version v holds slots too,
// durably, before the node relies on it.
func (n *Node) addLocalSlots(v uint64, slots []bool, replace bool) error {
	cur := n.localSlots(v)
	next := make([]bool, n.cfg.Slots)
	b := make([]byte, (n.cfg.Slots+7)/8)
	for s := range next {
		next[s] = slots[s] || (!replace && cur[s])
		if next[s] {
			b[s/8] |= 1 << (s % 8)
		}
	}
	if err := os.MkdirAll(filepath.Dir(n.slotsFile(v)), 0o755); err != nil {
		return err
	}
	tmp := n.slotsFile(v) + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, n.slotsFile(v))
	}
	if err != nil {
		return fmt.Errorf("cannot record the slots of version %d: %w", v, err)
	}
	n.localMu.Lock()
	n.local[v] = next
	n.localMu.Unlock()
	return nil
}

func (n *Node) slotsFile(v uint64) string {
	return filepath.Join(n.cfg.DataDir, "slots", "v"+strconv.FormatUint(v, 10))
}

// forgetLocalSlots removes the records of versions the store no longer
// keeps.
func (n *Node) forgetLocalSlots() {
	kept := map[uint64]bool{}
	for _, vi := range n.store.Versions() {
		kept[vi.Version] = true
	}
	entries, err := os.ReadDir(filepath.Join(n.cfg.DataDir, "slots"))
	if err != nil {
		return
	}
	for _, e := range entries {
		v, err := strconv.ParseUint(strings.TrimPrefix(e.Name(), "v"), 10, 64)
		if err != nil || kept[v] {
			continue
		}
		_ = os.Remove(filepath.Join(n.cfg.DataDir, "slots", e.Name()))
		n.localMu.Lock()
		delete(n.local, v)
		n.localMu.Unlock()
	}
}

func count(b []bool) int {
	c := 0
	for _, x := range b {
		if x {
			c++
		}
	}
	return c
}

// recordUnlabelledSlots records, for each local version pulled before its
// slots were recorded (a store from before rings could change), the slots
// of the serving ring, once: they are what it was pulled for.
func (n *Node) recordUnlabelledSlots() error {
	if n.rs.mem == nil {
		return nil
	}
	held := ring.Held(n.rs.mem.Serving.Assignment, n.cfg.Name, n.cfg.Slots)
	for _, vi := range n.store.Versions() {
		if _, err := os.Stat(n.slotsFile(vi.Version)); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := n.addLocalSlots(vi.Version, held, true); err != nil {
			return err
		}
	}
	return nil
}
