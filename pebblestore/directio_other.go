//go:build !linux

package pebblestore

import "os"

// directIO leaves f buffered: O_DIRECT is Linux's.
func directIO(f *os.File) {}

// retryBuffered reports false: f was never direct.
func retryBuffered(f *os.File, err error) bool { return false }
