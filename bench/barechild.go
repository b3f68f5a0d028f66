package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/promotion-service/promo/localsvc"
)

// BareChildConfig says how to run the bare server (RunBareServer) in a
// child process. A baseline runs apart from the load generator, as the
// server it stands for does, so that the two do not share one Go runtime.
type BareChildConfig struct {
	// Path is the program and Args its arguments: a command that takes
	// --addr and runs RunBareServer announcing on its standard error, such
	// as promo with "bench", "bare-server". StartBareChild appends
	// "--addr 127.0.0.1:0".
	Path string
	Args []string
	// Env is the child's environment (default: this process's).
	Env []string
}

// BareChild is a bare server running in a child process. The child is
// killed when ctx of StartBareChild ends, when Close is called, and (on
// Linux) when this process dies.
type BareChild struct {
	cmd     *exec.Cmd
	addr    string
	exited  chan struct{} // closed once the child has been waited for
	waitErr error         // set before exited is closed
	output  []string      // the child's other stderr lines, set before exited is closed
}

// bareStartTimeout bounds the wait for a child to announce its address.
const bareStartTimeout = 10 * time.Second

// StartBareChild starts the child of c on a free loopback port and returns
// once it listens.
func StartBareChild(ctx context.Context, c BareChildConfig) (*BareChild, error) {
	if c.Path == "" {
		return nil, errors.New("bench: the bare server's program is required")
	}
	cmd := exec.CommandContext(ctx, c.Path, append(slices.Clone(c.Args), "--addr", "127.0.0.1:0")...)
	cmd.Env = c.Env
	localsvc.DieWithParent(cmd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: cannot start the bare server: %w", err)
	}
	b := &BareChild{cmd: cmd, exited: make(chan struct{})}
	announced := make(chan string, 1)
	go func() {
		// Read to the end before Wait, which closes the pipe.
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			if addr, ok := parseAnnounce(sc.Text()); ok && !sent {
				announced <- addr
				sent = true
				continue
			}
			b.output = append(b.output[max(0, len(b.output)-9):], sc.Text())
		}
		b.waitErr = cmd.Wait()
		close(b.exited)
	}()
	timer := time.NewTimer(bareStartTimeout)
	defer timer.Stop()
	select {
	case b.addr = <-announced:
		return b, nil
	case <-b.exited:
		return nil, fmt.Errorf("bench: the bare server exited before listening: %v: %s", b.waitErr, strings.Join(b.output, "\n"))
	case <-timer.C:
		_ = b.Close()
		return nil, fmt.Errorf("bench: the bare server did not listen within %v", bareStartTimeout)
	case <-ctx.Done():
		_ = b.Close()
		return nil, ctx.Err()
	}
}

// URL is the base URL the child serves.
func (b *BareChild) URL() string { return "http://" + b.addr }

// PID is the child's process id.
func (b *BareChild) PID() int { return b.cmd.Process.Pid }

// Close kills the child, by its PID, and waits for it to exit.
func (b *BareChild) Close() error {
	if err := b.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-b.exited
	return nil
}
