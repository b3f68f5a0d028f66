//go:build !linux

package pebblestore

func adviseHugeMapping([]byte, int64) {}
