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

// testReader returns a copyReader as an import's table stream uses it,
// for slots slots.
func testReader(slots int) *copyReader {
	return &copyReader{b: &Batch{s: &Store{cfg: Config{Slots: slots}}}}
}

// BenchmarkAppendGroups encodes rows for COPY FROM, one row per operation,
// in batches as Add hands them to a table (4096 rows of a sixteenth of the
// slots).
func BenchmarkAppendGroups(b *testing.B) {
	rows := benchRows(4096 * 16)
	var batch []row
	for _, r := range rows {
		if r.slot%16 == 0 {
			batch = append(batch, r)
		}
	}
	batch = batch[:min(len(batch), 4096)]
	c := testReader(4096)
	b.ReportAllocs()
	for b.Loop() {
		c.buf = c.buf[:0]
		c.appendGroups(batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/row")
}

// groupStream returns the pull stream (pullColumns) of the import stream
// of tuples in buf, as PostgreSQL would send it back: each group without
// its lines.
func groupStream(t testing.TB, buf []byte) []byte {
	out := bytes.Clone(copyHeader)
	for len(buf) > 0 {
		if binary.BigEndian.Uint16(buf) != 3 || binary.BigEndian.Uint32(buf[2:]) != 2 {
			t.Fatalf("import tuple starts %x", buf[:min(len(buf), 8)])
		}
		n := int(binary.BigEndian.Uint32(buf[8:]))
		lines := int(binary.BigEndian.Uint32(buf[12+n:]))
		if n%promotion.PackedLen != 0 || lines != n/promotion.PackedLen*lineLen || n/promotion.PackedLen > maxGroup {
			t.Fatalf("group of %d bytes of records, %d of lines", n, lines)
		}
		out = binary.BigEndian.AppendUint16(out, 2)
		out = append(out, buf[2:12+n]...)
		buf = buf[12+n+4+lines:]
	}
	return append(out, 0xff, 0xff)
}

// BenchmarkCopyDecode decodes a COPY TO stream of the columns Pull asks
// for, in writes of 64 KiB as pgconn delivers them; one row per operation.
func BenchmarkCopyDecode(b *testing.B) {
	c := testReader(4096)
	rows := benchRows(4096 * 16)
	for i := 0; i < len(rows); i += 4096 {
		c.appendGroups(rows[i : i+4096])
	}
	stream := groupStream(b, c.buf)
	var sum int64
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		d := &copyDecoder{fn: func(slot int, r *promotion.Record) error {
			sum += r.PriceMicros + int64(slot)
			return nil
		}}
		for off := 0; off < len(stream); off += 64 << 10 {
			if _, err := d.Write(stream[off:min(off+64<<10, len(stream))]); err != nil {
				b.Fatal(err)
			}
		}
		n++
	}
	if sum == 0 {
		b.Fatal("decoded nothing")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*len(rows)), "ns/row")
}

// TestAppendGroups pins an import's tuple (the columns of copyColumns, in
// order, each with its length) and checks that a batch comes back whole,
// each row in its slot's groups, none over maxGroup.
func TestAppendGroups(t *testing.T) {
	a := row{Row: promotion.Row{Record: promotion.Record{PriceMicros: 60683466, Expires: 1533346351}, Seq: 9}, slot: 4095}
	for i := range a.ID {
		a.ID[i] = byte(i)
	}
	b := row{Row: promotion.Row{Record: promotion.Record{ID: promotion.ID{15: 1}, PriceMicros: 1, Expires: -1}, Seq: 1 << 40}, slot: 4095}
	c := row{Row: promotion.Row{Record: promotion.Record{PriceMicros: 2, Expires: 3}, Seq: 4}, slot: 7}
	want, _ := hex.DecodeString(
		"0003" + "00000002" + "0007" +
			"00000020" + "00000000000000000000000000000000" + "0000000000000002" + "0000000000000003" +
			"00000008" + "0000000000000004" +
			"0003" + "00000002" + "0fff" +
			"00000040" + "000102030405060708090a0b0c0d0e0f" + "00000000039df4ca" + "000000005b65022f" +
			"00000000000000000000000000000001" + "0000000000000001" + "ffffffffffffffff" +
			"00000010" + "0000000000000009" + "0000010000000000")
	r := testReader(4096)
	r.buf = []byte{0xff}
	r.appendGroups([]row{a, c, b})
	if r.buf[0] != 0xff || !bytes.Equal(r.buf[1:], want) {
		t.Fatalf("appendGroups = %x, want %x", r.buf[1:], want)
	}

	rows := benchRows(3000)
	for i := range 300 { // one slot over two groups and a bit
		rows[i].slot = 12
	}
	r = testReader(4096)
	r.appendGroups(rows)
	stream := groupStream(t, r.buf)
	got := map[promotion.ID]int16{}
	d := &copyDecoder{fn: func(slot int, rec *promotion.Record) error {
		got[rec.ID] = int16(slot)
		return nil
	}}
	if _, err := d.Write(stream); err != nil || !d.trailer {
		t.Fatalf("decoding the batch: %v, trailer %v", err, d.trailer)
	}
	if len(got) != len(rows) {
		t.Fatalf("%d rows back, want %d", len(got), len(rows))
	}
	for _, x := range rows {
		if slot, ok := got[x.ID]; !ok || slot != x.slot {
			t.Fatalf("id %s back in slot %d (%v), want %d", x.ID, slot, ok, x.slot)
		}
	}
}

// pulledTuple is a tuple of Pull's query of a table of the row form
// (rowPullColumns) as PostgreSQL sends it.
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

// TestCopyDecoderGroups feeds a pull's stream in writes of every size and
// checks the rows, the trailer and the refusal of malformed tuples.
func TestCopyDecoderGroups(t *testing.T) {
	rows := benchRows(2000)
	r := testReader(64) // about 31 rows a slot: groups of several rows
	for i := range rows {
		rows[i].slot %= 64
	}
	r.appendGroups(rows)
	stream := groupStream(t, r.buf)
	for _, size := range []int{1, 2, 7, groupHeadLen, promotion.PackedLen + 1, 4096, len(stream)} {
		got := map[promotion.ID]row{}
		d := &copyDecoder{fn: func(slot int, rec *promotion.Record) error {
			got[rec.ID] = row{Row: promotion.Row{Record: *rec}, slot: int16(slot)}
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
		for _, x := range rows {
			if g := got[x.ID]; g.slot != x.slot || g.Record != x.Record {
				t.Fatalf("writes of %d bytes: got %+v, want %+v", size, g, x)
			}
		}
	}

	good := stream[len(copyHeader) : len(copyHeader)+groupHeadLen+promotion.PackedLen]
	binary.BigEndian.PutUint32(good[8:], promotion.PackedLen) // one row
	with := func(off int, v uint32) []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint32(b[off:], v)
		return b
	}
	bad := map[string][]byte{
		"three fields":     append(binary.BigEndian.AppendUint16(nil, 3), good[2:]...),
		"slot length 4":    with(2, 4),
		"recs of 31 bytes": with(8, promotion.PackedLen-1),
		"recs empty":       with(8, 0),
		"recs null":        with(8, 0xffffffff),
		"recs of 2 MiB":    with(8, 2<<20),
	}
	for name, b := range bad {
		d := &copyDecoder{fn: func(int, *promotion.Record) error {
			t.Fatalf("%s: decoded a row", name)
			return nil
		}}
		if _, err := d.Write(append(append(bytes.Clone(copyHeader), b...), bytes.Repeat([]byte{0}, 64)...)); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}

	// A group of a slot not pulled (a corrupt table) is refused.
	slot := int(binary.BigEndian.Uint16(good[6:]))
	for _, want := range [][]bool{make([]bool, slot), make([]bool, slot+2)} {
		d := &copyDecoder{want: want, fn: func(int, *promotion.Record) error {
			t.Fatalf("slot %d of %d wanted: decoded a row", slot, len(want))
			return nil
		}}
		if _, err := d.Write(append(bytes.Clone(copyHeader), good...)); err == nil {
			t.Fatalf("a group of slot %d accepted, %d slots wanted, not it", slot, len(want))
		}
	}
	want := make([]bool, slot+1)
	want[slot] = true
	d := &copyDecoder{want: want, fn: func(int, *promotion.Record) error { return nil }}
	if _, err := d.Write(append(bytes.Clone(copyHeader), good...)); err != nil {
		t.Fatalf("a group of the slot wanted: %v", err)
	}
}

// TestCopyDecoderRows is TestCopyDecoderGroups for a table of the row form.
func TestCopyDecoderRows(t *testing.T) {
	rows := benchRows(50)
	stream := bytes.Clone(copyHeader)
	for i := range rows {
		stream = append(stream, pulledTuple(rows[i].slot, &rows[i].Record)...)
	}
	stream = append(stream, 0xff, 0xff)
	for _, size := range []int{1, 2, 7, rowTupleLen, rowTupleLen + 1, len(stream)} {
		var got []row
		d := &copyDecoder{form: formRows, fn: func(slot int, r *promotion.Record) error {
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
		d := &copyDecoder{form: formRows, fn: func(int, *promotion.Record) error {
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
