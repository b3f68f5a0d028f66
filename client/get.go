package client

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
)

// A Get runs on the caller's goroutine, which sends its attempts (the
// request to one replica) to workers and waits for the first useful
// answer, the hedge timer, or its context. Attempts run on pooled
// goroutines (hedge.Pool), so that an attempt can be abandoned (a hedge answered first,
// the context ended) without waiting for it; its call, with its buffers,
// returns to the pool when the last of its attempts and its caller are
// done with it (refs).

// maxAttempts bounds the attempts of one round (one per replica).
const maxAttempts = 64

// attempt is one request to one node.
type attempt struct {
	call   *call
	idx    int // in call.att
	n      *node
	hedged bool
	start  time.Time
	lat    time.Duration
	err    error
	req    fasthttp.Request
	resp   fasthttp.Response
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

// launch sends the request of cl to n, at start.
func (cl *call) launch(n *node, hedged bool, start time.Time) {
	if cl.used == len(cl.att) {
		cl.att = append(cl.att, &attempt{call: cl, idx: len(cl.att)})
	}
	a := cl.att[cl.used]
	cl.used++
	a.n, a.hedged, a.err = n, hedged, nil
	a.req.SetRequestURIBytes(cl.path)
	a.req.Header.SetHost(n.host)
	a.start = start
	cl.refs.Add(1)
	cl.c.pool.Go(a)
}

// Run sends a's request and hands the answer to its caller.
func (a *attempt) Run() {
	c := a.call.c
	a.resp.Reset()
	a.err = a.n.hc.DoTimeout(&a.req, &a.resp, c.cfg.TryTimeout)
	a.lat = time.Since(a.start)
	if a.err == nil && a.resp.StatusCode() < 500 {
		c.hedge.Observe(a.lat)
		c.ok(a.n, a.lat)
	}
	cl := a.call
	cl.done <- a
	cl.release()
}

// bytesOf returns the bytes of s, to be read only.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// Get returns the promotion of id, ErrNotFound when the serving dataset
// does not hold it, or ErrBadID for a malformed id. The answer never comes
// from a dataset version older than one the client has returned.
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

// round asks the replicas of a slot for cl's id: the best one first, the
// next one also when no answer came within the hedge delay (and the budget
// allows), the next one after a failure. It returns the attempt that
// answered, or how the round ended.
func (c *Client) round(ctx context.Context, cl *call, rt *routes, owners []uint16) (outcome, *attempt, error) {
	cl.used = 0
	start := time.Now()
	now := start.UnixNano()
	j := c.next(rt, owners, 0, now)
	asked := uint64(1) << j
	cl.launch(rt.nodes[owners[j]], false, start)
	inflight := 1
	var out uint64 = 1 // attempts not answered yet, by index in cl.att
	c.hedge.Primary()
	cl.timer.Reset(c.hedge.Delay())
	defer cl.timer.Stop()
	result := failedAll
	for inflight > 0 {
		select {
		case a := <-cl.done:
			inflight--
			out &^= 1 << a.idx
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
					result = behindAll // a node catching up with the active version
				}
			case (status == fasthttp.StatusOK || status == fasthttp.StatusNotFound) && c.floor.behind(v):
				c.behind.Inc()
				result = behindAll
			default:
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
					asked |= 1 << j
					c.failovers.Inc()
					out |= 1 << cl.used
					cl.launch(rt.nodes[owners[j]], false, time.Now())
					inflight++
				}
			}
		case <-cl.timer.C:
			if j := c.next(rt, owners, asked, now); j >= 0 && c.hedge.Allow() {
				asked |= 1 << j
				out |= 1 << cl.used
				cl.launch(rt.nodes[owners[j]], true, time.Now())
				inflight++
			}
		case <-ctx.Done():
			return failedAll, nil, ctx.Err()
		}
	}
	return result, nil, nil
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
