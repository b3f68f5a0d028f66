package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/promotion-service/promo/ring"
)

// This file is the cluster's membership: versioned rings in table rings,
// changes to them (one at a time, two-phase), and the read nodes' reports
// that they prepared the slots of a ring being prepared.

// Errors of membership changes, which callers branch on.
var (
	// ErrNoRing: no ring was seeded yet.
	ErrNoRing = errors.New("pgstore: the cluster has no ring yet")
	// ErrChangeRunning: another membership change is being prepared.
	ErrChangeRunning = errors.New("pgstore: another membership change is running")
	// ErrTooFewNodes: the change would leave fewer nodes than replicas.
	ErrTooFewNodes = errors.New("pgstore: fewer nodes than replicas would remain")
	// ErrBadMember: a malformed or duplicate name or URL.
	ErrBadMember = errors.New("pgstore: bad member")
	// ErrUnknownMember: the node to remove is not a member.
	ErrUnknownMember = errors.New("pgstore: no such member")
)

// Ring states in table rings.
const (
	ringPreparing = "preparing"
	ringActive    = "active"
)

// ringLock serializes membership changes and ring activations.
const ringLockSQL = "LOCK TABLE rings IN SHARE ROW EXCLUSIVE MODE"

// SeedRing records members as ring version 1 when the cluster has no ring
// yet, and reports whether it did: a static --nodes list only seeds an
// empty database. Concurrent seeds record one ring.
func (s *Store) SeedRing(ctx context.Context, members []ring.Node, replicas int) (bool, error) {
	if err := checkMembers(members); err != nil {
		return false, err
	}
	a, err := ring.Assign(ring.Names(members), replicas, s.cfg.Slots, nil)
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrTooFewNodes, err)
	}
	seeded := false
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, ringLockSQL); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM rings)").Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		seeded = true
		return insertRing(ctx, tx, 1, ringActive, members, a)
	})
	return seeded, unavailable(err)
}

func insertRing(ctx context.Context, tx pgx.Tx, version uint64, state string, members []ring.Node, a *ring.Assignment) error {
	type member struct {
		Name string `json:"name"`
		URL  string `json:"url"`
	}
	ms := make([]member, len(members))
	for i, m := range members {
		ms[i] = member{m.Name, m.URL}
	}
	mj, err := json.Marshal(ms)
	if err != nil {
		return err
	}
	aj, err := json.Marshal(a.ToJSON().Assignment)
	if err != nil {
		return err
	}
	activated := "NULL"
	if state == ringActive {
		activated = "now()"
	}
	_, err = tx.Exec(ctx, `INSERT INTO rings (version, state, replicas, slots, members, assignment, activated_at)
		VALUES ($1, $2, $3, $4, $5, $6, `+activated+`)`, version, state, a.Replicas(), a.Slots(), mj, aj)
	return err
}

// checkMembers checks names and URLs, and that both are unique.
func checkMembers(members []ring.Node) error {
	names, urls := map[string]bool{}, map[string]bool{}
	for _, m := range members {
		if _, err := ring.ParseNodes(m.Name+"="+m.URL, true); err != nil || strings.Contains(m.Name+m.URL, ",") {
			return fmt.Errorf("%w: %q=%q is not a valid name and http(s) URL", ErrBadMember, m.Name, m.URL)
		}
		if names[m.Name] {
			return fmt.Errorf("%w: node %s is listed twice", ErrBadMember, m.Name)
		}
		u := normalURL(m.URL)
		if urls[u] {
			return fmt.Errorf("%w: URL %s is listed twice", ErrBadMember, m.URL)
		}
		names[m.Name], urls[u] = true, true
	}
	return nil
}

func normalURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return strings.ToLower(u.Scheme + "://" + u.Host)
}

// RingHead returns the versions of the serving ring and of the one being
// prepared (0 when none), and the number of reports for the latter: a
// cheap poll that tells a node or the proxy when to load the membership.
func (s *Store) RingHead(ctx context.Context) (serving, pending uint64, reports int, err error) {
	err = s.pool.QueryRow(ctx, `SELECT
		COALESCE((SELECT max(version) FROM rings WHERE state = 'active'), 0),
		COALESCE((SELECT version FROM rings WHERE state = 'preparing'), 0),
		(SELECT count(*) FROM ring_prepared p JOIN rings r ON r.version = p.ring_version WHERE r.state = 'preparing')`).
		Scan(&serving, &pending, &reports)
	return serving, pending, reports, unavailable(err)
}

// Membership returns the serving ring, the one being prepared if any, and
// the members that reported it prepared for the active dataset version.
// It fails with ErrNoRing before the ring is seeded.
func (s *Store) Membership(ctx context.Context) (ring.Membership, error) {
	var m ring.Membership
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		m, err = loadMembership(ctx, tx)
		return err
	})
	if err != nil && !errors.Is(err, ErrNoRing) && !errors.Is(err, ErrBadMember) {
		err = unavailable(err)
	}
	return m, err
}

func loadMembership(ctx context.Context, tx pgx.Tx) (ring.Membership, error) {
	var m ring.Membership
	rows, err := tx.Query(ctx, `SELECT version, state, replicas, slots, members, assignment FROM rings
		WHERE version = (SELECT max(version) FROM rings WHERE state = 'active') OR state = 'preparing' ORDER BY version`)
	if err != nil {
		return m, err
	}
	defer rows.Close()
	found := false
	for rows.Next() {
		var v ring.Version
		var state string
		var replicas, slots int
		var members []struct {
			Name string `json:"name"`
			URL  string `json:"url"`
		}
		var assignment [][]string
		if err := rows.Scan(&v.Version, &state, &replicas, &slots, &members, &assignment); err != nil {
			return m, err
		}
		for _, mm := range members {
			v.Members = append(v.Members, ring.Node{Name: mm.Name, URL: mm.URL})
		}
		if v.Assignment, err = ring.FromJSON(ring.JSON{Slots: slots, Assignment: assignment}); err != nil {
			return m, fmt.Errorf("%w: ring version %d: %v", ErrBadMember, v.Version, err)
		}
		if state == ringActive {
			m.Serving, found = v, true
		} else {
			p := v
			m.Pending = &p
		}
	}
	if err := rows.Err(); err != nil {
		return m, err
	}
	if !found {
		return m, ErrNoRing
	}
	if m.Pending != nil {
		active, err := activeVersion(ctx, tx)
		if err != nil {
			return m, err
		}
		rows, err := tx.Query(ctx, "SELECT node FROM ring_prepared WHERE ring_version = $1 AND dataset_version = $2 ORDER BY node",
			m.Pending.Version, active)
		if err != nil {
			return m, err
		}
		if m.Prepared, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return m, err
		}
	}
	return m, nil
}

// activeVersion returns the dataset version the cluster serves, 0 when none.
func activeVersion(ctx context.Context, tx pgx.Tx) (uint64, error) {
	var v uint64
	err := tx.QueryRow(ctx, `SELECT COALESCE((SELECT version FROM activation), 0)`).Scan(&v)
	return v, err
}

// AddNode starts the change that adds node to the ring, and returns the
// membership with the change pending. Adding a node that is already a
// member with the same URL changes nothing, and adding back the node a
// pending change removes reverts that change. It fails with ErrBadMember
// for a malformed or duplicate name or URL and ErrChangeRunning while
// another change runs.
func (s *Store) AddNode(ctx context.Context, node ring.Node) (ring.Membership, error) {
	return s.change(ctx, func(m ring.Membership) ([]ring.Node, bool, error) {
		if m.Pending != nil {
			if slices.Contains(m.Pending.Members, node) {
				return nil, false, nil // already joining
			}
			if slices.Contains(m.Serving.Members, node) {
				return nil, true, nil // it was leaving: revert
			}
			return nil, false, fmt.Errorf("%w: ring version %d is being prepared", ErrChangeRunning, m.Pending.Version)
		}
		if slices.Contains(m.Serving.Members, node) {
			return nil, false, nil
		}
		next := append(slices.Clone(m.Serving.Members), node)
		return next, false, checkMembers(next)
	})
}

// RemoveNode starts the change that removes the node named name, and
// returns the membership with the change pending. Removing the node that
// a pending change adds reverts that change (a joiner that died). It fails
// with ErrUnknownMember, ErrChangeRunning while another change runs, and
// ErrTooFewNodes when fewer nodes than replicas would remain.
func (s *Store) RemoveNode(ctx context.Context, name string) (ring.Membership, error) {
	is := func(n ring.Node) bool { return n.Name == name }
	return s.change(ctx, func(m ring.Membership) ([]ring.Node, bool, error) {
		inServing := slices.ContainsFunc(m.Serving.Members, is)
		if m.Pending != nil {
			inPending := slices.ContainsFunc(m.Pending.Members, is)
			switch {
			case inPending && !inServing:
				return nil, true, nil // the joiner leaves: revert
			case inServing && !inPending:
				return nil, false, nil // already leaving
			}
			return nil, false, fmt.Errorf("%w: ring version %d is being prepared", ErrChangeRunning, m.Pending.Version)
		}
		if !inServing {
			return nil, false, fmt.Errorf("%w: %q", ErrUnknownMember, name)
		}
		next := slices.DeleteFunc(slices.Clone(m.Serving.Members), is)
		if len(next) < m.Serving.Assignment.Replicas() {
			return nil, false, fmt.Errorf("%w: %d nodes would remain for %d replicas", ErrTooFewNodes, len(next), m.Serving.Assignment.Replicas())
		}
		return next, false, nil
	})
}

// change runs decide on the current membership, under the ring lock, and
// records what it returns: a new member list to prepare, a revert of the
// pending change, or nothing (nil, false).
func (s *Store) change(ctx context.Context, decide func(ring.Membership) (next []ring.Node, revert bool, err error)) (ring.Membership, error) {
	var out ring.Membership
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, ringLockSQL); err != nil {
			return err
		}
		m, err := loadMembership(ctx, tx)
		if err != nil {
			return err
		}
		next, revert, err := decide(m)
		if err != nil {
			return err
		}
		switch {
		case revert:
			if _, err := tx.Exec(ctx, "UPDATE rings SET state = 'cancelled', ended_at = now() WHERE version = $1", m.Pending.Version); err != nil {
				return err
			}
		case next != nil:
			a, err := ring.Assign(ring.Names(next), m.Serving.Assignment.Replicas(), m.Serving.Assignment.Slots(), m.Serving.Assignment)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrTooFewNodes, err)
			}
			var top uint64
			if err := tx.QueryRow(ctx, "SELECT max(version) FROM rings").Scan(&top); err != nil {
				return err
			}
			if err := insertRing(ctx, tx, top+1, ringPreparing, next, a); err != nil {
				return err
			}
		}
		out, err = loadMembership(ctx, tx)
		return err
	})
	if err != nil && !isChangeError(err) {
		err = unavailable(err)
	}
	return out, err
}

func isChangeError(err error) bool {
	for _, e := range []error{ErrNoRing, ErrChangeRunning, ErrTooFewNodes, ErrBadMember, ErrUnknownMember} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// ReportRingPrepared records that node holds every slot of ring version
// ringVersion for dataset version (the active one; 0 when none is).
func (s *Store) ReportRingPrepared(ctx context.Context, ringVersion uint64, node string, version uint64) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO ring_prepared (ring_version, node, dataset_version) VALUES ($1, $2, $3)
		ON CONFLICT (ring_version, node) DO UPDATE SET dataset_version = EXCLUDED.dataset_version, updated_at = now()`,
		ringVersion, node, version)
	return unavailable(err)
}

// ActivateRing makes the ring being prepared the serving one when every
// one of its members reported it prepared for the active dataset version,
// in one transaction, and returns the version it activated (0 when it did
// not). Any read node may call it; it is idempotent.
func (s *Store) ActivateRing(ctx context.Context) (uint64, error) {
	var activated uint64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var pending uint64
		err := tx.QueryRow(ctx, "SELECT version FROM rings WHERE state = 'preparing'").Scan(&pending)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, ringLockSQL); err != nil {
			return err
		}
		m, err := loadMembership(ctx, tx)
		if err != nil || m.Pending == nil || m.Pending.Version != pending {
			return err
		}
		for _, n := range m.Pending.Members {
			if !slices.Contains(m.Prepared, n.Name) {
				return nil
			}
		}
		if _, err := tx.Exec(ctx, "UPDATE rings SET state = 'retired', ended_at = now() WHERE state = 'active'"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE rings SET state = 'active', activated_at = now() WHERE version = $1", pending); err != nil {
			return err
		}
		activated = pending
		return nil
	})
	return activated, unavailable(err)
}
