package localsvc

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Redis is a running redis-server.
type Redis struct {
	cmd  *exec.Cmd
	cfg  RedisConfig // as started: Port chosen
	port int
	// URL is the server's redis:// URL.
	URL string
}

// RedisConfig describes a local redis-server.
type RedisConfig struct {
	// Port on 127.0.0.1; 0 picks a free one.
	Port int
	// Dir is its working directory; nothing is persisted there. When set,
	// it is the server's own: a redis-server that a dead process left
	// running for it is stopped at start. Empty means the temporary
	// directory, shared, with no such check.
	Dir string
}

// StartRedis starts redis-server without persistence and returns once it
// accepts connections. The server dies with this process.
func StartRedis(ctx context.Context, c RedisConfig) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("%w: redis-server (apt-get install redis-server)", ErrNotInstalled)
	}
	if c.Port == 0 {
		if c.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	asked := c
	var owner ownerFile
	if c.Dir == "" {
		c.Dir = os.TempDir()
	} else {
		owner = ownerFile(filepath.Join(c.Dir, "redis.owner"))
		server, by := owner.read()
		if err := stopStale(server, by, "redis-server", syscall.SIGKILL, 5*time.Second); err != nil {
			return nil, fmt.Errorf("cannot start redis-server in %s: %w", c.Dir, err)
		}
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(c.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--dir", c.Dir, "--loglevel", "warning")
	cmd.SysProcAttr = childAttr(nil, syscall.SIGKILL)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start redis-server: %w", err)
	}
	if owner != "" {
		if err := owner.write(cmd.Process.Pid); err != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			return nil, err
		}
	}
	go func() { _ = cmd.Wait() }()
	r := &Redis{cmd: cmd, cfg: asked, port: c.Port, URL: fmt.Sprintf("redis://127.0.0.1:%d/0", c.Port)}
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.Port), time.Second)
		if err == nil {
			conn.Close()
			return r, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = r.Stop()
			return nil, fmt.Errorf("redis-server did not listen within 20s: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Port returns the server's port.
func (r *Redis) Port() int { return r.port }

// Stop kills the server and waits for it to exit.
func (r *Redis) Stop() error {
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	return waitGone(r.cmd.Process.Pid, 10*time.Second)
}

// PID returns the server's process ID.
func (r *Redis) PID() int { return r.cmd.Process.Pid }
