package pebblestore

import (
	"errors"
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

// retryBuffered reports whether err, from a read or write of f, may be
// O_DIRECT's (EINVAL: an alignment the device does not accept) and, if so,
// turns it off so that the caller can retry buffered.
func retryBuffered(f *os.File, err error) bool {
	if !errors.Is(err, unix.EINVAL) {
		return false
	}
	fd := f.Fd()
	flags, ferr := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if ferr != nil || flags&unix.O_DIRECT == 0 {
		return false
	}
	_, ferr = unix.FcntlInt(fd, unix.F_SETFL, flags&^unix.O_DIRECT)
	return ferr == nil
}
