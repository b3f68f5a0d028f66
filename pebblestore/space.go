package pebblestore

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/promotion-service/promo/promotion"
)

// This file fails an import early, with a clear error, when the disk
// cannot hold it, instead of letting it run for minutes into ENOSPC: before
// the import when its size is known (ExpectBytes), and at every spill and
// before writing the SSTables when it is a stream of unknown length. A
// failed import is aborted, so the serving version is untouched.

const (
	// tableBytesPerRow bounds the SSTable bytes of one row: 35.4 was
	// measured here (a 20,000,000-row version took 709 MB).
	tableBytesPerRow = 40
	// csvBytesPerRow is the length of a typical CSV row, to estimate the
	// rows of a file from its size: the sample file and bench gen's rows
	// average 77 bytes; a little less estimates a little more rows.
	csvBytesPerRow = 72
	// spaceHeadroom is kept free for Pebble's own writes (manifest, log,
	// metadata) and the rest of the system.
	spaceHeadroom = 16 << 20
)

// spaceGuard checks the free space of the file system of an import's
// temporary directory, which is the store's.
type spaceGuard struct {
	dir     string
	spilled atomic.Int64 // rows written to spill files by every partition
}

// check fails with an error wrapping ErrDiskFull and syscall.ENOSPC when
// fewer than need bytes (plus spaceHeadroom) are available. what says
// what needs them.
func (g *spaceGuard) check(need int64, what string) error {
	usage, err := vfs.Default.GetDiskUsage(g.dir)
	if errors.Is(err, vfs.ErrUnsupported) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read the free space of %s: %w", g.dir, err)
	}
	need += spaceHeadroom
	if need > 0 && usage.AvailBytes < uint64(need) {
		return fmt.Errorf("%w (%w): %s has %s available, %s needs about %s; the import is abandoned and the serving version is unchanged: free some space or give the store a larger disk",
			ErrDiskFull, syscall.ENOSPC, g.dir, formatMiB(usage.AvailBytes), what, formatMiB(uint64(need)))
	}
	return nil
}

// beforeSpill is called before a partition spills rows to disk: the disk
// must hold them, and the SSTables of every row spilled so far.
func (g *spaceGuard) beforeSpill(rows int64) error {
	total := g.spilled.Add(rows)
	return g.check(rows*promotion.RowLen+total*tableBytesPerRow,
		fmt.Sprintf("the import (%d rows so far, spilled to disk, then written as SSTables)", total))
}

// ExpectBytes fails early, with an error wrapping ErrDiskFull and
// syscall.ENOSPC, when the store's disk cannot hold an import of a CSV of
// size bytes: its SSTables, and its spill files when its rows exceed the
// memory budget. Call it before adding rows when the size is known (a
// file, a Content-Length); streams are checked as they spill.
func (b *Batch) ExpectBytes(size int64) error {
	if size <= 0 {
		return nil
	}
	rows := size / csvBytesPerRow
	need := rows * tableBytesPerRow
	if rows*rowSize > int64(b.pool.max)*blockSize {
		need += rows * promotion.RowLen
	}
	return b.space.check(need, fmt.Sprintf("an import of %s (about %d rows)", formatMiB(uint64(size)), rows))
}
