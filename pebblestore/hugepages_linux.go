package pebblestore

import (
	"sync"
	"syscall"
)

// adviseHugeMapping asks the kernel to read a table's mapping back from
// disk in 2 MiB folios, mapped as huge pages, once its pages have left the
// page cache (after a restart, say): a lookup then costs one TLB entry per
// 2 MiB of table instead of one per 4 KiB, which random lookups over
// hundreds of MB of tables miss on almost every request. Pages a fresh
// table was written with are already large (fileWritable writes aligned
// 2 MiB chunks) and are mapped huge without this advice.
//
// Each read of a missing page then reads 2 MiB, not the ~128 KiB of
// readahead: worth it while the mapped tables fit in memory, a waste of
// disk bandwidth on a node whose tables far exceed it. So the advice is
// given only while the tables mapped by this process, with this one, take
// at most half the machine's memory.
func adviseHugeMapping(b []byte, mapped int64) {
	if limit := hugeMappingLimit(); limit == 0 || mapped > limit {
		return
	}
	_ = syscall.Madvise(b, syscall.MADV_HUGEPAGE)
}

// hugeMappingLimit is half the machine's memory, or 0 if unknown.
var hugeMappingLimit = sync.OnceValue(func() int64 {
	var info syscall.Sysinfo_t
	if err := syscall.Sysinfo(&info); err != nil {
		return 0
	}
	return int64(info.Totalram) * int64(info.Unit) / 2
})
