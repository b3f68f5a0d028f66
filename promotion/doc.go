// Package promotion defines the promotion record, its 16-byte ID, the JSON
// form answered by GET /promotions/{id}, and the codec (codec.go): every
// byte layout a record takes between the CSV and the answer. Each layout
// of a record's fields has one encoder and one decoder here, so the stores
// never spell out a field's offset or byte order themselves.
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
// Row (Row, PutRow, DecodeRow): a Record and its input position Seq, the
// form in which the import builders hold rows in memory: pebblestore's
// blocks and sort buffers, pgstore's buffers on their way to a COPY
// stream. PutRow writes it in RowLen (40) bytes, the records of
// pebblestore's spill files, read back by the same import and removed
// with it:
//
//	bytes  0-7    ID[0:8] read as a big-endian uint64, written little-endian
//	bytes  8-15   ID[8:16] likewise
//	bytes 16-23   PriceMicros, little-endian
//	bytes 24-31   Expires, little-endian
//	bytes 32-39   Seq, little-endian
//
// The ID halves are stored as numbers because the builder once held them
// so; a spill file never outlives its import, so the form may change
// freely. Every RowLen bytes decode, and values are not checked against
// the bounds of Record: a spill file holds only what its builder wrote.
//
// Packed (AppendPacked, DecodePacked, PackedLen): a Record in a group of
// pgstore's version tables, the rows of one ring slot packed in one bytea
// column, written by the cluster import and read back by Pull, which read
// nodes build their shards from. PackedLen (32) bytes, big-endian:
//
//	bytes  0-15   ID
//	bytes 16-23   PriceMicros
//	bytes 24-31   Expires
//
// The rest of a group is pgstore's (copy.go): the slot column, the lines
// column beside the records, the tuple's framing. Every PackedLen bytes
// decode; values are not checked against the bounds of Record, since the
// tables hold what AppendPacked wrote.
//
// COPY fields (AppendCopy, DecodeCopy, CopyFields, CopyLen): a Record's
// columns in a tuple of PostgreSQL's binary COPY format, the row form of
// the version tables written before groups, which Pull still reads.
// CopyLen (44) bytes, big-endian, each field its 4-byte length then its
// value:
//
//	bytes  0-3    16, then bytes 4-19: ID, the 16 bytes of a uuid column
//	bytes 20-23    8, then bytes 24-31: PriceMicros, a bigint column
//	bytes 32-35    8, then bytes 36-43: Expires, a bigint column
//
// The rest of a tuple is pgstore's (copy.go): the field count and the slot
// column before these fields. DecodeCopy rejects a field of another
// length, a NULL included; it does not check values against the bounds of
// Record.
//
// Pebble key (pebblestore, keys.go): "v", the version as 8 big-endian bytes,
// then the 16 bytes of the ID as they are, so that the rows of a version
// sort by ID like their lower-case text. The ID's part is the ID itself;
// the version prefix is pebblestore's.
//
// # Adding a column
//
// A new CSV column is a field of Record plus, in codec.go, its place in
// each layout: AppendValue and DecodeValue under a new format byte (old
// values stay readable), PutRow and DecodeRow with RowLen, AppendPacked and
// DecodePacked with PackedLen; the layout tests in codec_test.go pin the
// bytes, so each shows what moved. A new PackedLen is a new form of the
// version tables: Pull must tell the tables of the old one apart, as it
// does the row form (AppendCopy and DecodeCopy, which need no new field).
// Elsewhere: Checksum (so that a read node's pull checks the column too),
// AppendJSON if the column is answered, and the CSV parser in ingest. The
// stores' hot loops carry Row and Record whole and need no change.
package promotion
