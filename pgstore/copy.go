package pgstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// This file is PostgreSQL's binary COPY format as the version tables use
// it: the stream an import writes into each table and the stream a pull
// reads back. The framing and pgstore's own columns (slot, line) are here;
// the record's fields inside each tuple are promotion's COPY form.

// The columns of a version table. The record's are promotion's COPY
// fields (promotion.AppendCopy), in their order and of the types whose
// binary form it writes; slot and line are pgstore's.
const (
	recordColumns    = "id, price, expires"
	recordColumnDefs = "id uuid NOT NULL, price bigint NOT NULL, expires bigint NOT NULL"

	tableColumns = "slot smallint NOT NULL, " + recordColumnDefs + ", line bigint NOT NULL"
	copyColumns  = "slot, " + recordColumns + ", line" // written by an import
	pullColumns  = "slot, " + recordColumns            // read by Pull
)

// Tuple lengths: field count, slot (length and value), the record's
// fields and, when written, line (length and value).
const (
	copyTupleLen = 2 + 4 + 2 + promotion.CopyLen + 4 + 8
	pullTupleLen = 2 + 4 + 2 + promotion.CopyLen
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
		for i := range rows {
			c.buf = appendTuple(c.buf, &rows[i])
		}
		c.b.rowsPool.Put(rows[:0])
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

// appendTuple appends one row in the columns' order (copyColumns): the
// field count, then each field as a 4-byte length and the value in network
// byte order, copyTupleLen bytes in all.
func appendTuple(b []byte, r *row) []byte {
	b = binary.BigEndian.AppendUint16(b, 2+promotion.CopyFields)
	b = binary.BigEndian.AppendUint32(b, 2)
	b = binary.BigEndian.AppendUint16(b, uint16(r.slot))
	b = promotion.AppendCopy(b, &r.Record)
	b = binary.BigEndian.AppendUint32(b, 8)
	return binary.BigEndian.AppendUint64(b, r.Seq)
}

// copyDecoder parses PostgreSQL's binary COPY format as it is written to
// it, across writes of any size. Its tuples are pullColumns, or, when
// ringSlots is set, recordColumns, each row's slot then being
// ring.Slot(id, ringSlots).
type copyDecoder struct {
	fn        func(slot int, r *promotion.Record) error
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
		if len(data) < 19+ext {
			return 0, nil
		}
		off = 19 + ext
		d.header = true
	}
	if d.ringSlots > 0 {
		return d.decodeRecords(data, off)
	}
	for len(data)-off >= 2 {
		n := int16(binary.BigEndian.Uint16(data[off:]))
		if n == -1 {
			d.trailer = true
			return off + 2, nil
		}
		if n != 1+promotion.CopyFields {
			return 0, fmt.Errorf("pgstore: COPY tuple with %d fields, want %d", n, 1+promotion.CopyFields)
		}
		if len(data)-off < pullTupleLen {
			break
		}
		t := data[off : off+pullTupleLen]
		if binary.BigEndian.Uint32(t[2:]) != 2 || promotion.DecodeCopy(t[8:], &d.rec) != nil {
			return 0, errors.New("pgstore: unexpected field sizes in COPY stream")
		}
		slot := int(int16(binary.BigEndian.Uint16(t[6:])))
		if err := d.fn(slot, &d.rec); err != nil {
			return 0, err
		}
		off += pullTupleLen
	}
	return off, nil
}

// decodeRecords is decode's loop for tuples of recordColumns, from off.
func (d *copyDecoder) decodeRecords(data []byte, off int) (int, error) {
	for len(data)-off >= 2 {
		n := int16(binary.BigEndian.Uint16(data[off:]))
		if n == -1 {
			d.trailer = true
			return off + 2, nil
		}
		if n != promotion.CopyFields {
			return 0, fmt.Errorf("pgstore: COPY tuple with %d fields, want %d", n, promotion.CopyFields)
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
