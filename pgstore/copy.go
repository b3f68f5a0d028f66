package pgstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/promotion-service/promo/promotion"
)

// This file is PostgreSQL's binary COPY format as the version tables use
// it: the stream an import writes into each table and the stream a pull
// reads back.

// row is one promotion on its way to a COPY stream.
type row struct {
	slot    int16
	id      promotion.ID
	price   int64
	expires int64
	line    int64
}

// copyReader encodes batches of rows in PostgreSQL's binary COPY format.
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
		rows, ok := <-c.rows
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

// appendTuple appends one row: 5 fields, each a 4-byte length and the
// value in network byte order.
func appendTuple(b []byte, r *row) []byte {
	b = binary.BigEndian.AppendUint16(b, 5)
	b = binary.BigEndian.AppendUint32(b, 2)
	b = binary.BigEndian.AppendUint16(b, uint16(r.slot))
	b = binary.BigEndian.AppendUint32(b, 16)
	b = append(b, r.id[:]...)
	b = binary.BigEndian.AppendUint32(b, 8)
	b = binary.BigEndian.AppendUint64(b, uint64(r.price))
	b = binary.BigEndian.AppendUint32(b, 8)
	b = binary.BigEndian.AppendUint64(b, uint64(r.expires))
	b = binary.BigEndian.AppendUint32(b, 8)
	return binary.BigEndian.AppendUint64(b, uint64(r.line))
}

// copyDecoder parses PostgreSQL's binary COPY format as it is written to
// it, across writes of any size.
type copyDecoder struct {
	fn      func(slot int, r *promotion.Record) error
	buf     []byte
	header  bool
	trailer bool
	rec     promotion.Record
	err     error
}

const tupleLen = 2 + 4 + 2 + 4 + 16 + 4 + 8 + 4 + 8

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
	for len(data)-off >= 2 {
		n := int16(binary.BigEndian.Uint16(data[off:]))
		if n == -1 {
			d.trailer = true
			return off + 2, nil
		}
		if n != 4 {
			return 0, fmt.Errorf("pgstore: COPY tuple with %d fields, want 4", n)
		}
		if len(data)-off < tupleLen {
			break
		}
		t := data[off:]
		if binary.BigEndian.Uint32(t[2:]) != 2 || binary.BigEndian.Uint32(t[8:]) != 16 ||
			binary.BigEndian.Uint32(t[28:]) != 8 || binary.BigEndian.Uint32(t[40:]) != 8 {
			return 0, errors.New("pgstore: unexpected field sizes in COPY stream")
		}
		slot := int(int16(binary.BigEndian.Uint16(t[6:])))
		copy(d.rec.ID[:], t[12:28])
		d.rec.PriceMicros = int64(binary.BigEndian.Uint64(t[32:]))
		d.rec.Expires = int64(binary.BigEndian.Uint64(t[44:]))
		if err := d.fn(slot, &d.rec); err != nil {
			return 0, err
		}
		off += tupleLen
	}
	return off, nil
}
