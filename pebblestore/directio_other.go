//go:build !linux

package pebblestore

import "os"

// directIO leaves f buffered: O_DIRECT is Linux's.
func directIO(f *os.File) {}
