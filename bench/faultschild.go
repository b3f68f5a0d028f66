package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/promotion-service/promo/localsvc"
)

// child is a promo process the harness runs.
type child struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

// startChild starts bin with args, its output appended to logPath. The
// child dies with this process.
func startChild(name, bin string, args []string, logPath string) (*child, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// The child's flags are the ones given here, not the PROMO_*
	// variables of whoever runs the drills.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PROMO_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	localsvc.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: cannot start %s (%s): %w", name, bin, err)
	}
	c := &child{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill() error {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-c.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("bench: %s (pid %d) still runs 10s after SIGKILL", c.name, c.pid())
	}
}

// stop sends SIGTERM, and SIGKILL after grace.
func (c *child) stop(grace time.Duration) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(grace):
		_ = c.kill()
	}
}

// logTail returns the last n bytes of the child's log.
func (c *child) logTail(n int) string {
	b, _ := os.ReadFile(c.log)
	return strings.TrimSpace(tail(string(b), n))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
