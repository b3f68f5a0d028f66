package pebblestore

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"
)

// TestMappedTablesAdvisedHuge: a table mapped while the mapped tables fit
// in memory is advised huge (VmFlags "hg" in smaps), and the mapped size
// is accounted until munmap.
func TestMappedTablesAdvisedHuge(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage"); err != nil {
		t.Skip("kernel without transparent huge pages")
	}
	path := filepath.Join(t.TempDir(), "t.sst")
	if err := os.WriteFile(path, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	before := mappedBytes.Load()
	data, err := mmapFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := mappedBytes.Load() - before; got != 4<<20 {
		t.Errorf("mapped bytes grew by %d, want %d", got, 4<<20)
	}
	flags, err := vmFlags(uintptr(unsafe.Pointer(&data[0])))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(" "+flags+" ", " hg ") {
		t.Errorf("mapping's VmFlags %q lack hg (MADV_HUGEPAGE)", flags)
	}
	if err := munmap(data); err != nil {
		t.Fatal(err)
	}
	if got := mappedBytes.Load(); got != before {
		t.Errorf("mapped bytes %d after munmap, want %d", got, before)
	}
}

// vmFlags returns the VmFlags line of the mapping starting at addr.
func vmFlags(addr uintptr) (string, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return "", err
	}
	defer f.Close()
	start := fmt.Sprintf("%x-", addr)
	in := false
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, start) {
			in = true
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmFlags:")), nil
		}
	}
	return "", fmt.Errorf("no mapping at %#x in smaps", addr)
}
