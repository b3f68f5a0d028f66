//go:build !unix

package pebblestore

import (
	"os"
	"path/filepath"
)

// lockDir only creates the lock file where flock does not exist; Pebble's
// own lock still guards the database.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
}
