// Package pebblestore keeps versioned, immutable promotion datasets in one Pebble
// database and answers point lookups from the current version.
//
// A dataset version is built by a Batch: rows arrive in any order from
// several goroutines, are radix-partitioned by the first byte of their ID
// (spilling to disk when they exceed the memory budget), sorted bucket by
// bucket with the last duplicate winning, written straight into SSTables and
// added with one DB.Ingest call. Nothing is written to Pebble row by row.
// batch.go is the Batch's life cycle, partition.go the rows held in
// memory blocks and spill files, sort.go the sort of one bucket and
// sstables.go the writing of the tables. The builder holds rows as
// promotion.Row and writes them in promotion's layouts (spilled rows with
// PutRow, values with AppendValue); the keys and the metadata are
// pebblestore's own (keys.go, store.go). open.go opens Pebble so that a
// full disk fails Open with ErrDiskFull and a cancelled context ends it,
// where Pebble alone would retry forever.
//
// Lookups of a version skip Pebble's Get: the store keeps hard links to
// the tables it ingested for the version (Dir/tables/v<N>/r<K>, a run per
// ingest), maps them read-only and searches their index and data blocks
// itself (fastread.go, table.go). A version without such links, or whose
// tables do not open, is read through Pebble.
//
// Invariants:
//   - the keys of version N are "v" + N (8 bytes, big-endian) + the 16-byte
//     ID, so versions never overlap and one can be removed with Excise;
//   - metadata lives under "m\x00"; the current version changes in one
//     synced batch, only after all of its rows are ingested;
//   - a version that was building or being dropped when the process died is
//     removed by the next Open, so readers never see a partial version;
//   - a View pins its version: a dropped version's data is excised only after
//     the last View of it is released.
//   - every activation raises the epoch, stored with the current version
//     in the same synced batch; a View carries the epoch its version was
//     activated at;
//   - with MinRowsRatio, a version much smaller than the current one is
//     committed but held: it becomes current only through Activate;
//   - retention never drops the current version nor one SetPending names;
//   - a version's runs on disk hold exactly its rows: its keys change only
//     by an ingest (a run is linked before and settled after it; Open
//     settles one a crash interrupted by asking Pebble) and by the excise
//     of the whole version, which removes its links; mappings are
//     released only once no View of the version is held.
package pebblestore
