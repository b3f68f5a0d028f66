package promotion

// This file is the codec: every byte layout of a Record outside the CSV
// and the JSON answer. doc.go describes each layout and where it is used.

import (
	"encoding/binary"
	"errors"
)

// valueFormat is the first byte of every encoded value, so that the format
// can evolve without rewriting stored datasets.
const valueFormat = 1

// MaxValueLen is the largest encoded value: the format byte and two varints.
const MaxValueLen = 1 + binary.MaxVarintLen64 + binary.MaxVarintLen64

// ErrBadValue is returned by DecodeValue for bytes that AppendValue did not
// produce.
var ErrBadValue = errors.New("promotion: malformed stored value")

// AppendValue appends the stored form of the price and expiration of r to dst
// and returns the extended slice. The ID is not part of the value: it is the
// key.
func AppendValue(dst []byte, r *Record) []byte {
	dst = append(dst, valueFormat)
	dst = binary.AppendUvarint(dst, uint64(r.PriceMicros))
	return binary.AppendVarint(dst, r.Expires)
}

// DecodeValue fills the price and expiration of r from b, a value produced by
// AppendValue. It does not retain b.
func DecodeValue(b []byte, r *Record) error {
	if len(b) < 3 || b[0] != valueFormat {
		return ErrBadValue
	}
	price, n := binary.Uvarint(b[1:])
	if n <= 0 || overlong(b[1:], n) || price > MaxPriceMicros {
		return ErrBadValue
	}
	exp, m := binary.Varint(b[1+n:])
	if m <= 0 || overlong(b[1+n:], m) || 1+n+m != len(b) || exp < MinExpires || exp > MaxExpires {
		return ErrBadValue
	}
	r.PriceMicros = int64(price)
	r.Expires = exp
	return nil
}

// overlong reports whether the n-byte varint at the start of b has a
// redundant zero last byte, which binary.Uvarint accepts but AppendValue
// never writes: the same value would then have two encodings.
func overlong(b []byte, n int) bool {
	return n > 1 && b[n-1] == 0
}

// Row is a Record and its position in the input, the form in which the
// import builders hold rows in memory: of rows with the same ID, the one
// with the largest Seq is kept.
type Row struct {
	Record
	// Seq is the row's position in the input, such as its line number.
	Seq uint64
}

// RowLen is the length of the fixed-width form of a Row.
const RowLen = 40

// PutRow writes the fixed-width form of r, the form of spill files, to
// b[:RowLen]. It panics when b is shorter.
func PutRow(b []byte, r *Row) {
	_ = b[RowLen-1]
	binary.LittleEndian.PutUint64(b[0:], binary.BigEndian.Uint64(r.ID[:8]))
	binary.LittleEndian.PutUint64(b[8:], binary.BigEndian.Uint64(r.ID[8:]))
	binary.LittleEndian.PutUint64(b[16:], uint64(r.PriceMicros))
	binary.LittleEndian.PutUint64(b[24:], uint64(r.Expires))
	binary.LittleEndian.PutUint64(b[32:], r.Seq)
}

// DecodeRow fills r from b[:RowLen], written by PutRow. Every RowLen bytes
// are the form of exactly one Row, so there is nothing to reject; the
// values are not checked against the bounds of Record, since a spill file
// holds only what its builder wrote. It panics when b is shorter.
func DecodeRow(b []byte, r *Row) {
	_ = b[RowLen-1]
	binary.BigEndian.PutUint64(r.ID[:8], binary.LittleEndian.Uint64(b[0:]))
	binary.BigEndian.PutUint64(r.ID[8:], binary.LittleEndian.Uint64(b[8:]))
	r.PriceMicros = int64(binary.LittleEndian.Uint64(b[16:]))
	r.Expires = int64(binary.LittleEndian.Uint64(b[24:]))
	r.Seq = binary.LittleEndian.Uint64(b[32:])
}

// Binary COPY form of a Record's fields.
const (
	// CopyFields is the number of fields AppendCopy writes.
	CopyFields = 3
	// CopyLen is the length of the fields AppendCopy writes.
	CopyLen = 4 + 16 + 4 + 8 + 4 + 8
)

// ErrBadCopy is returned by DecodeCopy for fields that are not the ones
// AppendCopy writes.
var ErrBadCopy = errors.New("promotion: malformed COPY fields")

// AppendCopy appends the fields of r to dst as PostgreSQL's binary COPY
// format carries them, each a 4-byte big-endian length then the value: the
// ID as a uuid (16 bytes), PriceMicros and Expires as bigints (8 bytes,
// big-endian); CopyLen bytes in all. The caller frames the tuple: its
// field count and any other columns.
func AppendCopy(dst []byte, r *Record) []byte {
	dst = binary.BigEndian.AppendUint32(dst, 16)
	dst = append(dst, r.ID[:]...)
	dst = binary.BigEndian.AppendUint32(dst, 8)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.PriceMicros))
	dst = binary.BigEndian.AppendUint32(dst, 8)
	return binary.BigEndian.AppendUint64(dst, uint64(r.Expires))
}

// DecodeCopy fills r from the fields at the start of b, as AppendCopy writes
// them and COPY ... TO STDOUT (FORMAT binary) sends them. It returns
// ErrBadCopy, and leaves r alone, when b is shorter than CopyLen or a
// field's length is not its type's (a NULL included). The values are not
// checked against the bounds of Record: the tables hold what AppendCopy wrote.
func DecodeCopy(b []byte, r *Record) error {
	if len(b) < CopyLen || binary.BigEndian.Uint32(b[0:]) != 16 ||
		binary.BigEndian.Uint32(b[20:]) != 8 || binary.BigEndian.Uint32(b[32:]) != 8 {
		return ErrBadCopy
	}
	copy(r.ID[:], b[4:20])
	r.PriceMicros = int64(binary.BigEndian.Uint64(b[24:]))
	r.Expires = int64(binary.BigEndian.Uint64(b[36:]))
	return nil
}

// PackedLen is the length of a Record in pgstore's groups (AppendPacked).
const PackedLen = 16 + 8 + 8

// AppendPacked appends r to dst in PackedLen bytes: the ID, then
// PriceMicros and Expires as big-endian 64-bit integers.
func AppendPacked(dst []byte, r *Record) []byte {
	dst = append(dst, r.ID[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.PriceMicros))
	return binary.BigEndian.AppendUint64(dst, uint64(r.Expires))
}

// DecodePacked fills r from b[:PackedLen], written by AppendPacked. Every
// PackedLen bytes decode; the values are not checked against the bounds of
// Record, since the tables hold what AppendPacked wrote. It panics when b
// is shorter.
func DecodePacked(b []byte, r *Record) {
	_ = b[PackedLen-1]
	copy(r.ID[:], b[:16])
	r.PriceMicros = int64(binary.BigEndian.Uint64(b[16:]))
	r.Expires = int64(binary.BigEndian.Uint64(b[24:]))
}
