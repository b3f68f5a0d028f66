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
	return promotion.Mix64(promotion.Mix64(hi) ^ lo)
}
