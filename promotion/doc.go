// Package promotion defines the promotion record, its 16-byte ID, the JSON
// form answered by GET /promotions/{id}, and the codec (codec.go): every
// byte layout a record takes between the CSV and the answer. Each layout
// has one encoder and one decoder here, so the stores never spell out a
// field's offset or byte order themselves.
//
// Invariants: an ID is the 16 raw bytes of a UUID and is always printed in
// lower case; a price is an exact, non-negative number of micro-units
// (1 = 0.000001); an expiration is whole Unix seconds in years 1 to 9999.
// Nothing in this package allocates on the lookup path, and no encoder or
// decoder allocates when its destination has room.
//
// # Layouts
//
// Stored value (AppendValue, DecodeValue): the Pebble value of every row of
// a dataset version, kept on disk as long as the version is kept, written
// by pebblestore's builder and read by every lookup. At most MaxValueLen
// bytes:
//
//	format byte    1
//	price          PriceMicros, unsigned varint (encoding/binary)
//	expires        Expires, signed varint
//
// DecodeValue accepts exactly what AppendValue writes (no trailing byte, no
// redundant varint byte, values within the bounds of Record), so a value has
// one encoding. Datasets are never rewritten: a new form takes the next
// format byte, and DecodeValue keeps reading the old ones.
//
// Pebble key (pebblestore, keys.go): "v", the version as 8 big-endian bytes,
// then the 16 bytes of the ID as they are, so that the rows of a version
// sort by ID like their lower-case text. The ID's part is the ID itself;
// the version prefix is pebblestore's.
package promotion
