package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/sstable"
	sblock "github.com/cockroachdb/pebble/v2/sstable/block"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// This file reads one of the store's own SSTables straight from a
// read-only memory map, for the fast read path (fastread.go): a point
// lookup binary-searches an in-memory summary of the table's single-level
// index (4 bytes of each separator, and the block handles), then the data
// block it names, with no block cache, no iterator and no copy. Only
// the tables the store writes are accepted (TableFormatPebblev3, row
// blocks, no compression, a single-level index, nothing but SET keys of
// keyLen bytes); anything else fails openTable and the version falls back
// to Pebble's Get.
//
// Every offset read from the file is bounds-checked, so a corrupt table
// gives an error, never a panic or a read outside the mapping (a file
// truncated under a live mapping would still fault: the links under
// Dir/tables must not be edited). Checksums: the index block and the first
// and last data blocks are verified when the table is opened, read with
// pread so that opening maps no page; any other data block the first time
// a lookup touches it (a bit per block remembers it), as Pebble verifies
// a block when it loads it into its cache.

// ErrCorrupt is returned, wrapped with the table and what is wrong, by a
// lookup in a table that does not hold what its format says.
var ErrCorrupt = errors.New("pebblestore: corrupt table")

const (
	// pebbleMagic ends the footer of a Pebble-format table.
	pebbleMagic = "\xf0\x9f\xaa\xb3\xf0\x9f\xaa\xb3"
	// footerLen is the footer of formats Pebblev1 to Pebblev5: checksum
	// type, two padded block handles, version, magic.
	footerLen = 1 + 2*20 + 4 + 8
	// formatVersion is Pebblev3's version number in the footer.
	formatVersion = 3
	// ikeyLen is the length of an internal key of the store: the user
	// key and Pebble's 8-byte trailer (sequence number and kind).
	ikeyLen = keyLen + 8
	// kindSet is Pebble's InternalKeyKindSet, in the trailer's low byte.
	kindSet = 1
	// valueKindMask selects how a Pebblev3 data value is stored: 0 in
	// place, anything else in a value block or a blob file.
	valueKindMask = 0xc0
)

// table is one SSTable mapped into memory.
type table struct {
	path     string
	data     []byte // the mapping of the whole file
	checksum sblock.ChecksumType
	index    []byte // the index block, without its trailer
	idxEnd   int    // offset in index of its restart array
	// seps holds, per data block, 4 bytes of its index separator (the ID
	// bytes after the version prefix, see sepKey), and handles where the
	// block is: a lookup searches these in memory and reads the index
	// block only to tell apart separators that share those 4 bytes. They
	// cost 12 bytes a block, 0.3% of the file.
	seps     []uint32
	handles  []blockHandle
	verified []atomic.Uint64
	// smallest and largest are the first and last user keys.
	smallest, largest [keyLen]byte
}

// blockHandle is where a data block is; the file is smaller than 4 GiB.
type blockHandle struct{ off, len uint32 }

func (h blockHandle) handle() sblock.Handle {
	return sblock.Handle{Offset: uint64(h.off), Length: uint64(h.len)}
}

// openTable maps the table at path and checks what lookups rely on: its
// format, its properties, its index block (checksum and every entry) and
// its first and last keys.
func openTable(path string) (t *table, err error) {
	if err := checkProperties(path); err != nil {
		return nil, err
	}
	data, err := mmapFile(path)
	if err != nil {
		return nil, err
	}
	opened := &table{path: path, data: data}
	t = opened
	defer func() {
		if err != nil {
			_ = opened.unmap()
		}
	}()
	if len(data) < footerLen || len(data) > math.MaxUint32 {
		return nil, t.corrupt("file of %d bytes", len(data))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// What openTable reads it reads with pread, not through the mapping:
	// the kernel maps file pages in folios of up to 2 MiB, all counted in
	// the process's RSS, so touching the footer and two blocks of each
	// table would add megabytes per table before any lookup.
	foot := make([]byte, footerLen)
	if _, err := f.ReadAt(foot, int64(len(data)-footerLen)); err != nil {
		return nil, fmt.Errorf("cannot read the footer of %s: %w", path, err)
	}
	if string(foot[footerLen-8:]) != pebbleMagic || binary.LittleEndian.Uint32(foot[footerLen-12:]) != formatVersion {
		return nil, fmt.Errorf("table %s: not a Pebblev3 table", path)
	}
	t.checksum = sblock.ChecksumType(foot[0])
	if t.checksum != sblock.ChecksumTypeCRC32c && t.checksum != sblock.ChecksumTypeXXHash64 {
		return nil, t.corrupt("unknown checksum type %d", foot[0])
	}
	_, n := sblock.DecodeHandle(foot[1:]) // the metaindex
	if n == 0 {
		return nil, t.corrupt("bad metaindex handle")
	}
	ih, m := sblock.DecodeHandle(foot[1+n:])
	if m == 0 {
		return nil, t.corrupt("bad index handle")
	}
	// The index (1% of the file) is summarized in memory below; lookups
	// read it through the mapping only to tell ties apart.
	raw, err := t.blockRange(ih)
	if err != nil {
		return nil, err
	}
	idx, err := t.readBlock(f, ih)
	if err != nil {
		return nil, err
	}
	t.index = raw[:ih.Length]
	var blocks int
	if t.idxEnd, blocks, err = restarts(idx); err != nil {
		return nil, t.corrupt("index block: %v", err)
	}
	if blocks == 0 {
		return nil, t.corrupt("no data blocks")
	}
	// Walk the index once: every entry is a restart point (index blocks
	// have a restart interval of 1) naming a block inside the file.
	t.handles = make([]blockHandle, blocks)
	off := 0
	for i := range blocks {
		if ro := restartAt(idx, t.idxEnd, i); ro != off {
			return nil, t.corrupt("index entry %d at %d, restart point says %d", i, off, ro)
		}
		key, val, next, err := restartEntry(idx, t.idxEnd, off)
		if err != nil {
			return nil, t.corrupt("index entry %d: %v", i, err)
		}
		if len(key) < 8 || len(key) > ikeyLen {
			return nil, t.corrupt("index entry %d: key of %d bytes", i, len(key))
		}
		h, n := sblock.DecodeHandle(val)
		if n == 0 {
			return nil, t.corrupt("index entry %d: bad block handle", i)
		}
		if _, err := t.blockRange(h); err != nil {
			return nil, err
		}
		t.handles[i] = blockHandle{uint32(h.Offset), uint32(h.Length)}
		off = next
	}
	if off != t.idxEnd {
		return nil, t.corrupt("index block has %d bytes after its last entry", t.idxEnd-off)
	}
	t.verified = make([]atomic.Uint64, (blocks+63)/64)
	// The first key of the first block and the last key of the last one.
	b, err := t.readBlock(f, t.handles[0].handle())
	if err != nil {
		return nil, err
	}
	t.verified[0].Or(1)
	end, n2, err := restarts(b)
	if err != nil || n2 == 0 {
		return nil, t.corrupt("first data block: %v", err)
	}
	key, _, _, err := restartEntry(b, end, 0)
	if err != nil || len(key) != ikeyLen {
		return nil, t.corrupt("first key: %d bytes, %v", len(key), err)
	}
	copy(t.smallest[:], key)
	if b, err = t.readBlock(f, t.handles[blocks-1].handle()); err != nil {
		return nil, err
	}
	t.verified[(blocks-1)/64].Or(1 << ((blocks - 1) % 64))
	if err := lastKey(b, t.largest[:]); err != nil {
		return nil, t.corrupt("last key: %v", err)
	}
	if bytes.Compare(t.smallest[:], t.largest[:]) > 0 {
		return nil, t.corrupt("first key after last key")
	}
	t.seps = make([]uint32, blocks)
	for i := range blocks {
		sep, _, _, err := restartEntry(idx, t.idxEnd, restartAt(idx, t.idxEnd, i))
		if err != nil || len(sep) < 8 {
			return nil, t.corrupt("index entry %d: %v", i, err)
		}
		sep = sep[:len(sep)-8]
		if t.seps[i], err = t.sepKey(sep); err != nil {
			return nil, t.corrupt("index entry %d: %v", i, err)
		}
		if i > 0 && t.seps[i] < t.seps[i-1] {
			return nil, t.corrupt("index entry %d out of order", i)
		}
	}
	return t, nil
}

// readBlock reads the block h names from f into memory and verifies
// its checksum and that it is not compressed.
func (t *table) readBlock(f *os.File, h sblock.Handle) ([]byte, error) {
	if _, err := t.blockRange(h); err != nil {
		return nil, err
	}
	b := make([]byte, h.Length+sblock.TrailerLen)
	if _, err := f.ReadAt(b, int64(h.Offset)); err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", t.path, err)
	}
	if err := sblock.ValidateChecksum(t.checksum, b, h); err != nil {
		return nil, t.corrupt("block at %d: %v", h.Offset, err)
	}
	if b[h.Length] != 0 {
		return nil, t.corrupt("block at %d is compressed (type %d)", h.Offset, b[h.Length])
	}
	return b[:h.Length], nil
}

// sepKey returns the 4 bytes of a separator (a user key at or after a key
// of the table) that seps holds: the 4 bytes after the version prefix,
// zero-padded, or the largest value for a separator past the prefix (the
// last block's may be). It never decreases as separators grow, so a key
// is at or before a separator only if its sepKey is at most the
// separator's.
func (t *table) sepKey(sep []byte) (uint32, error) {
	if len(sep) < prefixLen || !bytes.Equal(sep[:prefixLen], t.smallest[:prefixLen]) {
		if bytes.Compare(sep, t.smallest[:prefixLen]) < 0 {
			return 0, errors.New("separator before the table's prefix")
		}
		return math.MaxUint32, nil
	}
	return idKey(sep[prefixLen:]), nil
}

// idKey is the first 4 bytes of id, zero-padded, big-endian.
func idKey(id []byte) uint32 {
	var b [4]byte
	copy(b[:], id)
	return binary.BigEndian.Uint32(b[:])
}

// sep returns the user key of index entry i.
func (t *table) sep(i int) ([]byte, error) {
	sep, _, _, err := restartEntry(t.index, t.idxEnd, restartAt(t.index, t.idxEnd, i))
	if err != nil || len(sep) < 8 {
		return nil, t.corrupt("index entry %d: %v", i, err)
	}
	return sep[:len(sep)-8], nil
}

// checkProperties refuses a table that holds anything but point SETs in
// place: range deletions, range keys, value blocks or a two-level index
// (tables written before the store asked for a single-level one).
func checkProperties(path string) error {
	f, err := vfs.Default.Open(path)
	if err != nil {
		return err
	}
	readable, err := sstable.NewSimpleReadable(f)
	if err != nil {
		f.Close()
		return err
	}
	r, err := sstable.NewReader(context.Background(), readable, sstable.ReaderOptions{})
	if err != nil {
		readable.Close()
		return fmt.Errorf("table %s: %w", path, err)
	}
	defer r.Close()
	p, err := r.ReadPropertiesBlock(context.Background(), nil)
	if err != nil {
		return fmt.Errorf("table %s: %w", path, err)
	}
	switch {
	case p.IndexPartitions > 0:
		return fmt.Errorf("table %s has a two-level index", path)
	case p.NumRangeDeletions > 0 || p.NumRangeKeys() > 0 || p.NumDeletions > 0:
		return fmt.Errorf("table %s holds deletions or range keys", path)
	case p.NumValueBlocks > 0:
		return fmt.Errorf("table %s has value blocks", path)
	}
	return nil
}

func (t *table) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w %s: %s", ErrCorrupt, t.path, fmt.Sprintf(format, args...))
}

// blockRange returns the block h names with its trailer, checking that it
// lies inside the file.
func (t *table) blockRange(h sblock.Handle) ([]byte, error) {
	size := uint64(len(t.data))
	if h.Offset > size || h.Length > size || h.Offset+h.Length+sblock.TrailerLen > size {
		return nil, t.corrupt("block (%d, %d) outside the file of %d bytes", h.Offset, h.Length, size)
	}
	return t.data[h.Offset : h.Offset+h.Length+sblock.TrailerLen], nil
}

// block returns the contents of the block h names after verifying its
// checksum and that it is not compressed.
func (t *table) block(h sblock.Handle) ([]byte, error) {
	b, err := t.blockRange(h)
	if err != nil {
		return nil, err
	}
	if err := sblock.ValidateChecksum(t.checksum, b, h); err != nil {
		return nil, t.corrupt("block at %d: %v", h.Offset, err)
	}
	if b[h.Length] != 0 {
		return nil, t.corrupt("block at %d is compressed (type %d)", h.Offset, b[h.Length])
	}
	return b[:h.Length], nil
}

// dataBlock returns data block i, verifying its checksum the first time.
func (t *table) dataBlock(i int) ([]byte, error) {
	h := t.handles[i]
	w, bit := &t.verified[i/64], uint64(1)<<(i%64)
	if w.Load()&bit != 0 {
		// Inside the file: openTable checked every handle.
		return t.data[h.off : h.off+h.len], nil
	}
	b, err := t.block(sblock.Handle{Offset: uint64(h.off), Length: uint64(h.len)})
	if err != nil {
		return nil, err
	}
	w.Or(bit)
	return b, nil
}

// get finds key, a user key of keyLen bytes, and returns its value, which
// points into the mapping, or reports false.
func (t *table) get(key []byte) ([]byte, bool, error) {
	if bytes.Compare(key, t.smallest[:]) < 0 || bytes.Compare(key, t.largest[:]) > 0 {
		return nil, false, nil
	}
	// The first index entry whose separator is at or after key names the
	// only block that can hold it. Entries before lo have separators
	// before key; those from hi on, after it; in between, the index
	// block decides.
	k := idKey(key[prefixLen:])
	seps := t.seps
	lo, hi := 0, len(seps)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if seps[h] < k {
			lo = h + 1
		} else {
			hi = h
		}
	}
	hi = lo
	for hi < len(seps) && seps[hi] == k {
		hi++
		if hi-lo > 8 {
			// Many separators share k: search them.
			hi = lo + sortSearch(len(seps)-lo, func(j int) bool { return seps[lo+j] > k })
			break
		}
	}
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		sep, err := t.sep(h)
		if err != nil {
			return nil, false, err
		}
		if bytes.Compare(sep, key) < 0 {
			lo = h + 1
		} else {
			hi = h
		}
	}
	if lo == len(seps) {
		return nil, false, nil
	}
	b, err := t.dataBlock(lo)
	if err != nil {
		return nil, false, err
	}
	val, ok, err := seekBlock(b, key)
	if err != nil {
		return nil, false, t.corrupt("data block %d: %v", lo, err)
	}
	return val, ok, nil
}

// sortSearch is sort.Search, which it keeps from allocating a closure
// on the heap by being inlined.
func sortSearch(n int, f func(int) bool) int {
	lo, hi := 0, n
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if !f(h) {
			lo = h + 1
		} else {
			hi = h
		}
	}
	return lo
}

// seekBlock finds key in a data block: a binary search of its restart
// points for the last one at or before key, then a scan of the entries
// after it.
func seekBlock(b, key []byte) ([]byte, bool, error) {
	end, n, err := restarts(b)
	if err != nil {
		return nil, false, err
	}
	// The first restart point whose key is after key.
	lo, hi := 0, n
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		k, _, _, err := restartEntry(b, end, restartAt(b, end, h))
		if err != nil || len(k) != ikeyLen {
			return nil, false, fmt.Errorf("restart point %d: key of %d bytes, %v", h, len(k), err)
		}
		if bytes.Compare(k[:keyLen], key) <= 0 {
			lo = h + 1
		} else {
			hi = h
		}
	}
	if lo == 0 {
		return nil, false, nil // before the block's first key
	}
	var cur [ikeyLen]byte
	klen := 0
	for off := restartAt(b, end, lo-1); off < end; {
		shared, unshared, vlen, p, err := entryHeader(b, end, off)
		if err != nil {
			return nil, false, err
		}
		if shared > klen || shared+unshared != ikeyLen {
			return nil, false, fmt.Errorf("entry at %d: key of %d+%d bytes after one of %d", off, shared, unshared, klen)
		}
		copy(cur[shared:], b[p:p+unshared])
		klen = ikeyLen
		p += unshared
		switch c := bytes.Compare(cur[:keyLen], key); {
		case c > 0:
			return nil, false, nil
		case c == 0:
			if cur[keyLen] != kindSet {
				return nil, false, fmt.Errorf("entry at %d: key kind %d", off, cur[keyLen])
			}
			if vlen == 0 || b[p]&valueKindMask != 0 {
				return nil, false, fmt.Errorf("entry at %d: value not stored in place", off)
			}
			return b[p+1 : p+vlen], true, nil
		}
		off = p + vlen
	}
	return nil, false, nil
}

// lastKey copies the last user key of data block b into dst.
func lastKey(b, dst []byte) error {
	end, n, err := restarts(b)
	if err != nil {
		return err
	}
	if n == 0 {
		return errors.New("no restart points")
	}
	var cur [ikeyLen]byte
	klen := 0
	for off := restartAt(b, end, n-1); off < end; {
		shared, unshared, vlen, p, err := entryHeader(b, end, off)
		if err != nil {
			return err
		}
		if shared > klen || shared+unshared != ikeyLen {
			return fmt.Errorf("entry at %d: key of %d+%d bytes", off, shared, unshared)
		}
		copy(cur[shared:], b[p:p+unshared])
		klen = ikeyLen
		off = p + unshared + vlen
	}
	if klen == 0 {
		return errors.New("no entries after the last restart point")
	}
	copy(dst, cur[:keyLen])
	return nil
}

// restarts returns where the restart array of block b starts and how many
// restart points it has.
func restarts(b []byte) (end, n int, err error) {
	if len(b) < 4 {
		return 0, 0, fmt.Errorf("block of %d bytes", len(b))
	}
	c := uint64(binary.LittleEndian.Uint32(b[len(b)-4:]))
	if 4*c+4 > uint64(len(b)) {
		return 0, 0, fmt.Errorf("%d restart points in a block of %d bytes", c, len(b))
	}
	return len(b) - 4 - 4*int(c), int(c), nil
}

// restartAt returns the offset of restart point i of a block whose restart
// array starts at end; i must be below the block's count. The offset's
// high bit is a flag of Pebble's, not part of it. An offset past end is
// returned as end, which every reader treats as out of entries or
// corrupt.
func restartAt(b []byte, end, i int) int {
	o := int(binary.LittleEndian.Uint32(b[end+4*i:]) & 0x7fffffff)
	return min(o, end)
}

// restartEntry decodes the entry at off, which must be a restart point
// (no key bytes shared), and returns its key and value and the offset of
// the next entry.
func restartEntry(b []byte, end, off int) (key, val []byte, next int, err error) {
	shared, unshared, vlen, p, err := entryHeader(b, end, off)
	if err != nil {
		return nil, nil, 0, err
	}
	if shared != 0 {
		return nil, nil, 0, fmt.Errorf("restart point at %d shares %d key bytes", off, shared)
	}
	return b[p : p+unshared], b[p+unshared : p+unshared+vlen], p + unshared + vlen, nil
}

// entryHeader decodes the three varints of the entry at off and checks
// that its key and value end before end.
func entryHeader(b []byte, end, off int) (shared, unshared, vlen, p int, err error) {
	if off >= end {
		return 0, 0, 0, 0, fmt.Errorf("entry at %d is past the entries' end %d", off, end)
	}
	e := b[off:end]
	s, n1 := binary.Uvarint(e)
	u, n2 := uvarintAt(e, n1)
	v, n3 := uvarintAt(e, n1+n2)
	if n1 <= 0 || n2 <= 0 || n3 <= 0 {
		return 0, 0, 0, 0, fmt.Errorf("entry at %d: bad header", off)
	}
	h := uint64(n1 + n2 + n3)
	if s > ikeyLen || u > uint64(len(e)) || v > uint64(len(e)) || h+u+v > uint64(len(e)) {
		return 0, 0, 0, 0, fmt.Errorf("entry at %d: %d+%d+%d bytes overflow the block", off, s, u, v)
	}
	return int(s), int(u), int(v), off + int(h), nil
}

func uvarintAt(b []byte, i int) (uint64, int) {
	if i <= 0 || i > len(b) {
		return 0, 0
	}
	return binary.Uvarint(b[i:])
}

// unmap releases the mapping; t must not be used afterwards.
func (t *table) unmap() error {
	if t.data == nil {
		return nil
	}
	err := munmap(t.data)
	t.data, t.index, t.handles = nil, nil, nil
	return err
}
