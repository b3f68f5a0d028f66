//go:build !linux

package pebblestoretest

import "errors"

func mount(string, int64) error { return errors.New("tmpfs mounts are Linux only") }

func unmount(string) error { return nil }
