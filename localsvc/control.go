package localsvc

import (
	"context"
	"syscall"
)

// This file holds what fault drills (promo bench faults) do to the
// servers: freeze them as a stalled host would, and start them again
// after a stop or a crash. A frozen server must be resumed before it is
// stopped: it handles no signal but SIGKILL while frozen.

// PID returns the postmaster's process ID.
func (p *Postgres) PID() int { return p.cmd.Process.Pid }

// Pause freezes the server and every backend (SIGSTOP to its process
// group): connections stay open and nothing answers, as on a stalled
// host.
func (p *Postgres) Pause() error { return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGSTOP) }

// Resume lets a paused server run again (SIGCONT to its process group).
func (p *Postgres) Resume() error { return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGCONT) }

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
