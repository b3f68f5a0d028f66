//go:build !unix

package pebblestore

import "errors"

// mmapFile is not supported here: every version reads through Pebble.
func mmapFile(path string) ([]byte, error) {
	return nil, errors.New("pebblestore: memory-mapped tables are not supported on this system")
}

func munmap(b []byte) error { return nil }
