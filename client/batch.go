package client

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
// has returned.
//
// Requests of a batch are hedged like single lookups, with a delay and a
// budget of their own (promo_client_batch_*): the ids of a request not
// answered within the delay are sent to the next replica of each too, and
// the first answer settles an id. A request still out when all its ids are
// settled is left to finish on its own (its latency counts as late for its
// node), so a slow node delays a batch by about the hedge delay.

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
	start  time.Time
	lat    time.Duration
	err    error
	out    bool   // sent, not answered yet
	hedges *chunk // the chunk this one hedges, nil for a primary
	beaten bool   // a hedge of it answered first
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
		end := b.split(rt, 0, nil)
		c.exchange(ctx, b, rt, b.chunks[:end])
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

// split turns b.groups (ids by node) into requests of at most
// lookup.MaxBatch ids, the chunks b.chunks[from:end], and empties the
// groups. hedges is the chunk they hedge, or nil.
func (b *batchRun) split(rt *routes, from int, hedges *chunk) (end int) {
	end = from
	for k, g := range b.groups[:len(rt.nodes)] {
		for len(g) > 0 {
			n := min(len(g), lookup.MaxBatch)
			ch := b.chunk(end)
			ch.n, ch.pos, ch.hedges, ch.beaten = rt.nodes[k], append(ch.pos[:0], g[:n]...), hedges, false
			end++
			g = g[n:]
		}
		b.groups[k] = b.groups[k][:0]
	}
	return end
}

// chunk returns b.chunks[i], made (or remade, when the one there was left
// out by an earlier exchange) ready for a new request.
func (b *batchRun) chunk(i int) *chunk {
	for len(b.chunks) <= i {
		b.chunks = append(b.chunks, nil)
	}
	if b.chunks[i] == nil || b.chunks[i].out {
		ch := &chunk{}
		ch.req.Header.SetMethod(fasthttp.MethodPost)
		ch.req.Header.SetContentType("application/json")
		b.chunks[i] = ch
	}
	return b.chunks[i]
}

// exchange sends chunks at once, each on its own goroutine, and takes
// their answers on this one as they come. Chunks still out after the
// batch hedge delay are hedged, and the exchange ends when no chunk is
// out, or when none of those out holds an id still pending: those are
// left to finish on their own, as are all when ctx ends.
func (c *Client) exchange(ctx context.Context, b *batchRun, rt *routes, chunks []*chunk) {
	chunks = slices.Clone(chunks)                        // hedges are appended; b.chunks holds them too
	done := make(chan *chunk, len(chunks)*len(rt.nodes)) // every chunk and its hedges: a send never blocks
	var ids []promotion.ID
	for _, ch := range chunks {
		c.bhedge.Primary()
		ids = c.sendChunk(b, ch, done, ids)
	}
	out := len(chunks)
	var hedgeAt <-chan time.Time
	if c.bhedge.Enabled() {
		timer := time.NewTimer(c.bhedge.Delay())
		defer timer.Stop()
		hedgeAt = timer.C
	}
	for out > 0 {
		select {
		case <-ctx.Done():
			return
		case ch := <-done:
			out--
			ch.out = false
			if c.take(b, ch) > 0 && ch.hedges != nil && ch.hedges.out && !ch.hedges.beaten {
				ch.hedges.beaten = true
				c.bhedge.Won()
			}
			if !waiting(b, chunks) {
				for _, ch := range chunks {
					if ch.out && ch.hedges == nil { // beaten by hedges
						c.late(ch.n, time.Since(ch.start))
					}
				}
				return
			}
		case <-hedgeAt:
			hedgeAt = nil
			now := time.Now().UnixNano()
			for _, ch := range chunks { // not the hedges appended meanwhile
				if !ch.out || !c.hedgeGroups(b, rt, ch, now) {
					continue
				}
				// A request's pending ids may go to several nodes: all
				// of them or none, since the batch waits for the last.
				end := b.split(rt, len(chunks), ch)
				hedges := b.chunks[len(chunks):end]
				if !c.bhedge.AllowN(len(hedges)) {
					for _, h := range hedges {
						unask(b, rt, h)
					}
					continue
				}
				for _, h := range hedges {
					ids = c.sendChunk(b, h, done, ids)
					chunks = append(chunks, h)
					out++
				}
			}
		}
	}
}

// unask forgets that the ids of h, a hedge the budget refused, were asked
// of h's node.
func unask(b *batchRun, rt *routes, h *chunk) {
	for _, i := range h.pos {
		for j, o := range rt.owners(b.ids[i]) {
			if rt.nodes[o] == h.n {
				b.pos[i].asked &^= 1 << j
			}
		}
	}
}

// hedgeGroups puts the ids of ch still pending in b.groups, each by the
// next replica of its slot not asked yet, and reports whether any has one.
func (c *Client) hedgeGroups(b *batchRun, rt *routes, ch *chunk, now int64) bool {
	some := false
	for _, i := range ch.pos {
		ps := &b.pos[i]
		if ps.state != pending {
			continue
		}
		owners := rt.owners(b.ids[i])
		if j := c.next(rt, owners, ps.asked, now); j >= 0 {
			ps.asked |= 1 << j
			b.groups[owners[j]] = append(b.groups[owners[j]], i)
			some = true
		}
	}
	return some
}

// waiting reports whether a chunk out holds an id still pending.
func waiting(b *batchRun, chunks []*chunk) bool {
	for _, ch := range chunks {
		if !ch.out {
			continue
		}
		for _, i := range ch.pos {
			if b.pos[i].state == pending {
				return true
			}
		}
	}
	return false
}

// sendChunk writes the request of ch and sends it on a new goroutine,
// which records how the node did (also for a request left out by its
// exchange) and hands ch to done; ids is scratch space, returned.
func (c *Client) sendChunk(b *batchRun, ch *chunk, done chan<- *chunk, ids []promotion.ID) []promotion.ID {
	ids = ids[:0]
	for _, p := range ch.pos {
		ids = append(ids, b.ids[p])
	}
	ch.req.SetRequestURI(lookup.BatchPath)
	ch.req.Header.SetHost(ch.n.host)
	ch.req.SetBodyRaw(lookup.AppendBatchRequest(ch.req.Body()[:0], ids))
	ch.resp.Reset()
	ch.out, ch.start = true, time.Now()
	go func() {
		ch.err = ch.n.hc.DoTimeout(&ch.req, &ch.resp, c.cfg.BatchTryTimeout)
		ch.lat = time.Since(ch.start)
		switch status := ch.resp.StatusCode(); {
		case ch.err != nil || status >= 500:
			c.failed(ch.n)
		case status != fasthttp.StatusMisdirectedRequest:
			c.ok(ch.n, ch.lat)
			c.bhedge.Observe(ch.lat)
		}
		done <- ch
	}()
	return ids
}

// take records the answer to ch. Ids answered from a version not older
// than the client has returned are settled; the others stay pending. It
// returns how many ids ch settled. (The node's health and latency were
// recorded by sendChunk.)
func (c *Client) take(b *batchRun, ch *chunk) int {
	resp := &ch.resp
	status := resp.StatusCode()
	v := lookup.ParseStamp(resp.Header.Peek(lookup.VersionHeader), resp.Header.Peek(lookup.EpochHeader))
	if ch.err == nil && status == fasthttp.StatusMisdirectedRequest {
		c.stale() // the ring changed; the node is well
		return 0
	}
	if ch.err != nil || status >= 500 {
		if ch.err == nil && status == fasthttp.StatusServiceUnavailable && v.Version > 0 {
			c.markBehind(b, ch)
		}
		return 0
	}
	a := &ch.answer
	ch.epoch = v.Epoch
	if status != fasthttp.StatusOK || lookup.ParseBatchAnswer(resp.Body(), a) != nil || a.Version != v.Version || !walk(b, ch, false) {
		c.failed(ch.n)
		return 0
	}
	if len(a.Misdirected) > 0 {
		c.stale() // the node does not hold some slots it is routed: the ring changed
	}
	if c.floor.behind(v) {
		c.behind.Inc()
		c.markBehind(b, ch)
		return 0
	}
	settled := 0
	for _, i := range ch.pos {
		if b.pos[i].state == pending {
			settled++
		}
	}
	walk(b, ch, true)
	for _, i := range ch.pos {
		if b.pos[i].state == pending {
			settled--
		}
	}
	return settled
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
			if apply && ps.state == pending { // a late answer does not overwrite
				p, err := parsePromotion(a.Promotions[f].JSON, b.strs[i], id)
				if err != nil {
					return false
				}
				p.Version = a.Version
				ps.state, ps.stamp, ps.p = found, lookup.Stamp{Epoch: ch.epoch, Version: a.Version}, p
			}
			f++
		case m < len(a.Missing) && a.Missing[m] == id:
			if apply && ps.state == pending {
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
