package pgstore

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// benchRows returns n rows as Add buffers them.
func benchRows(n int) []row {
	recs := randomRecords(rand.New(rand.NewPCG(11, 12)), n)
	rows := make([]row, n)
	for i, r := range recs {
		rows[i] = row{slot: int16(ring.Slot(r.ID, 4096)), id: r.ID, price: r.PriceMicros, expires: r.Expires, line: int64(i + 1)}
	}
	return rows
}

// BenchmarkAppendTuple encodes rows for COPY FROM, one row per operation.
func BenchmarkAppendTuple(b *testing.B) {
	rows := benchRows(4096)
	buf := make([]byte, 0, 1<<16)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if len(buf) > 1<<16-128 {
			buf = buf[:0]
		}
		buf = appendTuple(buf, &rows[i&4095])
		i++
	}
}

// BenchmarkCopyDecode decodes a COPY TO stream of the columns Pull asks
// for, one row per Write as pgconn delivers them.
func BenchmarkCopyDecode(b *testing.B) {
	rows := benchRows(4096)
	var tuples [][]byte
	for i := range rows {
		r := &rows[i]
		t := binary.BigEndian.AppendUint16(nil, 4)
		t = binary.BigEndian.AppendUint32(t, 2)
		t = binary.BigEndian.AppendUint16(t, uint16(r.slot))
		t = binary.BigEndian.AppendUint32(t, 16)
		t = append(t, r.id[:]...)
		t = binary.BigEndian.AppendUint32(t, 8)
		t = binary.BigEndian.AppendUint64(t, uint64(r.price))
		t = binary.BigEndian.AppendUint32(t, 8)
		t = binary.BigEndian.AppendUint64(t, uint64(r.expires))
		tuples = append(tuples, t)
	}
	var sum int64
	d := &copyDecoder{fn: func(slot int, r *promotion.Record) error {
		sum += r.PriceMicros + int64(slot)
		return nil
	}}
	if _, err := d.Write(copyHeader); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := d.Write(tuples[i&4095]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if sum == 0 {
		b.Fatal("decoded nothing")
	}
}
