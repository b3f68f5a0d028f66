//go:build !linux

package bench

import "syscall"

// childAttr is empty where the kernel cannot tie a child's life to its
// parent's; Close still stops the child.
func childAttr() *syscall.SysProcAttr { return nil }
