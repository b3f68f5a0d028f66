package client

import (
	"context"
	"fmt"
	"math/bits"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
)

// A Get runs on the caller's goroutine: it sends the request to the best
// replica over one of the node's connections (conns.go) and waits there
// for the answer, until the hedge delay. Most lookups end there, without
// handing anything to another goroutine. One that has no answer by then
// races: the request still out is handed to a pooled goroutine
// (hedge.Pool) to finish, the hedge goes to the next replica on another,
// and the caller takes the first useful answer, abandoning the other,
// which completes on its own within TryTimeout. The call, with its
// buffers, returns to the pool when the last of its attempts and its
// caller are done with it (refs).

// maxAttempts bounds the attempts of one round (one per replica).
const maxAttempts = 64

// attempt is one request to one node.
type attempt struct {
	call    *call
	idx     int // in call.att
	n       *node
	hedged  bool
	start   time.Time
	end     time.Time // the try's deadline
	lat     time.Duration
	err     error
	cn      *conn // the connection, while the answer is awaited
	retried bool  // sent again after meeting a stale connection
	resp    fasthttp.Response
}

// call is the state of one Get, pooled.
type call struct {
	c     *Client
	refs  atomic.Int32
	done  chan *attempt
	att   []*attempt
	used  int
	path  []byte
	timer *time.Timer
}

func (c *Client) acquire() *call {
	cl, _ := c.calls.Get().(*call)
	if cl == nil {
		cl = &call{c: c, done: make(chan *attempt, maxAttempts), timer: time.NewTimer(time.Hour)}
		cl.timer.Stop()
	}
	cl.refs.Store(1)
	cl.used = 0
	return cl
}

// release drops one reference; the last one returns cl to the pool.
func (cl *call) release() {
	if cl.refs.Add(-1) != 0 {
		return
	}
	for {
		select {
		case <-cl.done: // answers nobody waited for
		default:
			cl.c.calls.Put(cl)
			return
		}
	}
}

// attempt readies the next attempt of cl, a request to n from start until
// end.
func (cl *call) attempt(n *node, hedged bool, start, end time.Time) *attempt {
	if cl.used == len(cl.att) {
		cl.att = append(cl.att, &attempt{call: cl, idx: len(cl.att)})
	}
	a := cl.att[cl.used]
	cl.used++
	a.n, a.hedged, a.err, a.cn, a.retried = n, hedged, nil, nil, false
	a.start, a.end = start, end
	a.resp.Reset()
	return a
}

// async finishes a on a pooled goroutine, which hands it to cl.done.
func (cl *call) async(a *attempt) {
	cl.refs.Add(1)
	cl.c.pool.Go(a)
}

// Run sends a's request unless it is out already, waits for the answer
// and hands it to its caller.
func (a *attempt) Run() {
	cl := a.call
	if a.cn != nil || a.send(false) {
		a.wait(a.end)
	}
	a.settle()
	cl.done <- a
	cl.release()
}

// send takes a connection to a.n (a new one when fresh) and writes the
// request; false with a.err set when it could not.
func (a *attempt) send(fresh bool) bool {
	c := a.call.c
	for {
		cn, err := a.n.conns.get(a.start, a.end, fresh)
		if err == nil {
			if err = cn.send(a.call.path, a.n.host, a.start, a.end, c.cfg.TryTimeout); err == nil {
				a.cn = cn
				return true
			}
			a.n.conns.discard(cn)
			if cn.reused && !a.retried && stale(err) {
				a.retried, fresh = true, true
				continue
			}
		}
		a.err = err
		return false
	}
}

// wait waits until t (at most a.end) for the answer of a request sent. It
// returns false when t passed first: the request is still out, a.cn kept.
// Otherwise the answer is in a.resp, or its failure in a.err, and the
// connection is given back (or closed).
func (a *attempt) wait(t time.Time) bool {
	final := !t.Before(a.end)
	if final {
		t = a.end
	}
	for {
		cn := a.cn
		ok, err := cn.begun(t)
		if ok {
			if !final {
				err = cn.nc.SetReadDeadline(a.end)
			}
			if err == nil {
				err = a.resp.ReadLimitBody(cn.br, maxAnswer)
			}
			a.cn = nil
			if err == nil && !a.resp.ConnectionClose() {
				a.n.conns.put(cn, time.Now())
			} else {
				a.n.conns.discard(cn)
			}
			a.err = err
			return true
		}
		if err == nil && !final {
			return false
		}
		if err == nil {
			err = fasthttp.ErrTimeout
		}
		a.cn = nil
		a.n.conns.discard(cn)
		if cn.reused && !a.retried && stale(err) {
			// The server closed the connection while it was idle: the
			// request never reached it.
			a.retried = true
			if a.send(true) {
				continue
			}
			return true
		}
		a.err = err
		return true
	}
}

// settle records how a's request went.
func (a *attempt) settle() {
	c := a.call.c
	a.lat = time.Since(a.start)
	if a.err == nil && a.resp.StatusCode() < 500 {
		c.hedge.Observe(a.lat)
		c.ok(a.n, a.lat)
	}
}

// bytesOf returns the bytes of s, to be read only.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// Get returns the promotion of id, ErrNotFound when the serving dataset
// does not hold it, or ErrBadID for a malformed id. The answer never comes
// from a dataset version older than one the client has returned. A try
// ends at ctx's deadline when that comes before TryTimeout; a context
// cancelled otherwise is noticed between tries (within TryTimeout).
func (c *Client) Get(ctx context.Context, id string) (Promotion, error) {
	pid, err := promotion.ParseID(bytesOf(id))
	if err != nil {
		return Promotion{}, fmt.Errorf("%w: %q", ErrBadID, id)
	}
	c.requests.Inc()
	cl := c.acquire()
	defer cl.release()
	cl.path = append(append(cl.path[:0], lookup.PathPrefix...), id...)
	r := retry{cfg: &c.cfg}
	for {
		rt := c.routes.Load()
		o, a, err := c.round(ctx, cl, rt, rt.owners(pid))
		if err != nil {
			return Promotion{}, err
		}
		if a != nil {
			return c.answer(a, id, pid)
		}
		pause := r.next(o)
		if pause == 0 {
			return Promotion{}, c.unanswered(rt, pid, o)
		}
		if err := c.sleep(ctx, cl.timer, pause); err != nil {
			return Promotion{}, err
		}
	}
}

// tryEnd is the deadline of a try started at start.
func (c *Client) tryEnd(ctx context.Context, start time.Time) time.Time {
	end := start.Add(c.cfg.TryTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(end) {
		return d
	}
	return end
}

// round asks the replicas of a slot for cl's id: the best one first, the
// next one after a failure, on the caller's goroutine, until the hedge
// delay passes without an answer; then the next one also (when the budget
// allows), and the first answer wins (race). It returns the attempt that
// answered, or how the round ended.
func (c *Client) round(ctx context.Context, cl *call, rt *routes, owners []uint16) (outcome, *attempt, error) {
	cl.used = 0
	start := time.Now()
	now := start.UnixNano()
	c.hedge.Primary()
	hedgeAt := start.Add(c.hedge.Delay())
	result := failedAll
	var asked uint64
	for {
		j := c.next(rt, owners, asked, now)
		if j < 0 {
			return result, nil, nil
		}
		if asked != 0 {
			c.failovers.Inc()
			start = time.Now()
		}
		asked |= 1 << j
		a := cl.attempt(rt.nodes[owners[j]], false, start, c.tryEnd(ctx, start))
		if a.send(false) {
			// Another replica to hedge to, and no answer by the delay:
			// hedge if the budget allows, else wait on.
			if bits.OnesCount64(asked) < len(owners) && !a.wait(hedgeAt) {
				if h := c.next(rt, owners, asked, now); h >= 0 && c.hedge.Allow() {
					return c.race(ctx, cl, rt, owners, asked, a, h, now, result)
				}
			}
			if a.cn != nil {
				a.wait(a.end)
			}
		}
		a.settle()
		if c.useful(a, &result) {
			return answered, a, nil
		}
		if err := ctx.Err(); err != nil {
			return failedAll, nil, err
		}
	}
}

// race goes on with a round whose attempt first is still out after the
// hedge delay: first finishes on a pooled goroutine, a hedge goes to the
// next replica, and the first useful answer wins; the next replica is
// asked after a failure. h is the replica to hedge to.
func (c *Client) race(ctx context.Context, cl *call, rt *routes, owners []uint16, asked uint64, first *attempt, h int, now int64, result outcome) (outcome, *attempt, error) {
	cl.async(first)
	var out uint64 = 1 << first.idx // attempts not answered yet, by index in cl.att
	inflight := 1
	launch := func(j int, hedged bool) {
		asked |= 1 << j
		start := time.Now()
		a := cl.attempt(rt.nodes[owners[j]], hedged, start, c.tryEnd(ctx, start))
		out |= 1 << a.idx
		inflight++
		cl.async(a)
	}
	launch(h, true)
	for inflight > 0 {
		select {
		case a := <-cl.done:
			inflight--
			out &^= 1 << a.idx
			if c.useful(a, &result) {
				if a.hedged {
					c.hedge.Won()
					// The request it hedged is still out: its node takes at
					// least this long, which it tells at once, not when (or
					// if) it answers. A node slow from the start loses its
					// turn as first replica after one hedge, not one answer.
					for k := range cl.used {
						if out&(1<<k) != 0 {
							c.late(cl.att[k].n, time.Since(cl.att[k].start))
						}
					}
				}
				return answered, a, nil
			}
			if inflight == 0 {
				if j := c.next(rt, owners, asked, now); j >= 0 {
					c.failovers.Inc()
					launch(j, false)
				}
			}
		case <-ctx.Done():
			return failedAll, nil, ctx.Err()
		}
	}
	return result, nil, nil
}

// useful reports whether a's answer ends the lookup; otherwise it records
// in result why not (and a 421 refreshes the ring).
func (c *Client) useful(a *attempt, result *outcome) bool {
	status := a.resp.StatusCode()
	v := lookup.ParseStamp(a.resp.Header.Peek(lookup.VersionHeader), a.resp.Header.Peek(lookup.EpochHeader))
	switch {
	case a.err == nil && status == fasthttp.StatusMisdirectedRequest:
		// The ring changed: the node is well, it no longer holds the
		// slot. Ask the next replica while the ring is refreshed.
		c.stale()
	case a.err != nil || status >= 500:
		c.failed(a.n)
		if a.err == nil && status == fasthttp.StatusServiceUnavailable && v.Version > 0 {
			*result = behindAll // a node catching up with the active version
		}
	case (status == fasthttp.StatusOK || status == fasthttp.StatusNotFound) && c.floor.behind(v):
		c.behind.Inc()
		*result = behindAll
	default:
		return true
	}
	return false
}

// answer turns the answer of a into the result of Get.
func (c *Client) answer(a *attempt, id string, pid promotion.ID) (Promotion, error) {
	v := lookup.ParseStamp(a.resp.Header.Peek(lookup.VersionHeader), a.resp.Header.Peek(lookup.EpochHeader))
	switch status := a.resp.StatusCode(); status {
	case fasthttp.StatusOK:
		p, err := parsePromotion(a.resp.Body(), id, pid)
		if err != nil {
			return Promotion{}, fmt.Errorf("client: %s answered %s: %w", a.n.base, id, err)
		}
		c.floor.raise(v)
		p.Version = v.Version
		return p, nil
	case fasthttp.StatusNotFound:
		c.floor.raise(v)
		return Promotion{}, ErrNotFound
	case fasthttp.StatusBadRequest:
		return Promotion{}, fmt.Errorf("%w: %q (%s: %.200s)", ErrBadID, id, a.n.base, a.resp.Body())
	default:
		return Promotion{}, fmt.Errorf("client: %s answered %d for %s: %.200s", a.n.base, status, id, a.resp.Body())
	}
}

// unanswered is the error of a lookup no replica answered.
func (c *Client) unanswered(rt *routes, pid promotion.ID, o outcome) error {
	var names []string
	for _, o := range rt.owners(pid) {
		names = append(names, rt.nodes[o].name+" "+rt.nodes[o].base)
	}
	if o == behindAll {
		return fmt.Errorf("client: no replica of %s reached dataset version %d within %v (replicas %s)", pid, c.floor.get().Version, c.cfg.CatchUpWait, strings.Join(names, ", "))
	}
	return fmt.Errorf("client: no replica of %s answered, %d rounds (replicas %s)", pid, c.cfg.Retries+1, strings.Join(names, ", "))
}
