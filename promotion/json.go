package promotion

// AppendJSON appends the JSON form of r answered by GET /promotions/{id}:
//
//	{"id":"d018ef0b-...","price":60.68,"expiration_date":"2018-08-04T03:32:31Z"}
//
// The price is rounded half-up to two decimals and printed like a JSON float
// (60.1, not 60.10); the date is RFC 3339 in UTC. It does not allocate when
// dst has room for the result (at most 128 bytes).
func AppendJSON(dst []byte, r *Record) []byte {
	dst = append(dst, `{"id":"`...)
	dst = r.ID.AppendText(dst)
	dst = append(dst, `","price":`...)
	dst = AppendPrice2(dst, r.PriceMicros)
	dst = append(dst, `,"expiration_date":"`...)
	dst = AppendRFC3339(dst, r.Expires)
	return append(dst, `"}`...)
}

// AppendPrice2 appends micros rounded half-up to two decimals, without
// trailing zeros in the fraction.
func AppendPrice2(dst []byte, micros int64) []byte {
	cents := uint64(micros)/10000 + (uint64(micros)%10000+5000)/10000
	dst = appendUint(dst, cents/100)
	frac := cents % 100
	switch {
	case frac == 0:
	case frac%10 == 0:
		dst = append(dst, '.', byte('0'+frac/10))
	default:
		dst = append(dst, '.', byte('0'+frac/10), byte('0'+frac%10))
	}
	return dst
}

// AppendPrice6 appends micros as a decimal with exactly six fractional
// digits, the form of the input files.
func AppendPrice6(dst []byte, micros int64) []byte {
	dst = appendUint(dst, uint64(micros)/1e6)
	dst = append(dst, '.')
	return appendPadded(dst, uint64(micros)%1e6, 6)
}

// AppendRFC3339 appends the Unix time sec as 2006-01-02T15:04:05Z.
func AppendRFC3339(dst []byte, sec int64) []byte {
	y, mo, d, hh, mm, ss := Civil(sec)
	dst = appendPadded(dst, uint64(y), 4)
	dst = append(dst, '-')
	dst = appendPadded(dst, uint64(mo), 2)
	dst = append(dst, '-')
	dst = appendPadded(dst, uint64(d), 2)
	dst = append(dst, 'T')
	dst = appendPadded(dst, uint64(hh), 2)
	dst = append(dst, ':')
	dst = appendPadded(dst, uint64(mm), 2)
	dst = append(dst, ':')
	dst = appendPadded(dst, uint64(ss), 2)
	return append(dst, 'Z')
}

func appendUint(dst []byte, v uint64) []byte {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}

func appendPadded(dst []byte, v uint64, width int) []byte {
	var buf [20]byte
	i := len(buf)
	for ; width > 0 || v > 0; width-- {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, buf[i:]...)
}
