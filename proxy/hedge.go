package proxy

import (
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// A lookup's requests to the read nodes (tries) run on the proxy's pool of
// goroutines (hedge.Pool) while the handler waits for the first useful
// answer, the hedge timer or the end of the tries: a try not answered
// within the hedge delay (package hedge: the p95 of recent latencies,
// within the budget of 10% extra requests) is joined by a try on the next
// replica, and the first answer wins. The other try is abandoned: it ends
// within TryTimeout on its own, and its lookupCall returns to the pool
// once the handler and every try are done with it (refs).
//
// Each try's request is built once per lookup from the method and path
// alone: the client's request is not copied.

// try is one request of a lookup to one read node.
type try struct {
	l      *lookupCall
	b      *backend
	hedged bool
	start  time.Time
	err    error
	req    fasthttp.Request
	resp   fasthttp.Response
}

// lookupCall is the state of one lookup, pooled.
type lookupCall struct {
	p      *Proxy
	refs   atomic.Int32
	done   chan *try
	tries  []*try
	used   int
	method []byte
	path   []byte
	timer  *time.Timer
}

// maxTries bounds the tries of one round (one per replica, at most 64).
const maxTries = 64

func (p *Proxy) acquireCall(ctx *fasthttp.RequestCtx) *lookupCall {
	l, _ := p.calls.Get().(*lookupCall)
	if l == nil {
		l = &lookupCall{p: p, done: make(chan *try, maxTries), timer: time.NewTimer(time.Hour)}
		l.timer.Stop()
	}
	l.refs.Store(1)
	l.used = 0
	l.method = append(l.method[:0], ctx.Method()...)
	l.path = append(l.path[:0], ctx.Path()...)
	return l
}

// release drops one reference; the last one returns l to the pool.
func (l *lookupCall) release() {
	if l.refs.Add(-1) != 0 {
		return
	}
	for {
		select {
		case <-l.done: // answers nobody waited for
		default:
			l.p.calls.Put(l)
			return
		}
	}
}

// launch sends the lookup to b.
func (l *lookupCall) launch(b *backend, hedged bool) {
	if l.used == len(l.tries) {
		l.tries = append(l.tries, &try{l: l})
	}
	t := l.tries[l.used]
	l.used++
	t.b, t.hedged, t.err = b, hedged, nil
	t.req.Header.SetMethodBytes(l.method)
	t.req.SetRequestURIBytes(l.path)
	t.req.Header.SetHost(b.client.Addr)
	t.start = time.Now()
	l.refs.Add(1)
	l.p.pool.Go(t)
}

// Run sends t's request and hands the answer to its lookup.
func (t *try) Run() {
	p := t.l.p
	t.resp.Reset()
	t.err = t.b.client.DoTimeout(&t.req, &t.resp, p.cfg.TryTimeout)
	if t.err == nil && t.resp.StatusCode() < 500 {
		p.hedge.Observe(time.Since(t.start))
	}
	l := t.l
	l.done <- t
	l.release()
}
