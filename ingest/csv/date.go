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
	rest, reason := skipFraction(b[19:])
	if reason != "" {
		return 0, reason
	}
	var offset int
	switch b[10] {
	case 'T', 't':
		offset, reason = parseRFC3339Zone(rest)
	case ' ':
		offset, reason = parseStringZone(rest)
	default:
		return 0, "unrecognized date; " + dateFormats
	}
	if reason != "" {
		return 0, reason
	}
	if reason := checkCivil(year, month, day, hour, minute, second); reason != "" {
		return 0, reason
	}
	sec := promotion.UnixFromCivil(year, month, day, hour, minute, second) - int64(offset)
	if sec < promotion.MinExpires || sec > promotion.MaxExpires {
		return 0, "date out of range (years 0001 to 9999 in UTC)"
	}
	return sec, ""
}

// skipFraction skips the fraction of a second (".5", at most 9 digits) at
// the start of b, if any, and returns what follows.
func skipFraction(b []byte) ([]byte, string) {
	if len(b) == 0 || b[0] != '.' {
		return b, ""
	}
	i := 1
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == 1 || i > 10 {
		return nil, "malformed fraction of a second"
	}
	return b[i:], ""
}

// parseRFC3339Zone parses what follows the seconds of an RFC 3339
// date-time, "Z" or "+02:00", into an offset in seconds east of UTC.
// Nothing at all is read as UTC, like the naive form.
func parseRFC3339Zone(b []byte) (int, string) {
	switch {
	case len(b) == 0:
		return 0, ""
	case len(b) == 1 && (b[0] == 'Z' || b[0] == 'z'):
		return 0, ""
	case len(b) == 6 && (b[0] == '+' || b[0] == '-') && b[3] == ':':
		return parseOffset(b[0], b[1:3], b[4:6])
	}
	return 0, "unrecognized time zone; " + dateFormats
}

// parseStringZone parses what follows the seconds of Go's
// time.Time.String() form, " -0700" or " -07:00", then optionally the zone
// abbreviation " MST" and the monotonic clock reading " m=+0.5", into an
// offset in seconds east of UTC. Nothing at all is the naive form, UTC.
func parseStringZone(b []byte) (int, string) {
	if len(b) == 0 {
		return 0, ""
	}
	if len(b) < 6 || b[0] != ' ' || (b[1] != '+' && b[1] != '-') {
		return 0, "unrecognized time zone; " + dateFormats
	}
	sign := b[1]
	var hh, mm []byte
	if len(b) >= 7 && b[4] == ':' {
		hh, mm, b = b[2:4], b[5:7], b[7:]
	} else {
		hh, mm, b = b[2:4], b[4:6], b[6:]
	}
	offset, reason := parseOffset(sign, hh, mm)
	if reason != "" || len(b) == 0 {
		return offset, reason
	}
	if b[0] != ' ' || len(b) == 1 {
		return 0, "unrecognized time zone; " + dateFormats
	}
	b = b[1:]
	// The abbreviation: letters, digits, + and -.
	i := 0
	for i < len(b) && isZoneChar(b[i]) {
		i++
	}
	if i == 0 {
		return 0, "unrecognized time zone; " + dateFormats
	}
	// Go's monotonic clock reading, which time.String() adds.
	if b = b[i:]; len(b) > 0 && !isMonotonic(b) {
		return 0, "unexpected text after the time zone"
	}
	return offset, ""
}

// checkCivil reports which part of a date-time is out of range, if any.
func checkCivil(year, month, day, hour, minute, second int) string {
	switch {
	case year < 1:
		return "year out of range"
	case month < 1 || month > 12:
		return "month out of range"
	case day < 1 || day > promotion.DaysIn(year, month):
		return "day out of range"
	case hour > 23:
		return "hour out of range"
	case minute > 59:
		return "minute out of range"
	case second > 59:
		return "second out of range"
	}
	return ""
}

// parseOffset parses a zone offset of sign, hours and minutes into seconds
// east of UTC.
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

// isZoneChar reports whether c may appear in a zone abbreviation.
func isZoneChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '_' || c == '/'
}

// digits parses b, decimal digits only, as a number.
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
