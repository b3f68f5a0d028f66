package ring

import (
	"encoding/binary"

	"github.com/promotion-service/promo/promotion"
)

// DefaultSlots is the number of slots of a cluster unless configured.
const DefaultSlots = 4096

// Slot returns the slot of id among slots (0 to slots-1): the 64-bit
// finalizer of MurmurHash3 over the id's two halves, modulo slots. The
// function is part of the storage format (PostgreSQL rows are laid out
// by slot), so it must stay exactly as it is.
func Slot(id promotion.ID, slots int) int {
	return int(Hash(id) % uint64(slots))
}

// Hash returns the 64-bit hash of id that Slot reduces.
func Hash(id promotion.ID) uint64 {
	hi := binary.BigEndian.Uint64(id[:8])
	lo := binary.BigEndian.Uint64(id[8:])
	return fmix64(fmix64(hi) ^ lo)
}

// fmix64 is MurmurHash3's 64-bit finalizer: every input bit affects every
// output bit.
func fmix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
