package promotion

import "math"

// Record is one promotion.
type Record struct {
	ID ID
	// PriceMicros is the price in millionths of a unit, so 60.683466 is
	// 60683466. It is never negative.
	PriceMicros int64
	// Expires is the expiration time in Unix seconds (UTC).
	Expires int64
}

// Bounds of the values a Record may hold.
const (
	// MaxPriceMicros is the largest price that can be stored.
	MaxPriceMicros = math.MaxInt64
	// MinExpires is 0001-01-01T00:00:00Z in Unix seconds.
	MinExpires = -62135596800
	// MaxExpires is 9999-12-31T23:59:59Z in Unix seconds.
	MaxExpires = 253402300799
)
