package lookup

import (
	"errors"
	"fmt"

	"github.com/promotion-service/promo/promotion"
)

// The wire format of batch lookups, read and written by hand: the bodies
// are simple, and encoding/json would allocate for every id.
//
// A request is {"ids":["<uuid>", ...]}: one to MaxBatch ids, in any
// letter case; fields other than "ids" are ignored. An answer is
//
//	{"version":N,"promotions":[{"id":...,"price":...,"expiration_date":...}, ...],
//	 "missing":["<uuid>", ...],"misdirected":["<uuid>", ...]}
//
// with "misdirected" only from a read node, and only when not empty.

// BatchPath is the path of batch lookups.
const BatchPath = "/promotions/batch"

// MaxBatch is the most ids one batch may hold; a larger batch is answered
// 413.
const MaxBatch = 1000

// MaxBatchBytes bounds the body of a batch request: MaxBatch ids take
// about 39 KiB, and this leaves room for generous whitespace. A larger body
// is answered 413.
const MaxBatchBytes = 256 << 10

// BatchError is why a batch request was refused, with the status to
// answer and the fields the JSON error carries.
type BatchError struct {
	// Status is 400 for a malformed request and 413 for one too large.
	Status int
	// Reason is the error message.
	Reason string
	// ID is the malformed id as the request spelled it, when one is to
	// blame; it points into the parsed body.
	ID []byte
	// Index is the position of that id in "ids", or -1.
	Index int
}

func (e *BatchError) Error() string {
	if e.ID != nil {
		return fmt.Sprintf("lookup: %s: %q at index %d", e.Reason, e.ID, e.Index)
	}
	return "lookup: " + e.Reason
}

const wantBody = `want {"ids":["<uuid>", ...]}`

func malformed(at int, what string) *BatchError {
	return &BatchError{Status: 400, Reason: fmt.Sprintf("malformed batch request at byte %d: %s; %s", at, what, wantBody), Index: -1}
}

// ParseBatch parses the body of a batch request and appends its ids to
// dst, in request order, duplicates included. It reports the first problem
// in reading order: a body that is not JSON of the expected shape, an
// empty list or a malformed id (400), or a list longer than MaxBatch (413,
// as soon as id MaxBatch+1 begins). It allocates only to report an error
// and when dst must grow.
func ParseBatch(body []byte, dst []promotion.ID) ([]promotion.ID, *BatchError) {
	s := scanner{b: body}
	s.ws()
	if s.eof() {
		return dst, &BatchError{Status: 400, Reason: "empty request body; " + wantBody, Index: -1}
	}
	if !s.consume('{') {
		return dst, malformed(s.i, "not a JSON object")
	}
	start := len(dst)
	seen := false
	for first := true; ; first = false {
		s.ws()
		if s.consume('}') {
			break
		}
		if !first {
			if !s.consume(',') {
				return dst, malformed(s.i, "want , or } after a field")
			}
			s.ws()
		}
		key, _, ok := s.str()
		if !ok {
			return dst, malformed(s.i, "want a field name in quotes")
		}
		s.ws()
		if !s.consume(':') {
			return dst, malformed(s.i, "want : after a field name")
		}
		s.ws()
		if string(key) != "ids" {
			if !s.skip(0) {
				return dst, malformed(s.i, "invalid JSON value")
			}
			continue
		}
		if seen {
			return dst, malformed(s.i, `"ids" given twice`)
		}
		seen = true
		var err *BatchError
		if dst, err = s.ids(dst); err != nil {
			return dst, err
		}
	}
	s.ws()
	switch {
	case !s.eof():
		return dst, malformed(s.i, "data after the JSON object")
	case !seen:
		return dst, &BatchError{Status: 400, Reason: `no "ids" field; ` + wantBody, Index: -1}
	case len(dst) == start:
		return dst, &BatchError{Status: 400, Reason: fmt.Sprintf(`"ids" is empty: a batch holds 1 to %d ids`, MaxBatch), Index: -1}
	}
	return dst, nil
}

// ids parses the array of ids at the scanner's position.
func (s *scanner) ids(dst []promotion.ID) ([]promotion.ID, *BatchError) {
	if !s.consume('[') {
		return dst, malformed(s.i, `"ids" must be an array of strings`)
	}
	s.ws()
	if s.consume(']') {
		return dst, nil
	}
	for n := 0; ; n++ {
		if n == MaxBatch {
			return dst, &BatchError{Status: 413, Reason: fmt.Sprintf("too many ids: a batch holds at most %d", MaxBatch), Index: -1}
		}
		at := s.i
		if s.peek() != '"' {
			// Name what stands where an id should: a number, null, ...
			if !s.skip(0) {
				return dst, malformed(at, "invalid JSON value")
			}
			return dst, &BatchError{Status: 400, Reason: "malformed promotion id: want a string holding a 36-character UUID", ID: s.b[at:s.i], Index: n}
		}
		raw, escaped, ok := s.str()
		if !ok {
			return dst, malformed(at, "an unterminated or invalid string")
		}
		id, err := parseIDText(raw, escaped)
		if err != nil {
			return dst, &BatchError{Status: 400, Reason: "malformed promotion id: want a 36-character UUID such as d018ef0b-dbd9-48f1-ac1a-eb4d90e57118", ID: raw, Index: n}
		}
		dst = append(dst, id)
		s.ws()
		if s.consume(']') {
			return dst, nil
		}
		if !s.consume(',') {
			return dst, malformed(s.i, `want , or ] after an id`)
		}
		s.ws()
	}
}

// parseIDText parses the content of a JSON string as an ID, decoding
// escapes (a UUID never needs one, but a JSON encoder may still write
// one) without allocating.
func parseIDText(raw []byte, escaped bool) (promotion.ID, error) {
	if !escaped {
		return promotion.ParseID(raw)
	}
	var buf [promotion.IDLen]byte
	n := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '\\' {
			i++
			switch raw[i] { // str guarantees a character after a backslash
			case 'u':
				if i+4 >= len(raw) {
					return promotion.ID{}, promotion.ErrBadID
				}
				r := 0
				for _, h := range raw[i+1 : i+5] { // str checked the four digits
					r = r<<4 | int(unhex(h))
				}
				if r >= 0x80 {
					return promotion.ID{}, promotion.ErrBadID
				}
				c = byte(r)
				i += 4
			default:
				return promotion.ID{}, promotion.ErrBadID // \n, \", ... never in a UUID
			}
		}
		if n == len(buf) {
			return promotion.ID{}, promotion.ErrBadID
		}
		buf[n] = c
		n++
	}
	return promotion.ParseID(buf[:n])
}

// AppendBatchRequest appends the body of a batch request for ids to dst.
func AppendBatchRequest(dst []byte, ids []promotion.ID) []byte {
	dst = append(dst, `{"ids":`...)
	return append(appendIDs(dst, ids), '}')
}

// appendIDs appends ids as a JSON array of strings.
func appendIDs(dst []byte, ids []promotion.ID) []byte {
	dst = append(dst, '[')
	for i, id := range ids {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = id.AppendText(dst)
		dst = append(dst, '"')
	}
	return append(dst, ']')
}

// Found is one promotion of a batch answer.
type Found struct {
	// ID is the promotion's id.
	ID promotion.ID
	// JSON is the promotion's JSON object as the answer holds it.
	JSON []byte
}

// BatchAnswer is a batch answer as ParseBatchAnswer reads it. Its byte
// slices point into the parsed body; reuse one across answers to parse
// without allocating.
type BatchAnswer struct {
	// Version is the dataset version every promotion was read from.
	Version uint64
	// Promotions are the ids found, in request order.
	Promotions []Found
	// Missing are the ids the version does not hold, in request order.
	Missing []promotion.ID
	// Misdirected are the ids of slots the answering read node does not
	// hold, in request order.
	Misdirected []promotion.ID
}

// ErrBadAnswer is returned by ParseBatchAnswer for a body that is not a
// batch answer.
var ErrBadAnswer = errors.New("lookup: malformed batch answer")

// ParseBatchAnswer parses the body of a 200 answer to a batch request
// into a, which it resets first. Unknown fields are skipped.
func ParseBatchAnswer(body []byte, a *BatchAnswer) error {
	a.Version = 0
	a.Promotions, a.Missing, a.Misdirected = a.Promotions[:0], a.Missing[:0], a.Misdirected[:0]
	s := scanner{b: body}
	bad := func(what string) error { return fmt.Errorf("%w at byte %d: %s", ErrBadAnswer, s.i, what) }
	s.ws()
	if !s.consume('{') {
		return bad("not a JSON object")
	}
	hasVersion := false
	for first := true; ; first = false {
		s.ws()
		if s.consume('}') {
			break
		}
		if !first && !s.consume(',') {
			return bad("want , or }")
		}
		s.ws()
		key, _, ok := s.str()
		if !ok {
			return bad("want a field name")
		}
		s.ws()
		if !s.consume(':') {
			return bad("want :")
		}
		s.ws()
		var err error
		switch string(key) {
		case "version":
			if a.Version, ok = s.uint(); !ok {
				return bad("want the version, a non-negative integer")
			}
			hasVersion = true
		case "promotions":
			a.Promotions, err = s.promotions(a.Promotions)
		case "missing":
			a.Missing, err = s.idList(a.Missing)
		case "misdirected":
			a.Misdirected, err = s.idList(a.Misdirected)
		default:
			if !s.skip(0) {
				err = errors.New("invalid JSON value")
			}
		}
		if err != nil {
			return bad(err.Error())
		}
	}
	s.ws()
	if !s.eof() {
		return bad("data after the JSON object")
	}
	if !hasVersion {
		return bad(`no "version"`)
	}
	return nil
}

// idList parses an array of id strings.
func (s *scanner) idList(dst []promotion.ID) ([]promotion.ID, error) {
	if !s.consume('[') {
		return dst, errors.New("want an array of ids")
	}
	for first := true; ; first = false {
		s.ws()
		if s.consume(']') {
			return dst, nil
		}
		if !first {
			if !s.consume(',') {
				return dst, errors.New("want , or ]")
			}
			s.ws()
		}
		raw, escaped, ok := s.str()
		if !ok {
			return dst, errors.New("want an id string")
		}
		id, err := parseIDText(raw, escaped)
		if err != nil {
			return dst, err
		}
		dst = append(dst, id)
	}
}

// promotions parses an array of promotion objects, finding the "id" of
// each.
func (s *scanner) promotions(dst []Found) ([]Found, error) {
	if !s.consume('[') {
		return dst, errors.New("want an array of promotions")
	}
	for first := true; ; first = false {
		s.ws()
		if s.consume(']') {
			return dst, nil
		}
		if !first {
			if !s.consume(',') {
				return dst, errors.New("want , or ]")
			}
			s.ws()
		}
		start := s.i
		if !s.consume('{') {
			return dst, errors.New("want a promotion object")
		}
		var f Found
		hasID := false
		for first := true; ; first = false {
			s.ws()
			if s.consume('}') {
				break
			}
			if !first {
				if !s.consume(',') {
					return dst, errors.New("want , or } in a promotion")
				}
				s.ws()
			}
			key, _, ok := s.str()
			if !ok {
				return dst, errors.New("want a field name in a promotion")
			}
			s.ws()
			if !s.consume(':') {
				return dst, errors.New("want : in a promotion")
			}
			s.ws()
			if string(key) == "id" {
				raw, escaped, ok := s.str()
				if !ok {
					return dst, errors.New("want the id of a promotion as a string")
				}
				var err error
				if f.ID, err = parseIDText(raw, escaped); err != nil {
					return dst, err
				}
				hasID = true
				continue
			}
			if !s.skip(0) {
				return dst, errors.New("invalid JSON value in a promotion")
			}
		}
		if !hasID {
			return dst, errors.New("a promotion without an id")
		}
		f.JSON = s.b[start:s.i]
		dst = append(dst, f)
	}
}

// scanner reads JSON from b at i, one token at a time.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) eof() bool { return s.i >= len(s.b) }

// uint reads a non-negative integer that fits in 64 bits.
func (s *scanner) uint() (uint64, bool) {
	var v uint64
	start := s.i
	for !s.eof() && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		d := uint64(s.b[s.i] - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
		s.i++
	}
	return v, s.i > start && (s.b[start] != '0' || s.i == start+1)
}

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.b[s.i]
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// consume moves past c if it comes next.
func (s *scanner) consume(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string and returns its content as it is written, and
// whether it holds escapes. A backslash is always followed by a valid
// escape in a string it accepts.
func (s *scanner) str() (raw []byte, escaped, ok bool) {
	if !s.consume('"') {
		return nil, false, false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], escaped, true
		case c == '\\':
			escaped = true
			if s.i+1 >= len(s.b) {
				return nil, false, false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) || !isHex4(s.b[s.i+2:s.i+6]) {
					return nil, false, false
				}
				s.i += 6
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		default:
			s.i++
		}
	}
	return nil, false, false
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if unhex(c) > 15 {
			return false
		}
	}
	return true
}

// unhex returns the value of a hex digit, or 255.
func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 255
}

// maxDepth bounds the nesting of the values skip goes through, so that a
// request of nested brackets cannot exhaust the stack.
const maxDepth = 32

// skip moves past one JSON value of any kind.
func (s *scanner) skip(depth int) bool {
	if depth > maxDepth {
		return false
	}
	switch c := s.peek(); {
	case c == '"':
		_, _, ok := s.str()
		return ok
	case c == '{' || c == '[':
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		s.i++
		for first := true; ; first = false {
			s.ws()
			if s.consume(end) {
				return true
			}
			if !first {
				if !s.consume(',') {
					return false
				}
				s.ws()
			}
			if c == '{' {
				if _, _, ok := s.str(); !ok {
					return false
				}
				s.ws()
				if !s.consume(':') {
					return false
				}
				s.ws()
			}
			if !s.skip(depth + 1) {
				return false
			}
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		return s.number()
	}
	return false
}

func (s *scanner) literal(word string) bool {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}

// number moves past a JSON number.
func (s *scanner) number() bool {
	s.consume('-')
	digits := func() int {
		n := 0
		for !s.eof() && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.consume('0') {
		// no leading zeros
	} else if digits() == 0 {
		return false
	}
	if s.consume('.') && digits() == 0 {
		return false
	}
	if s.consume('e') || s.consume('E') {
		if !s.consume('+') {
			s.consume('-')
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}
