//go:build !linux

package pgstore

// adviseHugePages does nothing here.
func adviseHugePages([]byte) {}
