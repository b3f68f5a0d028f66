package pgstore

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
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
		rows[i] = row{Row: promotion.Row{Record: r, Seq: uint64(i + 1)}, slot: int16(ring.Slot(r.ID, 4096))}
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
		t = append(t, r.ID[:]...)
		t = binary.BigEndian.AppendUint32(t, 8)
		t = binary.BigEndian.AppendUint64(t, uint64(r.PriceMicros))
		t = binary.BigEndian.AppendUint32(t, 8)
		t = binary.BigEndian.AppendUint64(t, uint64(r.Expires))
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

// TestAppendTuple pins an import's tuple: the columns of copyColumns, in
// order, each with its length.
func TestAppendTuple(t *testing.T) {
	r := row{Row: promotion.Row{Record: promotion.Record{PriceMicros: 60683466, Expires: 1533346351}, Seq: 9}, slot: 4095}
	for i := range r.ID {
		r.ID[i] = byte(i)
	}
	want, _ := hex.DecodeString("0005" + "00000002" + "0fff" +
		"00000010" + "000102030405060708090a0b0c0d0e0f" + "00000008" + "00000000039df4ca" + "00000008" + "000000005b65022f" +
		"00000008" + "0000000000000009")
	got := appendTuple([]byte{0xff}, &r)
	if got[0] != 0xff || !bytes.Equal(got[1:], want) || len(want) != copyTupleLen {
		t.Fatalf("appendTuple = %x, want %x (%d bytes)", got, want, copyTupleLen)
	}
}

// pulledTuple is a tuple of Pull's query (pullColumns) as PostgreSQL sends it.
func pulledTuple(slot int16, r *promotion.Record) []byte {
	t := binary.BigEndian.AppendUint16(nil, 4)
	t = binary.BigEndian.AppendUint32(t, 2)
	t = binary.BigEndian.AppendUint16(t, uint16(slot))
	t = binary.BigEndian.AppendUint32(t, 16)
	t = append(t, r.ID[:]...)
	t = binary.BigEndian.AppendUint32(t, 8)
	t = binary.BigEndian.AppendUint64(t, uint64(r.PriceMicros))
	t = binary.BigEndian.AppendUint32(t, 8)
	return binary.BigEndian.AppendUint64(t, uint64(r.Expires))
}

// TestCopyDecoder feeds a pull's stream in writes of every size and checks
// the rows, the trailer and the refusal of malformed tuples.
func TestCopyDecoder(t *testing.T) {
	rows := benchRows(50)
	stream := bytes.Clone(copyHeader)
	for i := range rows {
		stream = append(stream, pulledTuple(rows[i].slot, &rows[i].Record)...)
	}
	stream = append(stream, 0xff, 0xff)
	for _, size := range []int{1, 2, 7, pullTupleLen, pullTupleLen + 1, len(stream)} {
		var got []row
		d := &copyDecoder{fn: func(slot int, r *promotion.Record) error {
			got = append(got, row{Row: promotion.Row{Record: *r}, slot: int16(slot)})
			return nil
		}}
		for off := 0; off < len(stream); off += size {
			if _, err := d.Write(stream[off:min(off+size, len(stream))]); err != nil {
				t.Fatalf("writes of %d bytes: %v", size, err)
			}
		}
		if !d.trailer || len(got) != len(rows) {
			t.Fatalf("writes of %d bytes: %d rows, trailer %v; want %d rows and the trailer", size, len(got), d.trailer, len(rows))
		}
		for i := range got {
			if got[i].slot != rows[i].slot || got[i].Record != rows[i].Record {
				t.Fatalf("writes of %d bytes: row %d = %+v, want %+v", size, i, got[i], rows[i])
			}
		}
	}

	good := pulledTuple(rows[0].slot, &rows[0].Record)
	bad := map[string][]byte{
		"five fields":   append(binary.BigEndian.AppendUint16(nil, 5), good[2:]...),
		"slot length 4": append(append(bytes.Clone(good[:2]), 0, 0, 0, 4), good[6:]...),
		"id length 15":  append(append(bytes.Clone(good[:8]), 0, 0, 0, 15), good[12:]...),
		"price null":    append(append(bytes.Clone(good[:28]), 0xff, 0xff, 0xff, 0xff), good[32:]...),
		"not binary":    []byte("1\t2\t3\n"),
	}
	for name, b := range bad {
		d := &copyDecoder{fn: func(int, *promotion.Record) error {
			t.Fatalf("%s: decoded a row", name)
			return nil
		}}
		in := b
		if name != "not binary" {
			in = append(bytes.Clone(copyHeader), b...)
		}
		if _, err := d.Write(append(in, bytes.Repeat([]byte{0}, 32)...)); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
}
