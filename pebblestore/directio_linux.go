package pebblestore

import (
	"os"

	"golang.org/x/sys/unix"
)

// directIO makes reads and writes of f bypass the page cache (O_DIRECT)
// where the file system allows it, and leaves f buffered otherwise: the
// spill files' layout (spillAlign) suits both.
func directIO(f *os.File) {
	fd := int(f.Fd())
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return
	}
	_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_DIRECT)
}
