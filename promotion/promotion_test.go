package promotion

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseIDRoundTrip(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		id, err := ParseID([]byte(in))
		if err != nil {
			t.Fatalf("ParseID(%q): %v", in, err)
		}
		if got := string(id.AppendText(nil)); got != want {
			t.Fatalf("ParseID(%q).AppendText = %q, want %q", in, got, want)
		}
		if got := id.String(); got != want {
			t.Fatalf("ParseID(%q).String = %q, want %q", in, got, want)
		}
		// AppendText appends; it does not overwrite.
		if got := string(id.AppendText([]byte("x:"))); got != "x:"+want {
			t.Fatalf("AppendText with prefix = %q", got)
		}
	}
	f("d018ef0b-dbd9-48f1-ac1a-eb4d90e57118", "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	f("D018EF0B-DBD9-48F1-AC1A-EB4D90E57118", "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	f("D018ef0B-dBd9-48F1-Ac1a-eB4D90e57118", "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	f("00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000")
	f("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "ffffffff-ffff-ffff-ffff-ffffffffffff")
	f("01234567-89ab-cdef-0123-456789ABCDEF", "01234567-89ab-cdef-0123-456789abcdef")

	// The bytes are the hex pairs in textual order.
	id, err := ParseID([]byte("01234567-89ab-cdef-0011-2233445566ff"))
	if err != nil {
		t.Fatal(err)
	}
	want := ID{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0xff}
	if id != want {
		t.Fatalf("ParseID bytes = %x, want %x", id, want)
	}
}

func TestParseIDRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		var id ID
		for i := range id {
			id[i] = byte(rng.Uint32())
		}
		text := id.AppendText(nil)
		if len(text) != IDLen {
			t.Fatalf("AppendText length %d", len(text))
		}
		if s := string(text); s != strings.ToLower(s) {
			t.Fatalf("AppendText not lower case: %q", s)
		}
		for _, in := range [][]byte{text, bytes.ToUpper(text)} {
			got, err := ParseID(in)
			if err != nil || got != id {
				t.Fatalf("ParseID(%q) = %x, %v; want %x", in, got, err, id)
			}
		}
	}
}

func TestParseIDRejects(t *testing.T) {
	const good = "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118"
	cases := map[string]string{
		"empty":             "",
		"short":             good[:35],
		"long":              good + "0",
		"long hex":          good + "a",
		"no dashes":         "d018ef0bdbd948f1ac1aeb4d90e57118",
		"braces":            "{" + good + "}",
		"urn":               "urn:uuid:" + good,
		"dash moved left":   "d018ef0-bdbd9-48f1-ac1a-eb4d90e57118",
		"dash moved right":  "d018ef0bd-bd9-48f1-ac1a-eb4d90e57118",
		"second dash moved": "d018ef0b-dbd948-f1-ac1a-eb4d90e57118",
		"third dash moved":  "d018ef0b-dbd9-48f1a-c1a-eb4d90e57118",
		"fourth dash moved": "d018ef0b-dbd9-48f1-ac1ae-b4d90e57118",
		"underscore":        "d018ef0b_dbd9-48f1-ac1a-eb4d90e57118",
		"space inside":      "d018ef0b-dbd9-48f1-ac1a-eb4d90e5711 ",
		"leading space":     " 018ef0b-dbd9-48f1-ac1a-eb4d90e57118",
		"g":                 "g018ef0b-dbd9-48f1-ac1a-eb4d90e57118",
		"G last":            "d018ef0b-dbd9-48f1-ac1a-eb4d90e5711G",
		"dash as hex":       "d018ef0b-dbd9-48f1-ac1a--b4d90e57118",
		"all dashes":        strings.Repeat("-", 36),
		"non-ascii":         "d018ef0b-dbd9-48f1-ac1a-eb4d90e571\xc3\xa9",
		"nul":               "d018ef0b-dbd9-48f1-ac1a-eb4d90e5711\x00",
		"high byte":         "\xff018ef0b-dbd9-48f1-ac1a-eb4d90e5711",
	}
	// Every non-hex byte in every hex position.
	for pos := range IDLen {
		if pos == 8 || pos == 13 || pos == 18 || pos == 23 {
			continue
		}
		for _, c := range []byte{'g', 'G', 'x', ':', '/', '@', '`', '-', 0x80} {
			b := []byte(good)
			b[pos] = c
			cases["pos"+strconv.Itoa(pos)+"="+strconv.QuoteRune(rune(c))] = string(b)
		}
	}
	for _, pos := range []int{8, 13, 18, 23} {
		b := []byte(good)
		b[pos] = '0'
		cases["dash "+strconv.Itoa(pos)+" is hex"] = string(b)
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			id, err := ParseID([]byte(in))
			if !errors.Is(err, ErrBadID) {
				t.Fatalf("ParseID(%q) = %x, %v; want ErrBadID", in, id, err)
			}
			if id != (ID{}) {
				t.Fatalf("ParseID(%q) returned non-zero id %x with an error", in, id)
			}
		})
	}
}

// jsonReference is what encoding/json and the time package produce for the
// lookup body of r, given the price already rounded to cents.
func jsonReference(t testing.TB, r *Record) string {
	t.Helper()
	cents := r.PriceMicros/10000 + (r.PriceMicros%10000+5000)/10000
	b, err := json.Marshal(struct {
		ID    string  `json:"id"`
		Price float64 `json:"price"`
		Date  string  `json:"expiration_date"`
	}{r.ID.String(), float64(cents) / 100, time.Unix(r.Expires, 0).UTC().Format(time.RFC3339)})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAppendJSON(t *testing.T) {
	id, err := ParseID([]byte("D018EF0B-DBD9-48F1-AC1A-EB4D90E57118"))
	if err != nil {
		t.Fatal(err)
	}
	const exp = 1533346351 // 2018-08-04T01:32:31Z
	f := func(micros int64, wantPrice string) {
		t.Helper()
		r := Record{ID: id, PriceMicros: micros, Expires: exp}
		got := string(AppendJSON(nil, &r))
		want := `{"id":"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118","price":` + wantPrice + `,"expiration_date":"2018-08-04T01:32:31Z"}`
		if got != want {
			t.Fatalf("AppendJSON(%d)\n got %s\nwant %s", micros, got, want)
		}
		if ref := jsonReference(t, &r); got != ref {
			t.Fatalf("AppendJSON(%d)\n got %s\n encoding/json %s", micros, got, ref)
		}
		if got := string(AppendPrice2(nil, micros)); got != wantPrice {
			t.Fatalf("AppendPrice2(%d) = %s, want %s", micros, got, wantPrice)
		}
	}
	f(60683466, "60.68")
	f(60685000, "60.69") // half-up
	f(60684999, "60.68")
	f(60675000, "60.68") // half-up, not half-even
	f(60100000, "60.1")
	f(60000000, "60")
	f(60995000, "61")
	f(99995000, "100")
	f(4999, "0")
	f(5000, "0.01")
	f(0, "0")
	f(1, "0")
	f(10000, "0.01")
	f(100000, "0.1")
	f(105000, "0.11")
	f(1000000, "1")
	f(123456789012345678, "123456789012.35")
	if got := string(AppendPrice2(nil, MaxPriceMicros)); got != "9223372036854.78" {
		t.Fatalf("AppendPrice2(max) = %s", got)
	}
}

func TestAppendJSONRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		var r Record
		for i := range r.ID {
			r.ID[i] = byte(rng.Uint32())
		}
		// Prices whose cents fit a float64 exactly, so encoding/json is a
		// fair reference.
		switch rng.IntN(3) {
		case 0:
			r.PriceMicros = rng.Int64N(1000e6)
		case 1:
			r.PriceMicros = rng.Int64N(1000)*10000 + 5000 // exactly half a cent
		default:
			r.PriceMicros = rng.Int64N(1 << 53)
		}
		r.Expires = MinExpires + rng.Int64N(MaxExpires-MinExpires+1)
		got := string(AppendJSON(nil, &r))
		if want := jsonReference(t, &r); got != want {
			t.Fatalf("AppendJSON(%+v)\n got %s\nwant %s", r, got, want)
		}
	}
}

func TestAppendPrice6(t *testing.T) {
	f := func(micros int64, want string) {
		t.Helper()
		if got := string(AppendPrice6(nil, micros)); got != want {
			t.Fatalf("AppendPrice6(%d) = %s, want %s", micros, got, want)
		}
	}
	f(0, "0.000000")
	f(1, "0.000001")
	f(60683466, "60.683466")
	f(60100000, "60.100000")
	f(1e6, "1.000000")
	f(MaxPriceMicros, "9223372036854.775807")
}

func TestAppendRFC3339(t *testing.T) {
	f := func(sec int64) {
		t.Helper()
		want := time.Unix(sec, 0).UTC().Format(time.RFC3339)
		if got := string(AppendRFC3339(nil, sec)); got != want {
			t.Fatalf("AppendRFC3339(%d) = %s, want %s", sec, got, want)
		}
	}
	for _, sec := range boundarySeconds() {
		f(sec)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 20000 {
		f(MinExpires + rng.Int64N(MaxExpires-MinExpires+1))
	}
	if got := string(AppendRFC3339(nil, MinExpires)); got != "0001-01-01T00:00:00Z" {
		t.Fatalf("AppendRFC3339(MinExpires) = %s", got)
	}
	if got := string(AppendRFC3339(nil, MaxExpires)); got != "9999-12-31T23:59:59Z" {
		t.Fatalf("AppendRFC3339(MaxExpires) = %s", got)
	}
}

// boundarySeconds are Unix seconds around days, months, years, leap days and
// 400-year eras between years 1 and 9999.
func boundarySeconds() []int64 {
	var out []int64
	years := []int{1, 2, 3, 4, 5, 99, 100, 101, 399, 400, 401, 1582, 1600, 1699, 1700, 1900, 1969, 1970,
		1971, 1972, 2000, 2001, 2024, 2038, 2100, 2400, 4000, 9998, 9999}
	for _, y := range years {
		for m := time.January; m <= time.December; m++ {
			for _, d := range []int{1, 28, 29, 30, 31} {
				t := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
				if t.Month() != m {
					continue
				}
				s := t.Unix()
				for _, delta := range []int64{-86400, -1, 0, 1, 3599, 86399} {
					if v := s + delta; v >= MinExpires && v <= MaxExpires {
						out = append(out, v)
					}
				}
			}
		}
	}
	return append(out, MinExpires, MaxExpires, 0, -1, 1, 951782400, 951868800, 1709164800)
}

func TestCivil(t *testing.T) {
	check := func(sec int64) {
		t.Helper()
		tm := time.Unix(sec, 0).UTC()
		y, mo, d, hh, mm, ss := Civil(sec)
		if y != tm.Year() || mo != int(tm.Month()) || d != tm.Day() || hh != tm.Hour() || mm != tm.Minute() || ss != tm.Second() {
			t.Fatalf("Civil(%d) = %04d-%02d-%02d %02d:%02d:%02d, want %s", sec, y, mo, d, hh, mm, ss, tm)
		}
		if got := UnixFromCivil(y, mo, d, hh, mm, ss); got != sec {
			t.Fatalf("UnixFromCivil(Civil(%d)) = %d", sec, got)
		}
		if got := time.Date(y, time.Month(mo), d, hh, mm, ss, 0, time.UTC).Unix(); got != sec {
			t.Fatalf("time.Date(Civil(%d)) = %d", sec, got)
		}
	}
	for _, sec := range boundarySeconds() {
		check(sec)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for range 200000 {
		check(MinExpires + rng.Int64N(MaxExpires-MinExpires+1))
	}
}

func TestUnixFromCivil(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for range 100000 {
		y, mo := 1+rng.IntN(9999), 1+rng.IntN(12)
		d := 1 + rng.IntN(DaysIn(y, mo))
		hh, mm, ss := rng.IntN(24), rng.IntN(60), rng.IntN(60)
		want := time.Date(y, time.Month(mo), d, hh, mm, ss, 0, time.UTC).Unix()
		if got := UnixFromCivil(y, mo, d, hh, mm, ss); got != want {
			t.Fatalf("UnixFromCivil(%d-%d-%d %d:%d:%d) = %d, want %d", y, mo, d, hh, mm, ss, got, want)
		}
	}
	if got := UnixFromCivil(1, 1, 1, 0, 0, 0); got != MinExpires {
		t.Fatalf("UnixFromCivil(0001-01-01) = %d, want MinExpires", got)
	}
	if got := UnixFromCivil(9999, 12, 31, 23, 59, 59); got != MaxExpires {
		t.Fatalf("UnixFromCivil(9999-12-31 23:59:59) = %d, want MaxExpires", got)
	}
	if got := UnixFromCivil(1970, 1, 1, 0, 0, 0); got != 0 {
		t.Fatalf("UnixFromCivil(1970-01-01) = %d", got)
	}
}

func TestDaysIn(t *testing.T) {
	for y := 1; y <= 9999; y++ {
		for m := 1; m <= 12; m++ {
			// The day before the first of the next month.
			want := time.Date(y, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day()
			if got := DaysIn(y, m); got != want {
				t.Fatalf("DaysIn(%d, %d) = %d, want %d", y, m, got, want)
			}
		}
	}
}

func TestAppendJSONDoesNotAllocate(t *testing.T) {
	r := Record{PriceMicros: MaxPriceMicros, Expires: MaxExpires}
	for i := range r.ID {
		r.ID[i] = 0xff
	}
	buf := make([]byte, 0, 128)
	if n := len(AppendJSON(buf, &r)); n > cap(buf) {
		t.Fatalf("the largest body is %d bytes, more than the documented 128", n)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		buf = AppendJSON(buf[:0], &r)
	})
	if allocs != 0 {
		t.Fatalf("AppendJSON allocated %v times per run", allocs)
	}
	allocs = testing.AllocsPerRun(1000, func() {
		var v Record
		b := AppendValue(buf[:0], &r)
		if err := DecodeValue(b, &v); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseID([]byte("d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("AppendValue/DecodeValue/ParseID allocated %v times per run", allocs)
	}
}

func BenchmarkParseID(b *testing.B) {
	s := []byte("D018EF0B-dbd9-48f1-ac1a-eb4d90e57118")
	b.ReportAllocs()
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		if _, err := ParseID(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	id, _ := ParseID([]byte("d018ef0b-dbd9-48f1-ac1a-eb4d90e57118"))
	r := Record{ID: id, PriceMicros: 60683466, Expires: 1533346351}
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendJSON(buf[:0], &r)
	}
	b.SetBytes(int64(len(buf)))
}
