package localsvc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// This file holds what fault drills (promo bench faults) do to the
// servers: freeze them as a stalled host would, and start them again
// after a stop or a crash. A frozen server must be resumed before it is
// stopped: it handles no signal but SIGKILL while frozen.

// PID returns the postmaster's process ID.
func (p *Postgres) PID() int { return p.cmd.Process.Pid }

// Pause freezes the server as a stalled host would: the postmaster first,
// so that it starts no new process, then every process it started.
// Connections stay open and nothing answers. (Each backend is a process
// group of its own, so a signal to the postmaster's group would miss
// them.)
func (p *Postgres) Pause() error {
	pid := p.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return err
	}
	if err := waitStopped(pid, 5*time.Second); err != nil {
		return err
	}
	for _, c := range procChildren(pid) {
		_ = syscall.Kill(c, syscall.SIGSTOP)
	}
	return nil
}

// Resume lets a paused server run again: its processes, then the
// postmaster.
func (p *Postgres) Resume() error {
	pid := p.cmd.Process.Pid
	for _, c := range procChildren(pid) {
		_ = syscall.Kill(c, syscall.SIGCONT)
	}
	return syscall.Kill(pid, syscall.SIGCONT)
}

// Restart starts the server again on the same data directory and port
// after Stop or Kill, and returns once it accepts connections; URL stays
// the same. It must not run concurrently with other methods of p.
func (p *Postgres) Restart(ctx context.Context) error {
	q, err := StartPostgres(ctx, p.cfg)
	if err != nil {
		return err
	}
	*p = *q
	return nil
}

// Pause freezes the server (SIGSTOP): connections stay open and nothing
// answers.
func (r *Redis) Pause() error { return syscall.Kill(-r.cmd.Process.Pid, syscall.SIGSTOP) }

// Resume lets a paused server run again (SIGCONT).
func (r *Redis) Resume() error { return syscall.Kill(-r.cmd.Process.Pid, syscall.SIGCONT) }

// Restart starts an empty server again on the same port after Stop, and
// returns once it listens; URL stays the same. It must not run
// concurrently with other methods of r.
func (r *Redis) Restart(ctx context.Context) error {
	q, err := StartRedis(ctx, r.cfg)
	if err != nil {
		return err
	}
	*r = *q
	return nil
}

// procChildren returns the processes whose parent is pid.
func procChildren(pid int) []int {
	dirs, _ := os.ReadDir("/proc")
	var out []int
	for _, d := range dirs {
		c, err := strconv.Atoi(d.Name())
		if err == nil && procParent(c) == pid {
			out = append(out, c)
		}
	}
	return out
}

// waitStopped waits until pid is stopped by a signal (state T in
// /proc/pid/stat), at most d.
func waitStopped(pid int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			return err
		}
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && strings.HasPrefix(string(b[i+1:]), " T") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d not stopped %v after SIGSTOP", pid, d)
		}
		time.Sleep(time.Millisecond)
	}
}
