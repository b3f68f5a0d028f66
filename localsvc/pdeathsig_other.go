//go:build !linux

package localsvc

import "syscall"

// Elsewhere there is no parent-death signal: a start still stops a stale
// server of its own directory.
func setPdeathsig(*syscall.SysProcAttr, syscall.Signal) {}
