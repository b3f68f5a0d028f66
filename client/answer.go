package client

import (
	"bytes"
	"errors"
	"strconv"
	"time"

	"github.com/promotion-service/promo/promotion"
)

var errAnswer = errors.New("not a promotion")

// parsePromotion reads the JSON of one promotion,
// {"id":"...","price":60.68,"expiration_date":"2018-08-04T03:32:31Z"},
// checking that it is the promotion of pid. The servers write the fields
// in this order and form; other forms of the price and the date are read
// too, more slowly. id is the caller's spelling of pid, reused as the ID
// when it is in lower case, so that a lookup allocates nothing.
func parsePromotion(b []byte, id string, pid promotion.ID) (Promotion, error) {
	var p Promotion
	raw, ok := field(b, `"id":"`)
	if !ok || len(raw) < promotion.IDLen {
		return p, errAnswer
	}
	got, err := promotion.ParseID(raw[:promotion.IDLen])
	if err != nil || got != pid {
		return p, errors.New("the answer is about another promotion")
	}
	p.ID = id
	if !lower(id) {
		p.ID = pid.String()
	}
	if raw, ok = field(b, `"price":`); !ok {
		return p, errAnswer
	}
	if p.Price, ok = parsePrice(raw); !ok {
		return p, errors.New("malformed price")
	}
	if raw, ok = field(b, `"expiration_date":"`); !ok {
		return p, errAnswer
	}
	if p.ExpirationDate, ok = parseDate(raw); !ok {
		return p, errors.New("malformed expiration_date")
	}
	return p, nil
}

// field returns what follows key in b.
func field(b []byte, key string) ([]byte, bool) {
	i := bytes.Index(b, bytesOf(key))
	if i < 0 {
		return nil, false
	}
	return b[i+len(key):], true
}

func lower(s string) bool {
	for i := range len(s) {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return false
		}
	}
	return true
}

// parsePrice reads a JSON number at the start of b. Prices of up to two
// decimals (all the servers write) are read as cents, and cents/100 is the
// float64 nearest the decimal, as strconv.ParseFloat would give.
func parsePrice(b []byte) (float64, bool) {
	end := 0
	for end < len(b) && (b[end] >= '0' && b[end] <= '9' || b[end] == '.' || b[end] == '-' || b[end] == '+' || b[end] == 'e' || b[end] == 'E') {
		end++
	}
	num := b[:end]
	var cents uint64
	frac, dot := 0, false
	for i, c := range num {
		switch {
		case c >= '0' && c <= '9' && i < 17:
			if dot {
				frac++
			}
			cents = cents*10 + uint64(c-'0')
		case c == '.' && !dot && i > 0:
			dot = true
		default:
			frac = 3 // anything else: the general parser
		}
	}
	if end > 0 && frac <= 2 && num[end-1] != '.' {
		for ; frac < 2; frac++ {
			cents *= 10
		}
		return float64(cents) / 100, true
	}
	f, err := strconv.ParseFloat(string(num), 64)
	return f, err == nil && f >= 0
}

// parseDate reads 2006-01-02T15:04:05Z at the start of b, or another RFC
// 3339 time up to the closing quote.
func parseDate(b []byte) (time.Time, bool) {
	if len(b) >= 21 && b[19] == 'Z' && b[20] == '"' && b[4] == '-' && b[7] == '-' && b[10] == 'T' && b[13] == ':' && b[16] == ':' {
		num := func(s []byte) (int, bool) {
			n := 0
			for _, c := range s {
				if c < '0' || c > '9' {
					return 0, false
				}
				n = n*10 + int(c-'0')
			}
			return n, true
		}
		y, ok1 := num(b[0:4])
		mo, ok2 := num(b[5:7])
		d, ok3 := num(b[8:10])
		h, ok4 := num(b[11:13])
		mi, ok5 := num(b[14:16])
		s, ok6 := num(b[17:19])
		if ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && mo >= 1 && mo <= 12 && d >= 1 && d <= promotion.DaysIn(y, mo) && h < 24 && mi < 60 && s < 60 {
			return time.Unix(promotion.UnixFromCivil(y, mo, d, h, mi, s), 0).UTC(), true
		}
		return time.Time{}, false
	}
	end := bytes.IndexByte(b, '"')
	if end < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, string(b[:end]))
	return t.UTC(), err == nil
}
