package localsvc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrInUse is returned when a server of the same directory is running and
// belongs to another live process (a second devcluster on the same
// directory, say).
var ErrInUse = errors.New("localsvc: in use by another process")

// ownerFile records, next to a server's data, which process started it:
// "<server pid> <owner pid>". A later start reads it to tell a server that
// another live process owns from one orphaned by a parent that died
// (SIGKILL, OOM) before Pdeathsig existed here, or under a runtime that
// lost it.
type ownerFile string

func (f ownerFile) write(server int) error {
	return os.WriteFile(string(f), fmt.Appendf(nil, "%d %d\n", server, os.Getpid()), 0o644)
}

func (f ownerFile) read() (server, owner int) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return 0, 0
	}
	fields := strings.Fields(string(b))
	if len(fields) == 2 {
		server, _ = strconv.Atoi(fields[0])
		owner, _ = strconv.Atoi(fields[1])
	}
	return server, owner
}

// childAttr is how every server is started: in a process group of its own
// (so that a kill reaches its children), and killed by the kernel with
// sig when this process dies, even by SIGKILL. Go sets the parent-death
// signal after switching credentials, so it survives running as postgres.
func childAttr(cred *syscall.Credential, sig syscall.Signal) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	setPdeathsig(a, sig)
	return a
}

// stopStale stops a server left running by a dead owner: server is its
// PID (0: unknown, nothing to do), comm the name it must have (so that a
// reused PID is never signalled), and owner the PID of the process that
// started it (0: unknown). A server whose parent is its live owner is in
// use, and ErrInUse is returned. An orphan gets stop, then SIGKILL to its
// process group if it has not exited within grace.
func stopStale(server, owner int, comm string, stop syscall.Signal, grace time.Duration) error {
	if server <= 0 || procComm(server) != comm {
		return nil
	}
	ppid := procParent(server)
	if ppid > 1 && (ppid == owner || owner == 0) {
		return fmt.Errorf("%w: %s (pid %d) is running for this directory, started by process %d; stop that first",
			ErrInUse, comm, server, ppid)
	}
	_ = syscall.Kill(server, stop)
	if waitGone(server, grace) == nil {
		return nil
	}
	_ = syscall.Kill(-server, syscall.SIGKILL)
	_ = syscall.Kill(server, syscall.SIGKILL)
	return waitGone(server, 10*time.Second)
}

// procComm returns the command name of pid, or "" when there is no such
// process.
func procComm(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// procParent returns the parent PID of pid, or 0 when it cannot be read.
func procParent(pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// reachable reports whether a process of uid and gid can reach dir: it
// needs search permission on every directory above it. Supplementary
// groups and ACLs are not considered.
func reachable(dir string, uid, gid int) (bool, string) {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			st := fi.Sys().(*syscall.Stat_t)
			mode := fi.Mode().Perm()
			var ok bool
			switch {
			case int(st.Uid) == uid:
				ok = mode&0o100 != 0
			case int(st.Gid) == gid:
				ok = mode&0o010 != 0
			default:
				ok = mode&0o001 != 0
			}
			if !ok {
				return false, p
			}
		}
		if p == filepath.Dir(p) {
			return true, ""
		}
	}
}

// DieWithParent makes the process that cmd starts receive SIGKILL when
// this process dies, however it dies (on Linux; elsewhere it does
// nothing). Every child process that a test or a command starts should.
func DieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	setPdeathsig(cmd.SysProcAttr, syscall.SIGKILL)
}
