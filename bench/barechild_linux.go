package bench

import "syscall"

// childAttr makes a child die with this process: the kernel sends it
// SIGKILL when the thread that started it exits. A Go program's threads
// exit only with the process, unless a goroutine that locked its thread
// (runtime.LockOSThread) ends; nothing here starts children from one.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
