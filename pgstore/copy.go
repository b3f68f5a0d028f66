package pgstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// This file is PostgreSQL's binary COPY format as the version tables use
// it: the stream an import writes into each table and the stream a pull
// reads back.
//
// A tuple of a version table is a group: the records of up to maxGroup
// rows of one slot, packed in one bytea (recs, each in promotion's packed
// form), and their lines in the file in another (lines, 8 big-endian bytes
// each, in the same order). PostgreSQL's cost is per tuple and per field,
// so groups cut its CPU for COPY in and out to a fraction of a tuple per
// row (7-8x less here at 16 rows a group), and a pull reads only slot and
// recs. Both columns are stored PLAIN: a group fits in a page, and
// PostgreSQL neither tries to compress it nor moves it out of line.
//
// Tables written before groups hold one row a tuple (the row form: slot,
// id, price, expires, line); Pull still reads them, so that a version
// committed before an upgrade can be pulled after it. Which form a
// version's tables have is recorded with the version (datasets.record_form,
// Version.RecordForm): RecordForm for groups, 0 when not recorded.

// RecordForm is the record form of the versions an import writes: groups
// of records packed in promotion.PackedLen bytes. A change of the packing
// must come with a new form, which older read nodes then refuse by its
// number instead of misreading (the array below stops the build when
// PackedLen changes alone).
const RecordForm = 1

var _ = [1]struct{}{}[promotion.PackedLen-32]

// The columns of a version table.
const (
	tableColumns = "slot smallint NOT NULL, recs bytea NOT NULL, lines bytea NOT NULL"
	copyColumns  = "slot, recs, lines" // written by an import
	pullColumns  = "slot, recs"        // read by Pull
)

// A group's sizes.
const (
	lineLen = 8
	// maxGroup bounds the rows of a group: 96 rows are 3.8 KiB, so that
	// two full groups fit in a page of 8 KiB.
	maxGroup = 96
	// groupHeadLen is a pulled tuple up to its recs: field count, slot
	// (length and value), recs' length.
	groupHeadLen = 2 + 4 + 2 + 4
)

// The columns of a table of the row form, and its tuples' lengths: field
// count, slot (length and value), the record's fields in promotion's COPY
// form.
const (
	rowRecordColumns = "id, price, expires"
	rowPullColumns   = "slot, " + rowRecordColumns
	rowTupleLen      = 2 + 4 + 2 + promotion.CopyLen
	// recTupleLen is a tuple of the record's fields alone (a whole table
	// pulled without its slot column).
	recTupleLen = 2 + promotion.CopyLen
)

// row is one promotion on its way to a COPY stream: the record, its line
// (Seq) and its ring slot.
type row struct {
	promotion.Row
	slot int16
}

// appendGroup appends the tuple of the rows at idx, all of one slot and at
// most maxGroup, in the columns' order (copyColumns).
func appendGroup(b []byte, rows []row, idx []int32) []byte {
	n := len(idx)
	b = binary.BigEndian.AppendUint16(b, 3)
	b = binary.BigEndian.AppendUint32(b, 2)
	b = binary.BigEndian.AppendUint16(b, uint16(rows[idx[0]].slot))
	b = binary.BigEndian.AppendUint32(b, uint32(n*promotion.PackedLen))
	for _, i := range idx {
		b = promotion.AppendPacked(b, &rows[i].Record)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(n*lineLen))
	for _, i := range idx {
		b = binary.BigEndian.AppendUint64(b, rows[i].Seq)
	}
	return b
}

// copyReader encodes batches of rows in PostgreSQL's binary COPY format.
// It reads until the rows channel is closed (Commit) or the batch's
// context ends (Abort, a failed COPY): pgconn reads it from a goroutine
// of its own that it does not wait for when the connection fails, so a
// Read that could block forever would keep that goroutine, and through
// it the whole Batch, alive.
type copyReader struct {
	rows    <-chan []row
	b       *Batch
	buf     []byte
	off     int
	started bool
	done    bool
	// start and order are appendGroups' counting sort by slot.
	start []int32
	order []int32
}

// copyHeader is the signature, flags and header extension of binary COPY.
var copyHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

func (c *copyReader) Read(p []byte) (int, error) {
	for c.off == len(c.buf) {
		if c.done {
			return 0, io.EOF
		}
		c.buf, c.off = c.buf[:0], 0
		if !c.started {
			c.buf = append(c.buf, copyHeader...)
			c.started = true
		}
		var rows []row
		var ok bool
		select {
		case rows, ok = <-c.rows:
		case <-c.b.ctx.Done():
			// The batch ended without closing the channel (Abort, a
			// failed COPY): Add may still send on it, so nothing closes
			// it, and this is how the reader learns it must stop.
			return 0, context.Cause(c.b.ctx)
		}
		if !ok {
			c.buf = append(c.buf, 0xff, 0xff) // trailer: -1 fields
			c.done = true
			continue
		}
		c.appendGroups(rows)
		c.b.rowsPool.Put(rows[:0])
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

// appendGroups appends rows, all of one table, as groups: sorted by slot
// (a counting sort over the ring's slots), each slot's rows cut into
// tuples of at most maxGroup.
func (c *copyReader) appendGroups(rows []row) {
	if c.start == nil {
		c.start = make([]int32, c.b.s.cfg.Slots+1)
	}
	clear(c.start)
	for i := range rows {
		c.start[rows[i].slot+1]++
	}
	for s := 1; s < len(c.start); s++ {
		c.start[s] += c.start[s-1]
	}
	c.order = slices.Grow(c.order[:0], len(rows))[:len(rows)]
	for i := range rows {
		s := rows[i].slot
		c.order[c.start[s]] = int32(i)
		c.start[s]++
	}
	for i := 0; i < len(c.order); {
		slot := rows[c.order[i]].slot
		j := i + 1
		for j < len(c.order) && j-i < maxGroup && rows[c.order[j]].slot == slot {
			j++
		}
		c.buf = appendGroup(c.buf, rows, c.order[i:j])
		i = j
	}
}

// copyForm is the form of the tuples a pull reads.
type copyForm int

const (
	formGroups  copyForm = iota // pullColumns of a table of groups
	formRows                    // rowPullColumns of a table of the row form
	formRecords                 // rowRecordColumns; a row's slot is ring.Slot(id, ringSlots)
)

// maxGroupBytes bounds the recs of a pulled group, and so what the
// decoder buffers of a tuple cut across writes.
const maxGroupBytes = 1 << 20

// copyDecoder parses PostgreSQL's binary COPY format as it is written to
// it, across writes of any size, calling fn for each row its tuples hold.
type copyDecoder struct {
	fn   func(slot int, r *promotion.Record) error
	form copyForm
	// want, when set, is the slots a group may be of: a group of another
	// slot (a corrupt table) is an error, not rows handed to fn.
	want      []bool
	ringSlots int
	buf       []byte
	header    bool
	trailer   bool
	rec       promotion.Record
	err       error
}

func (d *copyDecoder) Write(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	data := p
	if len(d.buf) > 0 {
		d.buf = append(d.buf, p...)
		data = d.buf
	}
	used, err := d.decode(data)
	if err != nil {
		d.err = err
		return 0, err
	}
	rest := data[used:]
	if len(d.buf) > 0 {
		d.buf = append(d.buf[:0], rest...)
	} else {
		d.buf = append(d.buf, rest...)
	}
	return len(p), nil
}

func (d *copyDecoder) decode(data []byte) (int, error) {
	off := 0
	if !d.header {
		if len(data) < len(copyHeader) {
			return 0, nil
		}
		if string(data[:11]) != string(copyHeader[:11]) {
			return 0, errors.New("pgstore: not a binary COPY stream")
		}
		ext := int(binary.BigEndian.Uint32(data[15:19]))
		if ext > maxGroupBytes {
			return 0, errors.New("pgstore: COPY header extension too long")
		}
		if len(data) < 19+ext {
			return 0, nil
		}
		off = 19 + ext
		d.header = true
	}
	switch d.form {
	case formRows:
		return d.decodeRows(data, off)
	case formRecords:
		return d.decodeRecords(data, off)
	}
	return d.decodeGroups(data, off)
}

// fields reads the field count of the tuple at data[off:]: done at the
// trailer, an error when it is not want.
func (d *copyDecoder) fields(data []byte, off, want int) (done bool, err error) {
	n := int16(binary.BigEndian.Uint16(data[off:]))
	if n == -1 {
		d.trailer = true
		return true, nil
	}
	if int(n) != want {
		return false, fmt.Errorf("pgstore: COPY tuple with %d fields, want %d", n, want)
	}
	return false, nil
}

// decodeGroups is decode's loop for tuples of pullColumns, from off.
func (d *copyDecoder) decodeGroups(data []byte, off int) (int, error) {
	for len(data)-off >= 2 {
		if done, err := d.fields(data, off, 2); done || err != nil {
			return off + 2, err
		}
		if len(data)-off < groupHeadLen {
			break
		}
		t := data[off:]
		size := int32(binary.BigEndian.Uint32(t[8:]))
		if binary.BigEndian.Uint32(t[2:]) != 2 || size <= 0 || size%promotion.PackedLen != 0 || size > maxGroupBytes {
			return 0, errors.New("pgstore: unexpected field sizes in COPY stream")
		}
		if len(t) < groupHeadLen+int(size) {
			break
		}
		slot := int(int16(binary.BigEndian.Uint16(t[6:])))
		if d.want != nil && (slot < 0 || slot >= len(d.want) || !d.want[slot]) {
			return 0, fmt.Errorf("pgstore: COPY group of slot %d, not one of the slots pulled", slot)
		}
		for recs := t[groupHeadLen : groupHeadLen+int(size)]; len(recs) > 0; recs = recs[promotion.PackedLen:] {
			promotion.DecodePacked(recs, &d.rec)
			if err := d.fn(slot, &d.rec); err != nil {
				return 0, err
			}
		}
		off += groupHeadLen + int(size)
	}
	return off, nil
}

// decodeRows is decode's loop for tuples of rowPullColumns, from off.
func (d *copyDecoder) decodeRows(data []byte, off int) (int, error) {
	for len(data)-off >= 2 {
		if done, err := d.fields(data, off, 1+promotion.CopyFields); done || err != nil {
			return off + 2, err
		}
		if len(data)-off < rowTupleLen {
			break
		}
		t := data[off : off+rowTupleLen]
		if binary.BigEndian.Uint32(t[2:]) != 2 || promotion.DecodeCopy(t[8:], &d.rec) != nil {
			return 0, errors.New("pgstore: unexpected field sizes in COPY stream")
		}
		slot := int(int16(binary.BigEndian.Uint16(t[6:])))
		if err := d.fn(slot, &d.rec); err != nil {
			return 0, err
		}
		off += rowTupleLen
	}
	return off, nil
}

// decodeRecords is decode's loop for tuples of rowRecordColumns, from off.
func (d *copyDecoder) decodeRecords(data []byte, off int) (int, error) {
	for len(data)-off >= 2 {
		if done, err := d.fields(data, off, promotion.CopyFields); done || err != nil {
			return off + 2, err
		}
		if len(data)-off < recTupleLen {
			break
		}
		if promotion.DecodeCopy(data[off+2:off+recTupleLen], &d.rec) != nil {
			return 0, errors.New("pgstore: unexpected field sizes in COPY stream")
		}
		if err := d.fn(ring.Slot(d.rec.ID, d.ringSlots), &d.rec); err != nil {
			return 0, err
		}
		off += recTupleLen
	}
	return off, nil
}
