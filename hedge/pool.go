package hedge

// Task is work for a Pool.
type Task interface{ Run() }

// Pool runs tasks on reused goroutines: a request that may be hedged runs
// off its caller's goroutine, so that the caller can take whichever answer
// comes first and abandon the other, and the pool keeps that from costing
// a goroutine start (and its allocation) per request. The pool grows to
// the most tasks run at once; its goroutines exit at Close (no idle timer:
// resetting one per task cost more than the goroutines, a few KiB each).
type Pool struct {
	work   chan Task
	closed chan struct{}
}

// NewPool returns an empty pool.
func NewPool() *Pool {
	return &Pool{work: make(chan Task), closed: make(chan struct{})}
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
	for {
		t.Run()
		select {
		case t = <-p.work:
		case <-p.closed:
			return
		}
	}
}

// Close makes the idle goroutines exit, and the busy ones once their task
// is done. Tasks given to Go after Close still run, each on a goroutine of
// its own.
func (p *Pool) Close() { close(p.closed) }
