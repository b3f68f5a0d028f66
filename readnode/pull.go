package readnode

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/promotion-service/promo/pebblestore"
	"github.com/promotion-service/promo/pgstore"
	"github.com/promotion-service/promo/promotion"
)

// pull builds version v of slots (the ones this node holds): it streams
// them from PostgreSQL partition by partition (only the tables holding
// them), straight into the store's sorted SSTables, checks every slot's
// row count and checksum against the ones ingest recorded, and prepares the
// version without serving it. When the store has the version already (the
// node gained slots in a ring change), it pulls only the slots the local
// version lacks and adds them to it. A pull that fails or dies leaves
// nothing: the store drops an unfinished version, or what an unfinished
// extension wrote.
func (n *Node) pull(ctx context.Context, v pgstore.Version, slots []bool) error {
	if v.Slots != n.cfg.Slots {
		return fmt.Errorf("version %d has %d slots, this cluster %d", v.Version, v.Slots, n.cfg.Slots)
	}
	start := time.Now()
	extend := n.complete(v.Version)
	if extend {
		local := n.localSlots(v.Version)
		missing := make([]bool, len(slots))
		for s := range slots {
			missing[s] = slots[s] && !local[s]
		}
		slots = missing
	}
	plan, err := n.planPull(ctx, v, slots)
	if err != nil {
		return err
	}
	workers := min(n.cfg.PullWorkers, max(len(plan.parts), 1))
	var b *pebblestore.Batch
	if extend {
		b, err = n.store.BeginExtend(ctx, v.Version, fmt.Sprintf("pull of %d more slots of version %d", len(plan.slots), v.Version), workers)
	} else {
		b, err = n.store.BeginVersion(ctx, v.Version, fmt.Sprintf("pull of version %d", v.Version), workers)
	}
	if errors.Is(err, pebblestore.ErrExists) {
		return nil
	}
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			b.Abort()
		}
	}()
	got, err := n.streamPartitions(ctx, v, plan, b, workers)
	if err != nil {
		return err
	}
	copied := time.Since(start)
	total, err := n.verifySums(ctx, v.Version, plan.slots, got)
	if err != nil {
		return err
	}
	if _, _, err := b.Prepare(ctx); err != nil {
		return err
	}
	committed = true
	if err := n.addLocalSlots(v.Version, slots, !extend); err != nil {
		return err
	}
	el := time.Since(start)
	rate := float64(total) / el.Seconds()
	n.pulledRows.Add(int(total))
	n.pullRate.Store(math.Float64bits(rate))
	n.log.Info("prepared version", "version", v.Version, "extended", extend, "rows", total, "slots", len(plan.slots),
		"partitions", len(plan.parts), "elapsed", el.Round(time.Millisecond), "copy", copied.Round(time.Millisecond), "rows_per_second", int(rate))
	return n.pg.Report(ctx, n.cfg.Name, v.Version, pgstore.NodePrepared)
}

// pullPlan is what a node pulls of a version: the slots it holds, grouped
// by the PostgreSQL table that stores them, so that it reads those tables
// only (whole, when the version's tables follow the ring's replica sets).
type pullPlan struct {
	parts []pgstore.PullPart
	slots []int // every held slot, ascending
}

func (n *Node) planPull(ctx context.Context, v pgstore.Version, slots []bool) (pullPlan, error) {
	var plan pullPlan
	for s, held := range slots {
		if held {
			plan.slots = append(plan.slots, s)
		}
	}
	if len(plan.slots) == 0 {
		return plan, nil
	}
	var err error
	plan.parts, err = n.pg.PullPlan(ctx, v, plan.slots)
	return plan, err
}

// streamPartitions copies the partitions of plan into b, workers of them at
// a time, and returns the row count and checksum of what it added, indexed
// by slot. The first error stops every worker.
func (n *Node) streamPartitions(ctx context.Context, v pgstore.Version, plan pullPlan, b *pebblestore.Batch, workers int) ([]pgstore.SlotSum, error) {
	queue := make(chan pgstore.PullPart, len(plan.parts))
	for _, p := range plan.parts {
		queue <- p
	}
	close(queue)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Each worker sums into its own slice: no lock or shared cache line per row.
	perWorker := make([][]pgstore.SlotSum, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sums := make([]pgstore.SlotSum, v.Slots)
			for p := range queue {
				err := n.pg.Pull(ctx, v.Version, p, func(slot int, r *promotion.Record) error {
					sums[slot].Rows++
					sums[slot].Checksum += r.Checksum()
					return b.Add(w, r, 0)
				})
				if err != nil {
					cancel(err)
					return
				}
			}
			perWorker[w] = sums
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, fmt.Errorf("cannot pull version %d: %w", v.Version, err)
	}
	got := make([]pgstore.SlotSum, v.Slots)
	for _, sums := range perWorker {
		for s, sum := range sums {
			got[s].Rows += sum.Rows
			got[s].Checksum += sum.Checksum
		}
	}
	return got, nil
}

// verifySums checks the row count and checksum pulled for each of slots
// against the ones ingest recorded, and returns the rows pulled.
func (n *Node) verifySums(ctx context.Context, v uint64, slots []int, got []pgstore.SlotSum) (rows int64, err error) {
	want, err := n.pg.SlotSums(ctx, v, slots)
	if err != nil {
		return 0, err
	}
	for _, s := range slots {
		if got[s] != want[s] {
			return 0, fmt.Errorf("version %d, slot %d: pulled %d rows with checksum %x, ingest recorded %d rows with %x",
				v, s, got[s].Rows, got[s].Checksum, want[s].Rows, want[s].Checksum)
		}
		rows += got[s].Rows
	}
	return rows, nil
}
