package promotion

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
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
