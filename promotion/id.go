package promotion

import "errors"

// ID is the 16 raw bytes of a promotion's UUID. Its byte order is the order of
// the textual form, so IDs sort like their lower-case strings.
type ID [16]byte

// IDLen is the length of the textual form of an ID.
const IDLen = 36

// ErrBadID is returned by ParseID for anything but a 36-character UUID.
var ErrBadID = errors.New("promotion: malformed id: want a 36-character UUID such as d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")

// unhex maps an ASCII byte to its hex value, or 0xff when it is not a hex
// digit. Both cases are accepted.
var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c-'a') + 10
		t[c-'a'+'A'] = byte(c-'a') + 10
	}
	return t
}()

// hexPos are the offsets of the 16 hex pairs in the textual form.
var hexPos = [16]uint8{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

// ParseID parses the 36-character textual form of a UUID in any letter case.
// It does not allocate.
func ParseID(s []byte) (ID, error) {
	var id ID
	if len(s) != IDLen || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, ErrBadID
	}
	var bad byte
	for i, p := range hexPos {
		hi, lo := unhex[s[p]], unhex[s[p+1]]
		bad |= hi | lo
		id[i] = hi<<4 | lo
	}
	if bad&0xf0 != 0 {
		return ID{}, ErrBadID
	}
	return id, nil
}

const hexDigits = "0123456789abcdef"

// AppendText appends the lower-case 36-character form of id to dst.
func (id ID) AppendText(dst []byte) []byte {
	for i, b := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[b>>4], hexDigits[b&0x0f])
	}
	return dst
}

// String returns the lower-case 36-character form of id.
func (id ID) String() string {
	return string(id.AppendText(make([]byte, 0, IDLen)))
}
