package hedge

import "time"

// Task is work for a Pool.
type Task interface{ Run() }

// Pool runs tasks on reused goroutines: a request that may be hedged runs
// off its caller's goroutine, so that the caller can take whichever answer
// comes first and abandon the other, and the pool keeps that from costing
// a goroutine start (and its allocation) per request. Idle goroutines exit
// after a while, and at once after Close.
type Pool struct {
	work   chan Task
	closed chan struct{}
	idle   time.Duration
}

// NewPool returns a pool whose goroutines exit after idle without work.
func NewPool(idle time.Duration) *Pool {
	return &Pool{work: make(chan Task), closed: make(chan struct{}), idle: idle}
}

// Go runs t on an idle goroutine of the pool, or on a new one.
func (p *Pool) Go(t Task) {
	select {
	case p.work <- t:
	default:
		go p.worker(t)
	}
}

func (p *Pool) worker(t Task) {
	idle := time.NewTimer(p.idle)
	defer idle.Stop()
	for {
		t.Run()
		idle.Reset(p.idle)
		select {
		case t = <-p.work:
		case <-idle.C:
			return
		case <-p.closed:
			return
		}
	}
}

// Close makes the idle goroutines exit, and the busy ones once their task
// is done. Tasks given to Go after Close still run, each on a goroutine of
// its own.
func (p *Pool) Close() { close(p.closed) }
