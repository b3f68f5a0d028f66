// Package pebblestoretest gives tests a small file system of their own to
// fill, so that a store on a full disk is tested for real, with the
// kernel's ENOSPC rather than an injected one.
package pebblestoretest

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Disk is a small file system mounted for one test.
type Disk struct {
	// Dir is where it is mounted.
	Dir string
}

// SmallDisk mounts a tmpfs of size bytes on a new directory and unmounts
// it when the test ends. Where mounting is not permitted (not Linux, not
// root or without CAP_SYS_ADMIN) it skips the test with a message, or
// fails it when the CI environment variable is set.
func SmallDisk(tb testing.TB, size int64) *Disk {
	tb.Helper()
	dir := tb.TempDir()
	if err := mount(dir, size); err != nil {
		if os.Getenv("CI") == "" {
			tb.Skipf("skipping: cannot mount a small tmpfs to fill: %v (set CI=1 to make this a failure)", err)
		}
		tb.Fatalf("cannot mount a small tmpfs to fill: %v", err)
	}
	tb.Cleanup(func() {
		if err := unmount(dir); err != nil {
			tb.Errorf("cannot unmount the tmpfs on %s: %v", dir, err)
		}
	})
	return &Disk{Dir: dir}
}

const fillName = "fill"

// Fill writes a file until the disk has no free byte left.
func (d *Disk) Fill(tb testing.TB) {
	tb.Helper()
	f, err := os.OpenFile(filepath.Join(d.Dir, fillName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	// Smaller writes once a large one no longer fits, down to one byte.
	for len(buf) > 0 {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				tb.Fatalf("cannot fill %s: %v", d.Dir, err)
			}
			buf = buf[:len(buf)/2]
		}
	}
}

// Free removes what Fill wrote.
func (d *Disk) Free(tb testing.TB) {
	tb.Helper()
	if err := os.Remove(filepath.Join(d.Dir, fillName)); err != nil {
		tb.Fatal(err)
	}
}
