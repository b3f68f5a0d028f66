package pgstore

import (
	"syscall"
	"unsafe"
)

// hugePageSize is the size of a transparent huge page on the platforms
// this runs on (x86-64 and arm64 with 4 KiB base pages).
const hugePageSize = 2 << 20

// adviseHugePages asks the kernel to back the 2 MiB-aligned part of b with
// huge pages, before anything touched it. A large filter tested at random
// places otherwise costs a TLB miss, and under virtualization a nested page
// walk, on nearly every access. Where transparent huge pages are off, or b
// was touched already, it changes nothing.
func adviseHugePages(b []byte) {
	if len(b) < 2*hugePageSize {
		return
	}
	start := uintptr(unsafe.Pointer(&b[0]))
	end := start + uintptr(len(b))
	lo := (start + hugePageSize - 1) &^ (hugePageSize - 1)
	hi := end &^ (hugePageSize - 1)
	if hi <= lo {
		return
	}
	_ = syscall.Madvise(b[lo-start:hi-start], syscall.MADV_HUGEPAGE)
}
