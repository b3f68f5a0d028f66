package promotion

import "encoding/binary"

// Mix64 is MurmurHash3's 64-bit finalizer: every input bit affects every
// output bit. Slot assignment and checksums are built on it, so it must
// never change.
func Mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// Checksum returns a hash of the whole record. Checksums of datasets are
// wrapping sums of it, so they do not depend on row order.
func (r *Record) Checksum() uint64 {
	hi := binary.BigEndian.Uint64(r.ID[:8])
	lo := binary.BigEndian.Uint64(r.ID[8:])
	return Mix64(Mix64(Mix64(hi)^lo) ^ Mix64(uint64(r.PriceMicros)^uint64(r.Expires)<<1))
}
