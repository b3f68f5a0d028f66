//go:build unix

package pebblestore

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
)

// mappedBytes is the size of the tables this process has mapped.
var mappedBytes atomic.Int64

// mmapFile maps the whole file at path read-only and shared: its pages are
// the page cache's, so a mapping costs no heap and no copy. The file is
// closed at once; the mapping outlives it until munmap.
func mmapFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size <= 0 || int64(int(size)) != size {
		return nil, fmt.Errorf("cannot map %s of %d bytes", path, size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("cannot map %s: %w", path, err)
	}
	adviseHugeMapping(data, mappedBytes.Add(int64(len(data))))
	return data, nil
}

func munmap(b []byte) error {
	if err := syscall.Munmap(b); err != nil {
		return err
	}
	mappedBytes.Add(-int64(len(b)))
	return nil
}
