package gen

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/promotion-service/promo/ingest/csv"
)

func generate(t testing.TB, c Config) string {
	t.Helper()
	var b bytes.Buffer
	n, err := Generate(&b, c)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(b.Len()) {
		t.Fatalf("Generate reported %d bytes, wrote %d", n, b.Len())
	}
	return b.String()
}

func TestGenerateIsDeterministicAndValid(t *testing.T) {
	for _, format := range []string{FormatGo, FormatRFC3339} {
		c := DefaultConfig(5000)
		c.Format = format
		a, b := generate(t, c), generate(t, c)
		if a != b {
			t.Fatalf("%s: two runs with the same seed differ", format)
		}
		c.Seed = 2
		if generate(t, c) == a {
			t.Fatalf("%s: another seed wrote the same file", format)
		}
		ids := map[string]bool{}
		sc := bufio.NewScanner(strings.NewReader(a))
		line := 0
		for sc.Scan() {
			line++
			rec, err := csv.ParseRow(sc.Bytes())
			if err != nil {
				t.Fatalf("%s line %d: %v: %s", format, line, err, sc.Text())
			}
			id := rec.ID.String()
			if ids[id] {
				t.Fatalf("%s line %d: duplicate id %s without dup-rate", format, line, id)
			}
			ids[id] = true
			if !strings.HasPrefix(sc.Text(), id) || id[14] != '4' {
				t.Fatalf("%s line %d: id %q is not a lower-case UUID v4", format, line, sc.Text()[:36])
			}
		}
		if line != 5000 {
			t.Fatalf("%s: %d lines, want 5000", format, line)
		}
	}
	if first := strings.SplitN(generate(t, DefaultConfig(1)), "\n", 2)[0]; !strings.HasSuffix(first, " CEST") && !strings.HasSuffix(first, " CET") {
		t.Fatalf("Go format row %q lacks the zone abbreviation", first)
	}
}

func TestGenerateRates(t *testing.T) {
	c := DefaultConfig(20_000)
	c.DupRate, c.BadRate = 0.1, 0.05
	out := generate(t, c)
	ids := map[string]bool{}
	var dups, bad int
	for line := range strings.Lines(out) {
		rec, err := csv.ParseRow([]byte(strings.TrimSuffix(line, "\n")))
		if err != nil {
			bad++
			continue
		}
		if ids[rec.ID.String()] {
			dups++
		}
		ids[rec.ID.String()] = true
	}
	// 5% of 20,000 is 1,000 bad rows; 10% of the rest duplicates.
	if bad < 800 || bad > 1200 || dups < 1500 || dups > 2300 {
		t.Fatalf("%d bad rows and %d duplicates, want about 1000 and 1900", bad, dups)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Rows: -1, Format: FormatGo},
		{Rows: 1, Format: "xml"},
		{Rows: 1, Format: FormatGo, DupRate: 2},
		{Rows: 1, Format: FormatGo, BadRate: -0.1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

// BenchmarkGenerate reports rows/s of the generator (the target is at
// least 2,000,000).
func BenchmarkGenerate(b *testing.B) {
	c := DefaultConfig(200_000)
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		if _, err := Generate(&buf, c); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(c.Rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
