// Package promotion defines the promotion record, its 16-byte key, the
// compact binary encoding stored in Pebble and the JSON form answered by
// GET /promotions/{id}.
//
// Invariants: an ID is the 16 raw bytes of a UUID and is always printed in
// lower case; a price is an exact, non-negative number of micro-units
// (1 = 0.000001); an expiration is whole Unix seconds in years 1 to 9999.
// Nothing in this package allocates on the lookup path.
package promotion
