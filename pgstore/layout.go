package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/promotion-service/promo/ring"
)

// This file lays a version's rows out in its tables. A read node pulls
// the slots it holds; with the tables cut along the ring's replica sets,
// that is a few whole tables, read sequentially and without a filter,
// instead of the rows of every table tested slot by slot.

// MaxTables bounds the tables of one version, each filled by a COPY
// stream of its own: a ring with more replica sets than this (more than
// 11 nodes at 2 replicas) gets contiguous slot ranges.
const MaxTables = 64

// layoutFor returns the table of every slot for a version imported while
// a is the ring (nil: none yet): each table holds slots of one replica set
// (the same owners, in any order), so a node's slots fill whole tables.
// A replica set's slots are split, in slot order, into as many tables as
// bring the total to about minTables, so that the import's COPY streams
// and the pulls run in parallel. Without a ring, a ring of other slots, or
// more than MaxTables replica sets, table i holds the contiguous slot
// range of partition i of minTables (the layout before replica sets).
func layoutFor(a *ring.Assignment, slots, minTables int) (partOf []int, tables int) {
	partOf = make([]int, slots)
	if a != nil && a.Slots() == slots {
		key := func(s int) string {
			o := slices.Clone(a.Owners(s))
			slices.Sort(o)
			return fmt.Sprint(o)
		}
		index := map[string]int{}
		var groups [][]int
		for s := range slots {
			k := key(s)
			g, ok := index[k]
			if !ok {
				g = len(groups)
				index[k] = g
				groups = append(groups, nil)
			}
			groups[g] = append(groups[g], s)
		}
		if len(groups) <= MaxTables {
			split := max(1, min((minTables+len(groups)-1)/len(groups), MaxTables/len(groups)))
			for _, g := range groups {
				k := min(split, len(g))
				for i, s := range g {
					partOf[s] = tables + i*k/len(g)
				}
				tables += k
			}
			return partOf, tables
		}
	}
	per := slots / minTables
	for s := range partOf {
		partOf[s] = s / per
	}
	return partOf, minTables
}

// ringForLayout returns the ring that a version imported now is laid out
// for: the one being prepared, when a membership change runs (its nodes
// pull what it gives them), else the serving one; nil before the ring is
// seeded.
func (s *Store) ringForLayout(ctx context.Context) (*ring.Assignment, error) {
	m, err := s.Membership(ctx)
	if errors.Is(err, ErrNoRing) || errors.Is(err, ErrBadMember) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if m.Pending != nil {
		return m.Pending.Assignment, nil
	}
	return m.Serving.Assignment, nil
}

// PullPart is one table of a version to pull: its number, and the slots
// wanted from it. Whole says they are all the slots it holds, so it is
// read without a filter.
type PullPart struct {
	Table int
	Slots []int
	Whole bool
	// RingSlots is the version's slot count (Version.Slots), when known:
	// a Whole part of a table of the row form (written before groups) is
	// then read without its slot column and each row's slot is computed
	// from its id (ring.Slot), as the import computed it. There the column
	// cost PostgreSQL a send function per row, ~20% of the COPY out of the
	// other three (measured here); a group's slot is one field for all its
	// rows, and always read.
	RingSlots int
	// Form is the version's record form (Version.RecordForm): how Pull
	// reads the table.
	Form int
}

// PullPlan returns the tables of version v holding the given slots, with
// the slots wanted from each, in table order. Versions written before the
// tables followed replica sets (no table recorded per slot) hold
// contiguous slot ranges.
func (s *Store) PullPlan(ctx context.Context, v Version, slots []int) ([]PullPart, error) {
	if v.Partitions < 1 || v.Slots < 1 {
		return nil, fmt.Errorf("pgstore: version %d has %d slots in %d tables", v.Version, v.Slots, v.Partitions)
	}
	partOf := make([]int, v.Slots)
	rows, err := s.pool.Query(ctx, "SELECT slot, part FROM dataset_slots WHERE version = $1", v.Version)
	if err != nil {
		return nil, unavailable(err)
	}
	seen := 0
	for rows.Next() {
		var slot int
		var part *int
		if err := rows.Scan(&slot, &part); err != nil {
			rows.Close()
			return nil, err
		}
		p := -1
		switch {
		case part != nil:
			p = *part
		case v.Slots%v.Partitions == 0:
			p = slot / (v.Slots / v.Partitions)
		}
		if slot < 0 || slot >= v.Slots || p < 0 || p >= v.Partitions {
			rows.Close()
			return nil, fmt.Errorf("pgstore: version %d: slot %d in table %d of %d", v.Version, slot, p, v.Partitions)
		}
		partOf[slot] = p
		seen++
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(err)
	}
	if seen != v.Slots {
		return nil, fmt.Errorf("pgstore: version %d: %d of its %d slots have a table", v.Version, seen, v.Slots)
	}
	inTable := make([]int, v.Partitions)
	for _, p := range partOf {
		inTable[p]++
	}
	byTable := map[int][]int{}
	for _, sl := range slots {
		if sl < 0 || sl >= v.Slots {
			return nil, fmt.Errorf("pgstore: slot %d out of range for version %d", sl, v.Version)
		}
		byTable[partOf[sl]] = append(byTable[partOf[sl]], sl)
	}
	plan := make([]PullPart, 0, len(byTable))
	for t, ss := range byTable {
		slices.Sort(ss)
		ss = slices.Compact(ss)
		plan = append(plan, PullPart{Table: t, Slots: ss, Whole: len(ss) == inTable[t], RingSlots: v.Slots, Form: v.RecordForm})
	}
	slices.SortFunc(plan, func(a, b PullPart) int { return a.Table - b.Table })
	return plan, nil
}
