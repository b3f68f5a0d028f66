//go:build !linux

package pebblestore

import "os"

// startWriteback is a no-op where sync_file_range does not exist; Finish's
// fsync does all the work.
func startWriteback(*os.File, int64, int64) {}
