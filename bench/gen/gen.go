// Package gen writes promotion files in the format of the input files:
// deterministic for a seed, distinct ids unless asked otherwise, fast enough
// for billion-row files.
package gen

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/promotion-service/promo/promotion"
)

// Date formats a GenConfig can write.
const (
	FormatGo      = "go"      // 2018-08-04 05:32:31 +0200 CEST
	FormatRFC3339 = "rfc3339" // 2018-08-04T03:32:31Z
)

// Config describes a generated promotions file.
type Config struct {
	// Rows is the number of rows to write.
	Rows int64
	// Seed makes the output reproducible: the same config writes the same
	// bytes.
	Seed uint64
	// DupRate is the share of rows (0 to 1) that repeat an earlier id.
	DupRate float64
	// BadRate is the share of rows (0 to 1) that are malformed.
	BadRate float64
	// Format is the date format, FormatGo or FormatRFC3339.
	Format string
}

// DefaultConfig returns a config for n distinct, well-formed rows in the
// seed's format.
func DefaultConfig(n int64) Config {
	return Config{Rows: n, Seed: 1, Format: FormatGo}
}

// Validate reports the first invalid field of c.
func (c *Config) Validate() error {
	switch {
	case c.Rows < 0:
		return fmt.Errorf("gen: Rows must not be negative, got %d", c.Rows)
	case c.DupRate < 0 || c.DupRate > 1:
		return fmt.Errorf("gen: DupRate must be between 0 and 1, got %v", c.DupRate)
	case c.BadRate < 0 || c.BadRate > 1:
		return fmt.Errorf("gen: BadRate must be between 0 and 1, got %v", c.BadRate)
	case c.Format != FormatGo && c.Format != FormatRFC3339:
		return fmt.Errorf("gen: Format must be %q or %q, got %q", FormatGo, FormatRFC3339, c.Format)
	}
	return nil
}

// badRows are the malformed rows a generated file may contain.
var badRows = []string{
	"not-a-uuid,1.00,2018-08-04 05:32:31 +0200 CEST",
	"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118,-1.00,2018-08-04 05:32:31 +0200 CEST",
	"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118,1.0000001,2018-08-04 05:32:31 +0200 CEST",
	"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118,1.00,2018-13-04 05:32:31 +0200 CEST",
	"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118,1.00",
}

// Generate writes c.Rows rows to w and returns the number of bytes written.
// Row i is the same for every call with the same Seed, Format and rates.
func Generate(w io.Writer, c Config) (int64, error) {
	if err := c.Validate(); err != nil {
		return 0, err
	}
	cw := &countWriter{w: w}
	bw := bufio.NewWriterSize(cw, 1<<20)
	rng := rand.New(rand.NewPCG(c.Seed, c.Seed^0x9e3779b97f4a7c15))
	var line []byte
	var r promotion.Record
	// A ring of recent ids to duplicate from.
	var recent [1024]promotion.ID
	for i := range c.Rows {
		switch {
		case c.BadRate > 0 && rng.Float64() < c.BadRate:
			line = append(line[:0], badRows[rng.IntN(len(badRows))]...)
			line = append(line, '\n')
			if _, err := bw.Write(line); err != nil {
				return cw.n, err
			}
			continue
		case c.DupRate > 0 && i > 0 && rng.Float64() < c.DupRate:
			r.ID = recent[rng.Uint64N(uint64(min(i, int64(len(recent)))))]
		default:
			binary.BigEndian.PutUint64(r.ID[:8], rng.Uint64())
			binary.BigEndian.PutUint64(r.ID[8:], rng.Uint64())
			r.ID[6] = r.ID[6]&0x0f | 0x40 // version 4
			r.ID[8] = r.ID[8]&0x3f | 0x80 // RFC 4122 variant
			recent[i%int64(len(recent))] = r.ID
		}
		r.PriceMicros = rng.Int64N(100_000_000)
		// Between 2018-01-01 and 2021-01-01.
		r.Expires = 1514764800 + rng.Int64N(3*365*86400)
		line = AppendRow(line[:0], &r, c.Format)
		if _, err := bw.Write(line); err != nil {
			return cw.n, err
		}
	}
	err := bw.Flush()
	return cw.n, err
}

// AppendRow appends r as a CSV line in the given date format.
func AppendRow(dst []byte, r *promotion.Record, format string) []byte {
	dst = r.ID.AppendText(dst)
	dst = append(dst, ',')
	dst = promotion.AppendPrice6(dst, r.PriceMicros)
	dst = append(dst, ',')
	if format == FormatRFC3339 {
		dst = promotion.AppendRFC3339(dst, r.Expires)
		return append(dst, '\n')
	}
	// Central European time as Go prints it: CEST from the last Sunday of
	// March to the last Sunday of October, roughly; the offset is what
	// counts.
	_, month, _, _, _, _ := promotion.Civil(r.Expires)
	off, zone := int64(3600), " +0100 CET"
	if month >= 4 && month <= 10 {
		off, zone = 7200, " +0200 CEST"
	}
	var tmp [24]byte
	local := promotion.AppendRFC3339(tmp[:0], r.Expires+off)
	local[10] = ' '
	dst = append(dst, local[:19]...)
	dst = append(dst, zone...)
	return append(dst, '\n')
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
