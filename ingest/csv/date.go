package csv

import "github.com/promotion-service/promo/promotion"

const dateFormats = "want 2006-01-02 15:04:05 -0700 MST, RFC 3339 (2006-01-02T15:04:05Z) or 2006-01-02 15:04:05 (UTC)"

// parseDate parses an expiration date in one of the accepted forms and
// returns Unix seconds:
//
//	2018-08-04 05:32:31 +0200 CEST        Go's time.Time.String()
//	2018-08-04 05:32:31.5 +0200 CEST m=+1  (fraction and monotonic part too)
//	2018-08-04T03:32:31Z, ...+02:00        RFC 3339
//	2018-08-04 03:32:31                    naive, taken as UTC
//
// Fractions of a second are truncated. The numeric offset is authoritative;
// the zone abbreviation is not checked.
func parseDate(b []byte) (int64, string) {
	if len(b) == 0 {
		return 0, "empty"
	}
	if len(b) < 19 || b[4] != '-' || b[7] != '-' || b[13] != ':' || b[16] != ':' {
		return 0, "unrecognized date; " + dateFormats
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	second, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return 0, "unrecognized date; " + dateFormats
	}
	sep := b[10]
	rest := b[19:]
	if len(rest) > 0 && rest[0] == '.' {
		i := 1
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 1 || i > 10 {
			return 0, "malformed fraction of a second"
		}
		rest = rest[i:]
	}
	var offset int
	switch sep {
	case 'T', 't':
		switch {
		case len(rest) == 0:
			// A date-time without offset: read as UTC like the naive form.
		case len(rest) == 1 && (rest[0] == 'Z' || rest[0] == 'z'):
		case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
			var reason string
			if offset, reason = parseOffset(rest[0], rest[1:3], rest[4:6]); reason != "" {
				return 0, reason
			}
		default:
			return 0, "unrecognized time zone; " + dateFormats
		}
	case ' ':
		if len(rest) == 0 {
			break
		}
		// " -0700" or " -07:00", then optionally " MST" and " m=+0.0".
		if len(rest) < 6 || rest[0] != ' ' || (rest[1] != '+' && rest[1] != '-') {
			return 0, "unrecognized time zone; " + dateFormats
		}
		sign := rest[1]
		var hh, mm []byte
		switch {
		case len(rest) >= 7 && rest[4] == ':':
			hh, mm, rest = rest[2:4], rest[5:7], rest[7:]
		default:
			hh, mm, rest = rest[2:4], rest[4:6], rest[6:]
		}
		var reason string
		if offset, reason = parseOffset(sign, hh, mm); reason != "" {
			return 0, reason
		}
		if len(rest) > 0 {
			if rest[0] != ' ' || len(rest) == 1 {
				return 0, "unrecognized time zone; " + dateFormats
			}
			rest = rest[1:]
			// The abbreviation: letters, digits, + and -.
			i := 0
			for i < len(rest) && isZoneChar(rest[i]) {
				i++
			}
			if i == 0 {
				return 0, "unrecognized time zone; " + dateFormats
			}
			rest = rest[i:]
			// Go's monotonic clock reading, which time.String() adds.
			if len(rest) > 0 && !isMonotonic(rest) {
				return 0, "unexpected text after the time zone"
			}
		}
	default:
		return 0, "unrecognized date; " + dateFormats
	}
	switch {
	case year < 1:
		return 0, "year out of range"
	case month < 1 || month > 12:
		return 0, "month out of range"
	case day < 1 || day > promotion.DaysIn(year, month):
		return 0, "day out of range"
	case hour > 23:
		return 0, "hour out of range"
	case minute > 59:
		return 0, "minute out of range"
	case second > 59:
		return 0, "second out of range"
	}
	sec := promotion.UnixFromCivil(year, month, day, hour, minute, second) - int64(offset)
	if sec < promotion.MinExpires || sec > promotion.MaxExpires {
		return 0, "date out of range (years 0001 to 9999 in UTC)"
	}
	return sec, ""
}

func parseOffset(sign byte, hh, mm []byte) (int, string) {
	h, ok1 := digits(hh)
	m, ok2 := digits(mm)
	if !ok1 || !ok2 {
		return 0, "unrecognized time zone offset"
	}
	if h > 23 || m > 59 {
		return 0, "time zone offset out of range"
	}
	off := h*3600 + m*60
	if sign == '-' {
		off = -off
	}
	return off, ""
}

// isMonotonic reports whether b is the monotonic clock reading that
// time.Time.String() appends: " m=+1.5" or " m=-0.000000001".
func isMonotonic(b []byte) bool {
	if len(b) < 5 || b[0] != ' ' || b[1] != 'm' || b[2] != '=' || (b[3] != '+' && b[3] != '-') {
		return false
	}
	b = b[4:]
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == 0 {
		return false
	}
	if i < len(b) && b[i] == '.' {
		j := i + 1
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		if j == i+1 {
			return false
		}
		i = j
	}
	return i == len(b)
}

func isZoneChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '_' || c == '/'
}

func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
