package pebblestore

import (
	"encoding/binary"
	"strconv"
)

// Key layout. Metadata sorts before data.
const (
	dataPrefix = 'v'
	// prefixLen is the length of a version's key prefix.
	prefixLen = 1 + 8
	// keyLen is the length of a row key: the version prefix and the ID.
	keyLen = prefixLen + 16
)

var (
	metaCurrent  = []byte("m\x00current")
	metaNext     = []byte("m\x00next")
	metaEpoch    = []byte("m\x00epoch")
	metaVersions = []byte("m\x00ver\x00")
)

func versionPrefix(v uint64) [prefixLen]byte {
	var p [prefixLen]byte
	p[0] = dataPrefix
	binary.BigEndian.PutUint64(p[1:], v)
	return p
}

// versionSpan returns the key range holding every row of version v.
func versionSpan(v uint64) (start, end []byte) {
	s, e := versionPrefix(v), versionPrefix(v+1)
	return s[:], e[:]
}

func versionMetaKey(v uint64) []byte {
	k := make([]byte, 0, len(metaVersions)+8)
	k = append(k, metaVersions...)
	return binary.BigEndian.AppendUint64(k, v)
}

func appendUint64(dst []byte, v uint64) []byte { return strconv.AppendUint(dst, v, 10) }

// metaImports prefixes the statuses of imports, by 8-byte big-endian id.
var metaImports = []byte("m\x00imp\x00")

func importKey(id int64) []byte {
	k := make([]byte, 0, len(metaImports)+8)
	k = append(k, metaImports...)
	return binary.BigEndian.AppendUint64(k, uint64(id))
}
