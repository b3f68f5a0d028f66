package csv

import (
	"bytes"
	"strconv"
	"unicode/utf8"

	"github.com/promotion-service/promo/promotion"
)

// Field names used in row errors.
const (
	FieldRow        = "row"
	FieldID         = "id"
	FieldPrice      = "price"
	FieldExpiration = "expiration_date"
)

// RowError describes one rejected row of an input file.
type RowError struct {
	// Line is the 1-based line on which the row starts.
	Line int64 `json:"line"`
	// Field is the column at fault, or "row" for the row as a whole.
	Field string `json:"field"`
	// Reason says what is wrong, for a person to read.
	Reason string `json:"reason"`
	// Value is the offending text, shortened to at most 64 bytes.
	Value string `json:"value,omitempty"`
}

// Error returns the row error on one line: line, field, reason and value.
func (e *RowError) Error() string {
	s := "line " + strconv.FormatInt(e.Line, 10) + ": " + e.Field + ": " + e.Reason
	if e.Value != "" {
		s += " (" + strconv.Quote(e.Value) + ")"
	}
	return s
}

// rowParser turns one CSV record into a promotion.Record. Its zero value is
// ready to use; it keeps scratch space between calls and is not safe for
// concurrent use.
type rowParser struct {
	fields  [3][]byte
	unquote []byte
}

// parse parses rec, one CSV record without its line terminator, into out.
// For a bad row it returns the field at fault, the reason and the
// offending value (which points into rec or p's scratch space, valid until
// the next call); reason is empty for a good row. blank is true for a row
// with nothing but white space.
func (p *rowParser) parse(rec []byte, out *promotion.Record) (field, reason string, value []byte, blank bool) {
	n, field, reason := p.split(rec)
	switch {
	case reason != "":
		return field, reason, truncate(rec), false
	case n == 1 && len(trimSpace(rec)) == 0:
		return "", "", nil, true
	case n != 3:
		return FieldRow, "expected 3 fields (id,price,expiration_date), found " + strconv.Itoa(n), truncate(rec), false
	}
	id, err := promotion.ParseID(p.fields[0])
	if err != nil {
		if len(p.fields[0]) == 0 {
			return FieldID, "empty", nil, false
		}
		return FieldID, "not a UUID (want 8-4-4-4-12 hex digits, 36 characters)", truncate(p.fields[0]), false
	}
	out.ID = id
	if out.PriceMicros, reason = parsePrice(p.fields[1]); reason != "" {
		return FieldPrice, reason, truncate(p.fields[1]), false
	}
	if out.Expires, reason = parseDate(p.fields[2]); reason != "" {
		return FieldExpiration, reason, truncate(p.fields[2]), false
	}
	return "", "", nil, false
}

// split cuts rec into fields, trimming spaces around unquoted fields and
// undoing RFC 4180 quoting. It returns the number of fields (more than 3 are
// counted but not kept).
func (p *rowParser) split(rec []byte) (n int, field, reason string) {
	p.fields = [3][]byte{}
	if bytes.IndexByte(rec, '"') < 0 {
		for {
			i := bytes.IndexByte(rec, ',')
			f := rec
			if i >= 0 {
				f = rec[:i]
			}
			if n < len(p.fields) {
				p.fields[n] = trimSpace(f)
			}
			n++
			if i < 0 {
				return n, "", ""
			}
			rec = rec[i+1:]
		}
	}
	return p.splitQuoted(rec)
}

// splitQuoted is the general RFC 4180 path: a field that starts with a
// quote (after optional spaces) runs to the matching quote, and "" inside
// it is one quote.
func (p *rowParser) splitQuoted(rec []byte) (n int, field, reason string) {
	p.unquote = p.unquote[:0]
	var spans [3][2]int // into p.unquote, for quoted fields
	var quoted [3]bool
	i := 0
	for {
		// One field starting at i.
		j := i
		for j < len(rec) && (rec[j] == ' ' || rec[j] == '\t') {
			j++
		}
		if j < len(rec) && rec[j] == '"' {
			start := len(p.unquote)
			j++
			for {
				k := bytes.IndexByte(rec[j:], '"')
				if k < 0 {
					return n + 1, FieldRow, "unterminated quoted field"
				}
				p.unquote = append(p.unquote, rec[j:j+k]...)
				j += k + 1
				if j < len(rec) && rec[j] == '"' {
					p.unquote = append(p.unquote, '"')
					j++
					continue
				}
				break
			}
			for j < len(rec) && (rec[j] == ' ' || rec[j] == '\t') {
				j++
			}
			if j < len(rec) && rec[j] != ',' {
				return n + 1, FieldRow, "unexpected text after a closing quote"
			}
			if n < len(spans) {
				spans[n] = [2]int{start, len(p.unquote)}
				quoted[n] = true
			}
		} else {
			k := bytes.IndexByte(rec[i:], ',')
			end := len(rec)
			if k >= 0 {
				end = i + k
			}
			f := rec[i:end]
			if bytes.IndexByte(f, '"') >= 0 {
				return n + 1, FieldRow, `a quote (") inside an unquoted field; quote the whole field and double inner quotes`
			}
			if n < len(p.fields) {
				p.fields[n] = trimSpace(f)
			}
			j = end
		}
		n++
		if j >= len(rec) {
			break
		}
		i = j + 1 // past the comma
	}
	// Point quoted fields into the scratch buffer, now that it has stopped
	// growing.
	for f := range min(n, len(p.fields)) {
		if quoted[f] {
			p.fields[f] = p.unquote[spans[f][0]:spans[f][1]]
		}
	}
	return n, "", ""
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// truncate copies at most 64 bytes of b, cut at a rune boundary, for an
// error message.
func truncate(b []byte) []byte {
	const max = 64
	if len(b) <= max {
		return b
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return b[:cut]
}

// maxWhole is the largest whole part of a price.
const maxWhole = promotion.MaxPriceMicros / 1000000

// parsePrice parses a non-negative decimal with at most six fractional
// digits into micro-units.
func parsePrice(b []byte) (int64, string) {
	if len(b) == 0 {
		return 0, "empty"
	}
	if b[0] == '-' {
		return 0, "negative price"
	}
	var whole, frac uint64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if whole > maxWhole/10+1 {
			return 0, "price too large"
		}
		whole = whole*10 + uint64(b[i]-'0')
	}
	if i == 0 {
		return 0, "not a decimal number"
	}
	digits := 0
	if i < len(b) && b[i] == '.' {
		i++
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			if digits == 6 {
				return 0, "more than 6 decimal places"
			}
			frac = frac*10 + uint64(b[i]-'0')
			digits++
		}
		if digits == 0 {
			return 0, "not a decimal number"
		}
	}
	if i != len(b) {
		return 0, "not a decimal number"
	}
	for ; digits < 6; digits++ {
		frac *= 10
	}
	if whole > (promotion.MaxPriceMicros-frac)/1000000 {
		return 0, "price too large"
	}
	return int64(whole*1e6 + frac), ""
}

// ParseRow parses one CSV record (without its line end) as a promotion. A
// blank record is reported as a RowError with Field "row" and Reason
// "blank". The returned error, if any, is a *RowError with Line 0.
func ParseRow(rec []byte) (promotion.Record, error) {
	var p rowParser
	var r promotion.Record
	field, reason, value, blank := p.parse(rec, &r)
	switch {
	case blank:
		return r, &RowError{Field: FieldRow, Reason: "blank"}
	case reason != "":
		return r, &RowError{Field: field, Reason: reason, Value: string(value)}
	}
	return r, nil
}
