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

// pull builds version v of the slots this node holds: it streams them from
// PostgreSQL partition by partition (only the tables holding its slots),
// straight into the store's sorted SSTables, checks every slot's row count
// and checksum against the ones ingest recorded, and prepares the version
// without serving it. A pull that fails or dies leaves nothing: the store
// drops an unfinished version.
func (n *Node) pull(ctx context.Context, v pgstore.Version) error {
	if v.Slots != n.cfg.Slots {
		return fmt.Errorf("version %d has %d slots, this cluster %d", v.Version, v.Slots, n.cfg.Slots)
	}
	start := time.Now()
	per := v.Slots / v.Partitions
	parts := map[int][]int{}
	var mine []int
	for s, held := range n.holds {
		if held {
			parts[s/per] = append(parts[s/per], s)
			mine = append(mine, s)
		}
	}
	workers := min(n.cfg.PullWorkers, max(len(parts), 1))
	b, err := n.store.BeginVersion(ctx, v.Version, fmt.Sprintf("pull of version %d", v.Version), workers)
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
	type sums struct {
		rows     []int64
		checksum []uint64
	}
	perWorker := make([]sums, workers)
	queue := make(chan int, len(parts))
	for p := range parts {
		queue <- p
	}
	close(queue)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acc := sums{rows: make([]int64, v.Slots), checksum: make([]uint64, v.Slots)}
			for p := range queue {
				err := n.pg.Pull(ctx, v.Version, p, parts[p], func(slot int, r *promotion.Record) error {
					acc.rows[slot]++
					acc.checksum[slot] += r.Checksum()
					return b.Add(w, r, 0)
				})
				if err != nil {
					cancel(err)
					return
				}
			}
			perWorker[w] = acc
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("cannot pull version %d: %w", v.Version, err)
	}
	copied := time.Since(start)
	want, err := n.pg.SlotSums(ctx, v.Version, mine)
	if err != nil {
		return err
	}
	var total int64
	for _, s := range mine {
		var got pgstore.SlotSum
		for _, acc := range perWorker {
			got.Rows += acc.rows[s]
			got.Checksum += acc.checksum[s]
		}
		if got != want[s] {
			return fmt.Errorf("version %d, slot %d: pulled %d rows with checksum %x, ingest recorded %d rows with %x",
				v.Version, s, got.Rows, got.Checksum, want[s].Rows, want[s].Checksum)
		}
		total += got.Rows
	}
	if _, _, err := b.Prepare(ctx); err != nil {
		return err
	}
	committed = true
	el := time.Since(start)
	rate := float64(total) / el.Seconds()
	n.pulledRows.Add(int(total))
	n.pullRate.Store(math.Float64bits(rate))
	n.log.Info("prepared version", "version", v.Version, "rows", total, "slots", len(mine),
		"partitions", len(parts), "elapsed", el.Round(time.Millisecond), "copy", copied.Round(time.Millisecond), "rows_per_second", int(rate))
	return n.pg.Report(ctx, n.cfg.Name, v.Version, pgstore.NodePrepared)
}
