package client

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
)

// A BatchGet is split by owner like the proxy splits a batch: each id goes
// to a replica of its slot chosen as Get chooses, the ids bound for one
// node travel together (in requests of at most lookup.MaxBatch ids), and
// every node is asked at once. Failover is per id: the ids of a node that
// fails, is behind or calls them misdirected (a ring change: the ring is
// refreshed) go to the next replica of their slots. Ids answered from a
// version older than the newest in the batch are asked again, so the
// whole answer comes from one version, never older than one the client
// has returned. Batches are not hedged.

// Position states.
const (
	pending uint8 = iota
	found
	missing
)

// bpos is the state of one id of a batch.
type bpos struct {
	asked  uint64 // replicas asked in this round, by index in the owners
	state  uint8
	behind bool
	stamp  lookup.Stamp // of the answer that settled it
	p      Promotion
}

// chunk is the ids of a batch sent to one node in one request.
type chunk struct {
	n      *node
	pos    []int32
	req    fasthttp.Request
	resp   fasthttp.Response
	answer lookup.BatchAnswer
	epoch  uint64 // of the answer
	lat    time.Duration
	err    error
}

// batchRun is one BatchGet.
type batchRun struct {
	strs   []string
	ids    []promotion.ID
	pos    []bpos
	chunks []*chunk // reused across attempts
	groups [][]int32
}

// BatchGet looks ids up and returns the promotions found and the ids not
// found, each in request order (an id given twice is answered twice), all
// from one dataset version. A malformed id fails the whole batch with
// ErrBadID before any request is sent.
func (c *Client) BatchGet(ctx context.Context, ids []string) (promotions []Promotion, unknown []string, err error) {
	if len(ids) == 0 {
		return nil, nil, nil
	}
	b := &batchRun{strs: ids, ids: make([]promotion.ID, len(ids)), pos: make([]bpos, len(ids))}
	for i, s := range ids {
		if b.ids[i], err = promotion.ParseID(bytesOf(s)); err != nil {
			return nil, nil, fmt.Errorf("%w: %q at index %d", ErrBadID, s, i)
		}
	}
	c.requests.Inc()
	r := retry{cfg: &c.cfg}
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		rt := c.routes.Load()
		o, err := c.batchRound(ctx, b, rt)
		if err != nil {
			return nil, nil, err
		}
		if o == answered {
			break
		}
		pause := r.next(o)
		if pause == 0 {
			return nil, nil, c.batchUnanswered(b, rt, o)
		}
		if err := c.sleep(ctx, t, pause); err != nil {
			return nil, nil, err
		}
	}
	c.floor.raise(b.pos[0].stamp) // agree left one version
	for i := range b.pos {
		switch ps := &b.pos[i]; ps.state {
		case found:
			promotions = append(promotions, ps.p)
		case missing:
			unknown = append(unknown, ids[i])
		}
	}
	return promotions, unknown, nil
}

// batchRound asks the replicas of every id not answered yet, each at most
// once, over the nodes in parallel.
func (c *Client) batchRound(ctx context.Context, b *batchRun, rt *routes) (outcome, error) {
	for i := range b.pos {
		b.pos[i].asked, b.pos[i].behind = 0, false
	}
	if len(b.groups) < len(rt.nodes) {
		b.groups = make([][]int32, len(rt.nodes))
	}
	now := time.Now().UnixNano()
	for attempt := 0; ; attempt++ {
		asking := 0
		for i := range b.pos {
			ps := &b.pos[i]
			if ps.state != pending {
				continue
			}
			owners := rt.owners(b.ids[i])
			j := c.next(rt, owners, ps.asked, now)
			if j < 0 {
				continue
			}
			ps.asked |= 1 << j
			b.groups[owners[j]] = append(b.groups[owners[j]], int32(i))
			asking++
		}
		if asking == 0 {
			break
		}
		if attempt > 0 {
			c.failovers.Inc()
		}
		chunks := b.chunks[:0]
		for k, g := range b.groups[:len(rt.nodes)] {
			for len(g) > 0 {
				n := min(len(g), lookup.MaxBatch)
				ch := b.chunk(len(chunks))
				ch.n, ch.pos = rt.nodes[k], g[:n]
				chunks = append(chunks, ch)
				g = g[n:]
			}
		}
		c.sendChunks(b, chunks)
		for _, ch := range chunks {
			c.take(b, ch)
		}
		for k := range b.groups {
			b.groups[k] = b.groups[k][:0]
		}
		if err := ctx.Err(); err != nil {
			return failedAll, err
		}
		c.agree(b)
	}
	result := answered
	for i := range b.pos {
		if ps := &b.pos[i]; ps.state == pending {
			if ps.behind {
				return behindAll, nil
			}
			result = failedAll
		}
	}
	return result, nil
}

func (b *batchRun) chunk(i int) *chunk {
	for len(b.chunks) <= i {
		ch := &chunk{}
		ch.req.Header.SetMethod(fasthttp.MethodPost)
		ch.req.Header.SetContentType("application/json")
		b.chunks = append(b.chunks, ch)
	}
	return b.chunks[i]
}

// sendChunks sends the chunks, all at once.
func (c *Client) sendChunks(b *batchRun, chunks []*chunk) {
	var wg sync.WaitGroup
	for k, ch := range chunks {
		ids := make([]promotion.ID, len(ch.pos))
		for i, p := range ch.pos {
			ids[i] = b.ids[p]
		}
		ch.req.SetRequestURI(lookup.BatchPath)
		ch.req.Header.SetHost(ch.n.host)
		ch.req.SetBodyRaw(lookup.AppendBatchRequest(ch.req.Body()[:0], ids))
		send := func() {
			start := time.Now()
			ch.resp.Reset()
			ch.err = ch.n.hc.DoTimeout(&ch.req, &ch.resp, c.cfg.BatchTryTimeout)
			ch.lat = time.Since(start)
		}
		if k == len(chunks)-1 {
			send() // the last one on this goroutine
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			send()
		}()
	}
	wg.Wait()
}

// take records the answer to ch. Ids answered from a version not older
// than the client has returned are settled; the others stay pending.
func (c *Client) take(b *batchRun, ch *chunk) {
	resp := &ch.resp
	status := resp.StatusCode()
	v := lookup.ParseStamp(resp.Header.Peek(lookup.VersionHeader), resp.Header.Peek(lookup.EpochHeader))
	if ch.err == nil && status == fasthttp.StatusMisdirectedRequest {
		c.stale() // the ring changed; the node is well
		return
	}
	if ch.err != nil || status >= 500 {
		c.failed(ch.n)
		if ch.err == nil && status == fasthttp.StatusServiceUnavailable && v.Version > 0 {
			c.markBehind(b, ch)
		}
		return
	}
	a := &ch.answer
	ch.epoch = v.Epoch
	if status != fasthttp.StatusOK || lookup.ParseBatchAnswer(resp.Body(), a) != nil || a.Version != v.Version || !walk(b, ch, false) {
		c.failed(ch.n)
		return
	}
	c.ok(ch.n, ch.lat)
	if len(a.Misdirected) > 0 {
		c.stale() // the node does not hold some slots it is routed: the ring changed
	}
	if c.floor.behind(v) {
		c.behind.Inc()
		c.markBehind(b, ch)
		return
	}
	walk(b, ch, true)
}

func (c *Client) markBehind(b *batchRun, ch *chunk) {
	for _, i := range ch.pos {
		b.pos[i].behind = true
	}
}

// walk matches ch.answer to the ids of ch: each list of the answer holds
// its ids in request order. It reports whether the answer accounts for
// every id of ch and nothing else, and when apply is set, settles the ids
// found or missing.
func walk(b *batchRun, ch *chunk, apply bool) bool {
	a := &ch.answer
	f, m, d := 0, 0, 0
	for _, i := range ch.pos {
		id, ps := b.ids[i], &b.pos[i]
		switch {
		case f < len(a.Promotions) && a.Promotions[f].ID == id:
			if apply {
				p, err := parsePromotion(a.Promotions[f].JSON, b.strs[i], id)
				if err != nil {
					return false
				}
				p.Version = a.Version
				ps.state, ps.stamp, ps.p = found, lookup.Stamp{Epoch: ch.epoch, Version: a.Version}, p
			}
			f++
		case m < len(a.Missing) && a.Missing[m] == id:
			if apply {
				ps.state, ps.stamp = missing, lookup.Stamp{Epoch: ch.epoch, Version: a.Version}
			}
			m++
		case d < len(a.Misdirected) && a.Misdirected[d] == id:
			d++ // stays pending: the next replica is asked
		default:
			return false
		}
	}
	return f == len(a.Promotions) && m == len(a.Missing) && d == len(a.Misdirected)
}

// agree sends back to pending the ids answered from a version older than
// the newest answered or returned, so that the batch is answered from one
// version.
func (c *Client) agree(b *batchRun) {
	newest := c.floor.get()
	for i := range b.pos {
		if ps := &b.pos[i]; ps.state != pending && newest.Less(ps.stamp) {
			newest = ps.stamp
		}
	}
	for i := range b.pos {
		if ps := &b.pos[i]; ps.state != pending && ps.stamp.Less(newest) {
			ps.state, ps.behind, ps.p = pending, true, Promotion{}
		}
	}
}

// batchUnanswered is the error of a batch some ids of which no replica
// answered.
func (c *Client) batchUnanswered(b *batchRun, rt *routes, o outcome) error {
	n, first := 0, -1
	for i := range b.pos {
		if b.pos[i].state == pending {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	var names []string
	for _, k := range rt.owners(b.ids[first]) {
		names = append(names, rt.nodes[k].name+" "+rt.nodes[k].base)
	}
	what := "no replica answered"
	if o == behindAll {
		what = fmt.Sprintf("no replica reached dataset version %d within %v", c.floor.get().Version, c.cfg.CatchUpWait)
	}
	return fmt.Errorf("client: %s for %d ids of the batch, the first %s (replicas %s)", what, n, b.strs[first], strings.Join(names, ", "))
}
