package promotion

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func TestValueRoundTrip(t *testing.T) {
	prices := []int64{0, 1, 127, 128, 1e6, 60683466, 1<<62 + 12345, MaxPriceMicros - 1, MaxPriceMicros}
	expires := []int64{MinExpires, MinExpires + 1, -1, 0, 1, 63, 64, 1533346351, MaxExpires - 1, MaxExpires}
	for _, p := range prices {
		for _, e := range expires {
			in := Record{PriceMicros: p, Expires: e}
			b := AppendValue(nil, &in)
			if len(b) > MaxValueLen {
				t.Fatalf("AppendValue(%d, %d) = %d bytes, more than MaxValueLen %d", p, e, len(b), MaxValueLen)
			}
			if b[0] != valueFormat {
				t.Fatalf("format byte %d", b[0])
			}
			var out Record
			if err := DecodeValue(b, &out); err != nil {
				t.Fatalf("DecodeValue(AppendValue(%d, %d)) = %v", p, e, err)
			}
			if out != in {
				t.Fatalf("round trip %+v -> %+v", in, out)
			}
			// Appending keeps what is already in dst.
			b2 := AppendValue([]byte("key"), &in)
			if !bytes.Equal(b2[3:], b) || string(b2[:3]) != "key" {
				t.Fatalf("AppendValue with prefix = %x", b2)
			}
		}
	}
}

func TestDecodeValueRejects(t *testing.T) {
	good := AppendValue(nil, &Record{PriceMicros: 60683466, Expires: 1533346351})
	bad := map[string][]byte{
		"nil":              nil,
		"empty":            {},
		"format only":      {valueFormat},
		"two bytes":        {valueFormat, 0},
		"wrong format":     append([]byte{2}, good[1:]...),
		"format zero":      append([]byte{0}, good[1:]...),
		"trailing byte":    append(bytes.Clone(good), 0),
		"trailing bytes":   append(bytes.Clone(good), 1, 2, 3),
		"truncated":        good[:len(good)-1],
		"truncated price":  {valueFormat, 0x80},
		"price continues":  {valueFormat, 0x80, 0x80},
		"garbage":          []byte("hello, world"),
		"all ff":           bytes.Repeat([]byte{0xff}, MaxValueLen),
		"price overflow":   append([]byte{valueFormat}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0),
		"price > max":      binary.AppendVarint(binary.AppendUvarint([]byte{valueFormat}, MaxPriceMicros+1), 0),
		"price max uint":   binary.AppendVarint(binary.AppendUvarint([]byte{valueFormat}, math.MaxUint64), 0),
		"expires < min":    binary.AppendVarint([]byte{valueFormat, 0}, MinExpires-1),
		"expires > max":    binary.AppendVarint([]byte{valueFormat, 0}, MaxExpires+1),
		"expires minint":   binary.AppendVarint([]byte{valueFormat, 0}, math.MinInt64),
		"overlong price":   {valueFormat, 0x80, 0x00, 0x00},
		"overlong expires": {valueFormat, 0x00, 0x80, 0x00},
		"overlong both":    {valueFormat, 0x81, 0x80, 0x00, 0x82, 0x00},
	}
	for name, b := range bad {
		t.Run(name, func(t *testing.T) {
			r := Record{PriceMicros: 42, Expires: 43}
			if err := DecodeValue(b, &r); !errors.Is(err, ErrBadValue) {
				t.Fatalf("DecodeValue(%x) = %v, want ErrBadValue", b, err)
			}
			if r.PriceMicros != 42 || r.Expires != 43 {
				t.Fatalf("DecodeValue(%x) changed the record on error: %+v", b, r)
			}
		})
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{valueFormat, 0, 0})
	f.Add([]byte{valueFormat, 0x80, 0x00, 0x00})
	f.Add(AppendValue(nil, &Record{PriceMicros: 60683466, Expires: 1533346351}))
	f.Add(AppendValue(nil, &Record{PriceMicros: MaxPriceMicros, Expires: MaxExpires}))
	f.Add(AppendValue(nil, &Record{PriceMicros: 0, Expires: MinExpires}))
	f.Add(bytes.Repeat([]byte{0xff}, MaxValueLen+1))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if err := DecodeValue(b, &r); err != nil {
			if !errors.Is(err, ErrBadValue) {
				t.Fatalf("DecodeValue error %v is not ErrBadValue", err)
			}
			return
		}
		if r.PriceMicros < 0 || r.Expires < MinExpires || r.Expires > MaxExpires {
			t.Fatalf("DecodeValue(%x) accepted out-of-range %+v", b, r)
		}
		if again := AppendValue(nil, &r); !bytes.Equal(again, b) {
			t.Fatalf("DecodeValue(%x) = %+v, which encodes as %x", b, r, again)
		}
	})
}

func FuzzValueRoundTrip(f *testing.F) {
	f.Add(int64(0), int64(0))
	f.Add(int64(60683466), int64(1533346351))
	f.Add(int64(MaxPriceMicros), int64(MaxExpires))
	f.Add(int64(0), int64(MinExpires))
	f.Add(int64(-1), int64(MaxExpires+1))
	f.Add(int64(math.MinInt64), int64(math.MinInt64))
	f.Fuzz(func(t *testing.T, price, expires int64) {
		in := Record{PriceMicros: price, Expires: expires}
		b := AppendValue(nil, &in)
		if len(b) > MaxValueLen {
			t.Fatalf("AppendValue(%+v) = %d bytes", in, len(b))
		}
		var out Record
		err := DecodeValue(b, &out)
		valid := price >= 0 && expires >= MinExpires && expires <= MaxExpires
		switch {
		case valid && err != nil:
			t.Fatalf("DecodeValue(AppendValue(%+v)) = %v", in, err)
		case valid && out != in:
			t.Fatalf("round trip %+v -> %+v", in, out)
		case !valid && err == nil:
			t.Fatalf("DecodeValue accepted out-of-range %+v as %+v", in, out)
		}
	})
}

func BenchmarkAppendValue(b *testing.B) {
	r := Record{PriceMicros: 60683466, Expires: 1533346351}
	buf := make([]byte, 0, MaxValueLen)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendValue(buf[:0], &r)
	}
}

func BenchmarkDecodeValue(b *testing.B) {
	v := AppendValue(nil, &Record{PriceMicros: 60683466, Expires: 1533346351})
	var r Record
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeValue(v, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRowLayout pins the spill form byte by byte, as doc.go describes it.
func TestRowLayout(t *testing.T) {
	r := Row{Record: Record{PriceMicros: 60683466, Expires: 1533346351}, Seq: 7}
	for i := range r.ID {
		r.ID[i] = byte(i)
	}
	want, _ := hex.DecodeString("0706050403020100" + "0f0e0d0c0b0a0908" + "caf49d0300000000" + "2f02655b00000000" + "0700000000000000")
	b := bytes.Repeat([]byte{0xee}, RowLen+1)
	PutRow(b, &r)
	if !bytes.Equal(b[:RowLen], want) {
		t.Fatalf("PutRow = %x, want %x", b[:RowLen], want)
	}
	if b[RowLen] != 0xee {
		t.Fatalf("PutRow wrote past RowLen")
	}
	var got Row
	DecodeRow(want, &got)
	if got != r {
		t.Fatalf("DecodeRow = %+v, want %+v", got, r)
	}
}

func TestRowRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	f := func(in Row) {
		t.Helper()
		var b [RowLen]byte
		PutRow(b[:], &in)
		var out Row
		DecodeRow(b[:], &out)
		if out != in {
			t.Fatalf("round trip %+v -> %+v", in, out)
		}
	}
	f(Row{})
	f(Row{Record: Record{ID: ID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		PriceMicros: MaxPriceMicros, Expires: MaxExpires}, Seq: math.MaxUint64})
	f(Row{Record: Record{Expires: MinExpires}, Seq: 1})
	// Out of Record's bounds: the form carries them unchanged.
	f(Row{Record: Record{PriceMicros: -1, Expires: math.MinInt64}})
	for range 1000 {
		var r Row
		binary.BigEndian.PutUint64(r.ID[:8], rng.Uint64())
		binary.BigEndian.PutUint64(r.ID[8:], rng.Uint64())
		r.PriceMicros, r.Expires, r.Seq = rng.Int64(), rng.Int64()-math.MaxInt64/2, rng.Uint64()
		f(r)
	}
}

func TestRowShortBufferPanics(t *testing.T) {
	f := func(name string, fn func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Fatalf("%s with %d bytes did not panic", name, RowLen-1)
			}
		}()
		fn()
	}
	short := make([]byte, RowLen-1)
	var r Row
	f("PutRow", func() { PutRow(short, &r) })
	f("DecodeRow", func() { DecodeRow(short, &r) })
}

func TestRowDoesNotAllocate(t *testing.T) {
	r := Row{Record: Record{PriceMicros: 60683466, Expires: 1533346351}, Seq: 7}
	b := make([]byte, RowLen)
	if n := testing.AllocsPerRun(1000, func() {
		PutRow(b, &r)
		DecodeRow(b, &r)
	}); n != 0 {
		t.Fatalf("PutRow/DecodeRow allocated %v times per run", n)
	}
}

// FuzzDecodeRow checks that the spill form has exactly one decoding: any
// RowLen bytes decode to a row that encodes back to the same bytes.
func FuzzDecodeRow(f *testing.F) {
	var b [RowLen]byte
	f.Add(b[:])
	PutRow(b[:], &Row{Record: Record{PriceMicros: 60683466, Expires: 1533346351}, Seq: 7})
	f.Add(b[:])
	f.Add(bytes.Repeat([]byte{0xff}, RowLen+3))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < RowLen {
			return // a programmer's error: it panics, as TestRowShortBufferPanics checks
		}
		var r Row
		DecodeRow(b, &r)
		var again [RowLen]byte
		PutRow(again[:], &r)
		if !bytes.Equal(again[:], b[:RowLen]) {
			t.Fatalf("DecodeRow(%x) = %+v, which encodes as %x", b[:RowLen], r, again)
		}
	})
}

func BenchmarkPutRow(b *testing.B) {
	r := Row{Record: Record{PriceMicros: 60683466, Expires: 1533346351}, Seq: 7}
	buf := make([]byte, RowLen)
	b.ReportAllocs()
	b.SetBytes(RowLen)
	for b.Loop() {
		PutRow(buf, &r)
	}
}

func BenchmarkDecodeRow(b *testing.B) {
	buf := make([]byte, RowLen)
	PutRow(buf, &Row{Record: Record{PriceMicros: 60683466, Expires: 1533346351}, Seq: 7})
	var r Row
	b.ReportAllocs()
	b.SetBytes(RowLen)
	for b.Loop() {
		DecodeRow(buf, &r)
	}
}

// TestPackedLayout pins a record of pgstore's groups byte by byte, as
// doc.go describes it.
func TestPackedLayout(t *testing.T) {
	r := Record{PriceMicros: 60683466, Expires: -2}
	for i := range r.ID {
		r.ID[i] = byte(i)
	}
	want, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f" + "00000000039df4ca" + "fffffffffffffffe")
	b := AppendPacked([]byte("group"), &r)
	if string(b[:5]) != "group" || !bytes.Equal(b[5:], want) || len(want) != PackedLen {
		t.Fatalf("AppendPacked = %x, want %x (%d bytes)", b, want, PackedLen)
	}
	var got Record
	DecodePacked(want, &got)
	if got != r {
		t.Fatalf("DecodePacked = %+v, want %+v", got, r)
	}
	if n := testing.AllocsPerRun(1000, func() {
		b = AppendPacked(b[:0], &r)
		DecodePacked(b, &got)
	}); n != 0 {
		t.Fatalf("AppendPacked and DecodePacked allocate %v times", n)
	}
}

// TestCopyLayout pins the COPY fields byte by byte, as PostgreSQL reads a
// uuid and two bigints in binary COPY.
func TestCopyLayout(t *testing.T) {
	r := Record{PriceMicros: 60683466, Expires: -2}
	for i := range r.ID {
		r.ID[i] = byte(i)
	}
	want, _ := hex.DecodeString("00000010" + "000102030405060708090a0b0c0d0e0f" +
		"00000008" + "00000000039df4ca" + "00000008" + "fffffffffffffffe")
	b := AppendCopy([]byte("tuple"), &r)
	if string(b[:5]) != "tuple" || !bytes.Equal(b[5:], want) || len(want) != CopyLen {
		t.Fatalf("AppendCopy = %x, want %x (%d bytes)", b, want, CopyLen)
	}
	var got Record
	if err := DecodeCopy(want, &got); err != nil || got != r {
		t.Fatalf("DecodeCopy = %+v, %v; want %+v", got, err, r)
	}
}

func TestCopyRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	f := func(in Record) {
		t.Helper()
		b := AppendCopy(nil, &in)
		if len(b) != CopyLen {
			t.Fatalf("AppendCopy(%+v) = %d bytes, want %d", in, len(b), CopyLen)
		}
		var out Record
		if err := DecodeCopy(append(b, "next tuple"...), &out); err != nil || out != in {
			t.Fatalf("round trip %+v -> %+v, %v", in, out, err)
		}
	}
	f(Record{})
	f(Record{PriceMicros: MaxPriceMicros, Expires: MaxExpires})
	f(Record{Expires: MinExpires})
	for range 1000 {
		var r Record
		binary.BigEndian.PutUint64(r.ID[:8], rng.Uint64())
		binary.BigEndian.PutUint64(r.ID[8:], rng.Uint64())
		r.PriceMicros, r.Expires = rng.Int64(), rng.Int64()-math.MaxInt64/2
		f(r)
	}
}

func TestDecodeCopyRejects(t *testing.T) {
	good := AppendCopy(nil, &Record{PriceMicros: 60683466, Expires: 1533346351})
	with := func(off int, length uint32) []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint32(b[off:], length)
		return b
	}
	bad := map[string][]byte{
		"nil":              nil,
		"truncated":        good[:CopyLen-1],
		"id length 15":     with(0, 15),
		"id null":          with(0, 0xffffffff),
		"price length 4":   with(20, 4),
		"price null":       with(20, 0xffffffff),
		"expires length 0": with(32, 0),
		"expires null":     with(32, 0xffffffff),
	}
	for name, b := range bad {
		t.Run(name, func(t *testing.T) {
			r := Record{ID: ID{1}, PriceMicros: 42, Expires: 43}
			if err := DecodeCopy(b, &r); !errors.Is(err, ErrBadCopy) {
				t.Fatalf("DecodeCopy(%x) = %v, want ErrBadCopy", b, err)
			}
			if r != (Record{ID: ID{1}, PriceMicros: 42, Expires: 43}) {
				t.Fatalf("DecodeCopy(%x) changed the record on error: %+v", b, r)
			}
		})
	}
}

func TestCopyDoesNotAllocate(t *testing.T) {
	r := Record{PriceMicros: 60683466, Expires: 1533346351}
	buf := make([]byte, 0, CopyLen)
	if n := testing.AllocsPerRun(1000, func() {
		buf = AppendCopy(buf[:0], &r)
		if err := DecodeCopy(buf, &r); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("AppendCopy/DecodeCopy allocated %v times per run", n)
	}
}

// FuzzDecodeCopy feeds DecodeCopy what a PostgreSQL server could send: it
// must reject or decode to a record that encodes as the same bytes.
func FuzzDecodeCopy(f *testing.F) {
	f.Add([]byte{})
	f.Add(AppendCopy(nil, &Record{PriceMicros: 60683466, Expires: 1533346351}))
	f.Add(AppendCopy(nil, &Record{PriceMicros: -1, Expires: math.MinInt64}))
	f.Add(bytes.Repeat([]byte{0xff}, CopyLen+1))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if err := DecodeCopy(b, &r); err != nil {
			if !errors.Is(err, ErrBadCopy) {
				t.Fatalf("DecodeCopy error %v is not ErrBadCopy", err)
			}
			return
		}
		if again := AppendCopy(nil, &r); !bytes.Equal(again, b[:CopyLen]) {
			t.Fatalf("DecodeCopy(%x) = %+v, which encodes as %x", b[:CopyLen], r, again)
		}
	})
}

func BenchmarkAppendCopy(b *testing.B) {
	r := Record{PriceMicros: 60683466, Expires: 1533346351}
	buf := make([]byte, 0, CopyLen)
	b.ReportAllocs()
	b.SetBytes(CopyLen)
	for b.Loop() {
		buf = AppendCopy(buf[:0], &r)
	}
}

func BenchmarkDecodeCopy(b *testing.B) {
	buf := AppendCopy(nil, &Record{PriceMicros: 60683466, Expires: 1533346351})
	var r Record
	b.ReportAllocs()
	b.SetBytes(CopyLen)
	for b.Loop() {
		if err := DecodeCopy(buf, &r); err != nil {
			b.Fatal(err)
		}
	}
}
