package pgstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// Tables follow replica sets: every slot of a table has the same owners,
// about minTables tables in all, each about as large, and no table empty;
// without a ring, or with too many replica sets, slot ranges.
func TestLayoutFollowsReplicaSets(t *testing.T) {
	f := func(nodes, replicas, minTables, wantTables int, ranges bool) {
		t.Helper()
		var a *ring.Assignment
		if nodes > 0 {
			names := make([]string, nodes)
			for i := range names {
				names[i] = fmt.Sprintf("n%d", i+1)
			}
			var err error
			if a, err = ring.Assign(names, replicas, ring.DefaultSlots, nil); err != nil {
				t.Fatal(err)
			}
		}
		partOf, tables := layoutFor(a, ring.DefaultSlots, minTables)
		if tables != wantTables {
			t.Fatalf("%d nodes, R=%d: %d tables, want %d", nodes, replicas, tables, wantTables)
		}
		owners := make([]string, tables)
		size := make([]int, tables)
		for s, p := range partOf {
			if p < 0 || p >= tables {
				t.Fatalf("slot %d in table %d of %d", s, p, tables)
			}
			size[p]++
			if ranges {
				if want := s / (ring.DefaultSlots / minTables); p != want {
					t.Fatalf("slot %d in table %d, want the range layout's %d", s, p, want)
				}
				continue
			}
			o := slices.Clone(a.Owners(s))
			slices.Sort(o)
			if k := fmt.Sprint(o); owners[p] == "" {
				owners[p] = k
			} else if owners[p] != k {
				t.Fatalf("table %d holds slots of owners %s and %s", p, owners[p], k)
			}
		}
		if slices.Contains(size, 0) {
			t.Fatalf("an empty table: sizes %v", size)
		}
	}
	f(0, 0, 16, 16, true)    // no ring yet
	f(3, 2, 16, 18, false)   // 3 replica sets, 6 tables each
	f(3, 3, 16, 16, false)   // 1 replica set
	f(1, 1, 16, 16, false)   // a single node
	f(4, 2, 16, 18, false)   // 6 replica sets, 3 tables each
	f(11, 2, 16, 55, false)  // 55 replica sets, a table each
	f(20, 2, 16, 16, true)   // 190 replica sets: beyond MaxTables
	f(3, 2, 1, 3, false)     // one table a replica set at least
	f(2, 1, 4096, 64, false) // MaxTables bounds the split too
}

// A version imported under a ring is pulled by each node from whole tables
// holding its slots only, and a version whose tables were written before
// (no table per slot recorded: an upgraded database) from slot ranges.
func TestPullPlanReadsWholeTablesOfTheRing(t *testing.T) {
	s := mustOpen(t, testConfig(localsvctest.Database(t)))
	ctx := context.Background()
	names := []string{"n1", "n2", "n3"}
	if _, err := s.SeedRing(ctx, members(names...), 2); err != nil {
		t.Fatal(err)
	}
	recs := randomRecords(rand.New(rand.NewPCG(3, 4)), 30_000)
	commitAll(t, s, "x", recs, 2)
	v, err := s.Version(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v.Partitions != 18 {
		t.Fatalf("version in %d tables, want 18 (3 replica sets of 6)", v.Partitions)
	}
	m, err := s.Membership(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := m.Serving.Assignment
	pull := func(plan []PullPart, held []bool) map[promotion.ID]promotion.Record {
		t.Helper()
		got := map[promotion.ID]promotion.Record{}
		for _, part := range plan {
			err := s.Pull(ctx, 1, part, func(slot int, r *promotion.Record) error {
				if !held[slot] || ring.Slot(r.ID, a.Slots()) != slot {
					return fmt.Errorf("pulled slot %d for id %s", slot, r.ID)
				}
				got[r.ID] = *r
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		return got
	}
	for _, name := range names {
		held := ring.Held(a, name, a.Slots())
		var slots []int
		for sl, h := range held {
			if h {
				slots = append(slots, sl)
			}
		}
		plan, err := s.PullPlan(ctx, v, slots)
		if err != nil {
			t.Fatal(err)
		}
		if len(plan) != 12 {
			t.Fatalf("%s pulls %d tables, want 12 (2 replica sets of 6)", name, len(plan))
		}
		for _, part := range plan {
			if !part.Whole {
				t.Fatalf("%s pulls table %d filtered, want it whole", name, part.Table)
			}
		}
		got := pull(plan, held)
		want := 0
		for _, r := range recs {
			if held[ring.Slot(r.ID, a.Slots())] {
				want++
				if got[r.ID] != r {
					t.Fatalf("%s: id %s pulled as %+v, want %+v", name, r.ID, got[r.ID], r)
				}
			}
		}
		if len(got) != want {
			t.Fatalf("%s pulled %d rows, want %d", name, len(got), want)
		}
	}

	// One slot of a table: filtered.
	plan, err := s.PullPlan(ctx, v, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || plan[0].Whole || !slices.Equal(plan[0].Slots, []int{7}) {
		t.Fatalf("plan of slot 7: %+v, want one filtered table", plan)
	}

	// An upgraded database: the version's slots have no table recorded,
	// so its tables are read as slot ranges.
	if _, err := s.pool.Exec(ctx, "UPDATE dataset_slots SET part = NULL WHERE version = 1"); err != nil {
		t.Fatal(err)
	}
	v.Partitions = 16
	plan, err = s.PullPlan(ctx, v, []int{0, 1, 300, 4095})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 3 || plan[0].Table != 0 || plan[1].Table != 1 || plan[2].Table != 15 ||
		!slices.Equal(plan[0].Slots, []int{0, 1}) || plan[0].Whole {
		t.Fatalf("plan of a version laid out in slot ranges: %+v", plan)
	}
}

// OnDurable runs once the version is committed and before Commit drops
// the versions beyond retention, which the ingest service relies on to
// announce a version without waiting for that.
func TestOnDurableRunsBeforeRetention(t *testing.T) {
	cfg := testConfig(localsvctest.Database(t))
	cfg.KeepVersions = 1
	s := mustOpen(t, cfg)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	for v := uint64(1); v <= 2; v++ {
		b, err := s.Begin(ctx, "x", 1)
		if err != nil {
			t.Fatal(err)
		}
		calls := 0
		var durableErr error
		b.OnDurable(func() {
			calls++
			latest, ok, err := s.Latest(ctx)
			switch {
			case err != nil:
				durableErr = err
			case !ok || latest.Version != v:
				durableErr = fmt.Errorf("latest committed version %d (%v), want %d", latest.Version, ok, v)
			case v == 2:
				// Version 1, beyond retention now, is not dropped yet.
				old, err := s.Version(ctx, 1)
				if err == nil && old.State != "committed" {
					err = fmt.Errorf("version 1 is %s, want committed still", old.State)
				}
				durableErr = err
			}
		})
		addAll(t, b, randomRecords(rng, 1000), 1)
		if _, _, err := b.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if calls != 1 || durableErr != nil {
			t.Fatalf("version %d: OnDurable ran %d times (%v), want once with the version committed", v, calls, durableErr)
		}
	}
	if old, err := s.Version(ctx, 1); err != nil || old.State != "dropped" {
		t.Fatalf("version 1 after the commit of 2: %+v %v, want dropped by retention", old, err)
	}
}
