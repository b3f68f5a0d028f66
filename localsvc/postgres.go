package localsvc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotInstalled is returned when a service's binaries cannot be found.
var ErrNotInstalled = errors.New("localsvc: not installed")

// PostgresConfig describes a local PostgreSQL server.
type PostgresConfig struct {
	// Dir is the data directory; initdb runs when it is empty or missing.
	Dir string
	// Port on 127.0.0.1; 0 picks a free one.
	Port int
	// Durable keeps fsync on; tests turn it off for speed.
	Durable bool
	// Log receives the server's output (default: Dir/postgres.log).
	Log string
}

// Postgres is a running PostgreSQL server.
type Postgres struct {
	cmd  *exec.Cmd
	cfg  PostgresConfig // as started: Dir resolved, Port chosen
	dir  string
	port int
	// URL connects as the superuser postgres to database postgres.
	URL string
}

// FindPostgres returns the directory holding initdb and postgres: PATH
// first, then /usr/lib/postgresql/*/bin, newest version first.
func FindPostgres() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("postgres"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i], nil
		}
	}
	return "", fmt.Errorf("%w: PostgreSQL (no initdb on PATH or in /usr/lib/postgresql/*/bin; apt-get install postgresql)", ErrNotInstalled)
}

// StartPostgres initializes (if needed) and starts PostgreSQL, and returns
// once it accepts connections. As root, the server runs as user postgres,
// which must exist; when that user cannot reach Dir (a directory below
// root's home, mode 0700), the data lives under /var/lib/promo instead and
// Dir is a symbolic link to it. A server left running for the same data
// directory by a process that died is stopped first; one that a live
// process owns is an error (ErrInUse). The server dies with this process.
func StartPostgres(ctx context.Context, c PostgresConfig) (*Postgres, error) {
	bin, err := FindPostgres()
	if err != nil {
		return nil, err
	}
	if c.Port == 0 {
		if c.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	cred, uid, gid, err := serverCredential()
	if err != nil {
		return nil, err
	}
	if c.Dir, err = dataDir(c.Dir, cred != nil, uid, gid); err != nil {
		return nil, err
	}
	if err := stopStalePostgres(c.Dir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "PG_VERSION")); err != nil {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", c.Dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
		cmd.SysProcAttr = childAttr(cred, syscall.SIGKILL)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("initdb: %w: %s", err, strings.TrimSpace(string(out)))
		}
	}
	logPath := c.Log
	if logPath == "" {
		logPath = filepath.Join(c.Dir, "postgres.log")
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	args := []string{"-D", c.Dir, "-p", strconv.Itoa(c.Port), "-k", c.Dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "shared_buffers=128MB",
		"-c", "max_wal_size=4GB", "-c", "checkpoint_timeout=30min", "-c", "wal_level=minimal", "-c", "max_wal_senders=0"}
	if !c.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	// SIGQUIT is PostgreSQL's immediate shutdown: the postmaster stops its
	// backends and removes its lock file before it exits.
	cmd.SysProcAttr = childAttr(cred, syscall.SIGQUIT)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start postgres: %w", err)
	}
	if err := ownerFile(filepath.Join(c.Dir, ownerName)).write(cmd.Process.Pid); err != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return nil, err
	}
	p := &Postgres{cmd: cmd, cfg: c, dir: c.Dir, port: c.Port,
		URL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, p.URL)
		if err == nil {
			conn.Close(ctx)
			break
		}
		select {
		case werr := <-exited:
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres exited: %v: %s", werr, tail(string(log), 2000))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.kill()
			return nil, fmt.Errorf("postgres did not accept connections within a minute: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	go func() { <-exited }()
	return p, nil
}

// Port returns the server's port.
func (p *Postgres) Port() int { return p.port }

// Pid returns the process id of the postmaster, which leads the process
// group of the server's processes (benchmarks add up their CPU time).
func (p *Postgres) Pid() int { return p.cmd.Process.Pid }

// Dir returns the server's data directory.
func (p *Postgres) Dir() string { return p.dir }

// Stop shuts the server down (fast mode: active transactions are rolled
// back) and waits for it to exit.
func (p *Postgres) Stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return nil // already gone
	}
	return waitGone(p.cmd.Process.Pid, 30*time.Second)
}

// Kill stops the server at once (SIGKILL), as a crash would.
func (p *Postgres) Kill() error {
	p.kill()
	if err := waitGone(p.cmd.Process.Pid, 30*time.Second); err != nil {
		return err
	}
	// Its backends die with it but may still hold the shared memory for
	// a moment, and a server started on the directory meanwhile refuses
	// to start ("pre-existing shared memory block is still in use").
	return waitGroupGone(p.cmd.Process.Pid, 30*time.Second)
}

// waitGroupGone waits until no live process (zombies aside: they hold no
// memory) is left in the process group pgid.
func waitGroupGone(pgid int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for groupAlive(pgid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of group %d still running after %v", pgid, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// groupAlive reports whether a process of group pgid is alive, from
// /proc/PID/stat: "pid (comm) state ppid pgrp ...".
func groupAlive(pgid int) bool {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[0] != "Z" && f[0] != "X" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

func (p *Postgres) kill() { _ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) }

// waitGone waits until the process pid no longer exists.
func waitGone(pid int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still running after %v", pid, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// ownerName is the file in a data directory that records which process
// started its server.
const ownerName = "promo.owner"

// stopStalePostgres stops the server of dir that a dead process left
// running: its PID is the first line of postmaster.pid.
func stopStalePostgres(dir string) error {
	pid := postmasterPID(dir)
	_, owner := ownerFile(filepath.Join(dir, ownerName)).read()
	if err := stopStale(pid, owner, "postgres", syscall.SIGQUIT, 15*time.Second); err != nil {
		return fmt.Errorf("cannot start PostgreSQL in %s: %w", dir, err)
	}
	return nil
}

// relocateBase holds the data directories that user postgres could not
// reach where they were asked for.
const relocateBase = "/var/lib/promo"

// dataDir creates the data directory dir and returns where the data really
// lives. When the server runs as another user (asServer) that cannot reach
// dir, it is a directory of relocateBase named for dir, and dir a symbolic
// link to it, so that the same dir finds the same data at every start.
func dataDir(dir string, asServer bool, uid, gid int) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	ok, blocked := reachable(dir, uid, gid)
	if !asServer || ok {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", err
		}
		if asServer {
			return dir, os.Chown(dir, uid, gid)
		}
		return dir, nil
	}
	sweepRelocated()
	sum := sha256.Sum256([]byte(dir))
	alt := filepath.Join(relocateBase, "postgres-"+hex.EncodeToString(sum[:8]))
	if target, err := os.Readlink(dir); err == nil && target == alt {
		return alt, nil
	}
	if _, err := os.Lstat(dir); err == nil {
		// An empty directory (the parent was made for it) gives way to the
		// link; one with data in it is not touched.
		if err := os.Remove(dir); err != nil {
			return "", fmt.Errorf("PostgreSQL runs as user postgres, which cannot reach %s (%s is not searchable by it): use a directory it can reach", dir, blocked)
		}
	}
	if err := os.MkdirAll(relocateBase, 0o755); err != nil {
		return "", err
	}
	if err := os.MkdirAll(alt, 0o700); err != nil {
		return "", err
	}
	if err := os.Chown(alt, uid, gid); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	if err := os.Symlink(alt, dir); err != nil {
		return "", fmt.Errorf("cannot link %s to PostgreSQL's data in %s: %w", dir, alt, err)
	}
	if err := os.WriteFile(alt+linkSuffix, []byte(dir), 0o644); err != nil {
		return "", err
	}
	return alt, nil
}

// linkSuffix names the file beside a relocated data directory that
// records the link to it.
const linkSuffix = ".link"

// sweepRelocated removes the relocated data directories whose link is
// gone (the directory that was asked for was deleted, like a test's
// temporary one) and whose server does not run: nothing can find them
// any more.
func sweepRelocated() {
	links, _ := filepath.Glob(filepath.Join(relocateBase, "postgres-*"+linkSuffix))
	for _, l := range links {
		alt := strings.TrimSuffix(l, linkSuffix)
		dir, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		if target, err := os.Readlink(string(dir)); err == nil && target == alt {
			continue
		}
		if pid := postmasterPID(alt); pid > 0 && syscall.Kill(pid, 0) == nil {
			continue
		}
		if os.RemoveAll(alt) == nil {
			os.Remove(l)
		}
	}
}

// postmasterPID returns the PID in dir's postmaster.pid, or 0.
func postmasterPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	return pid
}

// serverCredential returns the credential to run PostgreSQL with: user
// postgres when this process is root (postgres refuses to run as root).
func serverCredential() (*syscall.Credential, int, int, error) {
	if os.Geteuid() != 0 {
		return nil, 0, 0, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, 0, 0, fmt.Errorf("running as root needs a postgres user to run PostgreSQL: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid, gid, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// for a server that binds it later. It is drawn below the kernel's
// ephemeral range, which the local end of every outgoing connection takes
// from: a port the kernel hands out for ":0" can be taken by any client
// socket of a busy machine before the server binds it.
func FreePort() (int, error) {
	lo, hi := 20000, ephemeralLow()-1
	for range 100 {
		if hi <= lo {
			break
		}
		p := lo + rand.IntN(hi-lo+1)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		return p, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralLow returns the first port of the kernel's ephemeral range
// (Linux's default when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return lo
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
