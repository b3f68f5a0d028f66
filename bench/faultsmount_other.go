//go:build !linux

package bench

import "errors"

var errNoTmpfs = errors.New("bench: tmpfs mounts need Linux")

func mountTmpfs(string, int64) error { return errNoTmpfs }

func unmount(string) error { return errNoTmpfs }

func freeBytes(string) (int64, error) { return 0, errNoTmpfs }

func chownLike(string, string) error { return errNoTmpfs }
