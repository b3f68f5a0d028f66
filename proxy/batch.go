package proxy

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// A batch through the proxy (POST /promotions/batch) is split by owner:
// each id goes to a replica of its slot, chosen as single lookups choose
// (healthy replicas first, in ring order, so the primary when it is up),
// and the ids bound for one node travel together, every node asked at once.
// The answers are merged in request order.
//
// Failover is per id, so per owner group: the ids of a node that fails
// (error, timeout, 5xx), that is behind the newest version the proxy has
// seen, or that calls them misdirected, go to the next replica of their
// slots, again grouped by node, within the same round. Rounds are paced as
// for single lookups (retry): a round that leaves ids unanswered because a
// replica was behind waits for it up to CatchUpWait, any other gets
// Retries more.
//
// One answer, one version: when owners answer from different versions (a
// switch under way), the ids answered from the older one are asked again
// until every id comes from the newest version answered (never older than
// the newest the proxy has seen); if the replicas of some id cannot serve
// it within CatchUpWait, the batch is answered 503. Node answers list found
// ids, missing ids and misdirected ids each in request order, so they are
// matched to the request by walking the lists, with no map.

// Position states.
const (
	pending uint8 = iota
	found
	missing
)

// position is the state of one id of a batch.
type position struct {
	asked   uint64 // replicas asked in this round, by index in the slot's owners
	state   uint8
	behind  bool         // a replica was behind on its version in this round
	version lookup.Stamp // of the answer, once found or missing
	off     int          // found: the promotion in batchState.objs
	end     int
}

// group is the ids of a batch sent to one node in one attempt.
type group struct {
	b    *backend
	pos  []int32 // positions, in request order
	ids  []promotion.ID
	body []byte
	req  fasthttp.Request
	resp fasthttp.Response
	err  error
}

// batchState is the state of one batch, pooled with its buffers.
type batchState struct {
	rt     *routing // the routing the groups were built for
	body   []byte
	ids    []promotion.ID
	pos    []position
	groups []group // indexed like st.rt.backends
	objs   []byte  // the promotions found, copied out of the nodes' answers
	answer lookup.BatchAnswer
	out    []byte
}

func (rt *routing) batchState() *batchState {
	if st, ok := rt.batches.Get().(*batchState); ok {
		return st
	}
	st := &batchState{rt: rt, groups: make([]group, len(rt.backends))}
	for i, b := range st.rt.backends {
		g := &st.groups[i]
		g.b = b
		g.req.Header.SetMethod(fasthttp.MethodPost)
		g.req.SetRequestURI(lookup.BatchPath)
		g.req.Header.SetHost(b.client.Addr)
		g.req.Header.SetContentType("application/json")
	}
	return st
}

// batch routes one POST /promotions/batch.
func (p *Proxy) batch(ctx *fasthttp.RequestCtx) {
	rt := p.rt.Load()
	st := rt.batchState()
	defer rt.batches.Put(st)
	var ok bool
	if st.body, st.ids, ok = lookup.ReadBatch(ctx, st.body, st.ids[:0]); !ok {
		return
	}
	st.pos = st.pos[:0]
	for range st.ids {
		st.pos = append(st.pos, position{})
	}
	st.objs = st.objs[:0]
	attempts := 0
	r := retry{cfg: &p.cfg}
	for {
		o := p.batchRound(st, &attempts)
		if o == answered {
			p.answerBatch(ctx, st)
			return
		}
		pause := r.next(o)
		if pause == 0 {
			p.exhausted.Inc()
			p.unanswered(ctx, st, o)
			return
		}
		time.Sleep(pause)
	}
}

// batchRound asks the replicas of every id not answered yet, each at most
// once, in attempts over the nodes in parallel. It reports answered when
// every id has its answer from one version.
func (p *Proxy) batchRound(st *batchState, attempts *int) outcome {
	for i := range st.pos {
		st.pos[i].asked, st.pos[i].behind = 0, false
	}
	for {
		asking := 0
		for i := range st.pos {
			ps := &st.pos[i]
			if ps.state != pending {
				continue
			}
			owners := st.rt.ring.OwnersOf(st.ids[i])
			j := st.rt.nextReplica(owners, ps.asked)
			if j < 0 {
				continue
			}
			ps.asked |= 1 << j
			g := &st.groups[owners[j]]
			if len(g.pos) == 0 {
				asking++
			}
			g.pos = append(g.pos, int32(i))
		}
		if asking == 0 {
			break
		}
		if *attempts > 0 {
			p.failovers.Add(asking)
		}
		*attempts++
		p.send(st, asking)
		for i := range st.groups {
			if g := &st.groups[i]; len(g.pos) > 0 {
				p.take(st, g)
				g.pos = g.pos[:0]
			}
		}
		p.agree(st)
	}
	result := answered
	for i := range st.pos {
		if ps := &st.pos[i]; ps.state == pending {
			if ps.behind {
				return behind
			}
			result = failed
		}
	}
	return result
}

// nextReplica returns the index in owners of the replica to ask next, as
// round does: the first healthy one not asked yet, or else the first one
// not asked yet in case the health checks are behind; -1 when every one
// has been asked.
func (rt *routing) nextReplica(owners []uint16, asked uint64) int {
	for pass := range 2 {
		for j, o := range owners {
			if asked&(1<<j) == 0 && rt.backends[o].up.Load() == (pass == 0) {
				return j
			}
		}
	}
	return -1
}

// send asks the nodes of the groups that have ids, all at once.
func (p *Proxy) send(st *batchState, asking int) {
	var wg sync.WaitGroup
	for i := range st.groups {
		g := &st.groups[i]
		if len(g.pos) == 0 {
			continue
		}
		g.ids = g.ids[:0]
		for _, k := range g.pos {
			g.ids = append(g.ids, st.ids[k])
		}
		g.body = lookup.AppendBatchRequest(g.body[:0], g.ids)
		g.req.SetBodyRaw(g.body)
		if asking--; asking == 0 {
			p.ask(g) // the last one on this goroutine
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.ask(g)
		}()
	}
	wg.Wait()
}

func (p *Proxy) ask(g *group) {
	g.resp.Reset()
	g.err = g.b.client.DoTimeout(&g.req, &g.resp, p.cfg.TryTimeout)
}

// take records the answer of g's node. Ids it answers from a version at
// least as new as any the proxy has seen are settled; the others stay
// pending, for the next replica.
func (p *Proxy) take(st *batchState, g *group) {
	b, resp := g.b, &g.resp
	v := lookup.ParseStamp(resp.Header.Peek(lookup.VersionHeader), resp.Header.Peek(lookup.EpochHeader))
	status := resp.StatusCode()
	if g.err == nil && status == fasthttp.StatusMisdirectedRequest {
		p.refreshSoon() // the node follows a newer ring
		return
	}
	if g.err != nil || status >= 500 {
		p.failed(b)
		if g.err == nil && status == fasthttp.StatusServiceUnavailable && v.Version > 0 {
			p.markBehind(st, g) // catching up with the active version
		}
		return
	}
	if status != fasthttp.StatusOK {
		// A node that does not serve batches (an older build during a
		// rollout) is not down: its replicas may serve them.
		b.errors.Inc()
		return
	}
	a := &st.answer
	if err := lookup.ParseBatchAnswer(resp.Body(), a); err != nil || a.Version != v.Version || !p.walk(st, g, false, v) {
		p.failed(b)
		return
	}
	b.fails.Store(0)
	if !b.up.Load() {
		b.up.Store(true) // it answers: the health check was behind
	}
	if p.seen.Behind(v) {
		p.behind.Inc()
		p.markBehind(st, g)
		return
	}
	p.seen.Raise(v)
	b.answers.Inc()
	p.walk(st, g, true, v)
}

func (p *Proxy) markBehind(st *batchState, g *group) {
	for _, i := range g.pos {
		st.pos[i].behind = true
	}
}

// walk matches the answer in st.answer to the ids of g: each list of the
// answer holds its ids in request order. It reports whether the answer
// accounts for every id of g and nothing else, and when apply is set,
// settles the ids found or missing as answered from stamp.
func (p *Proxy) walk(st *batchState, g *group, apply bool, stamp lookup.Stamp) bool {
	a := &st.answer
	f, m, d := 0, 0, 0
	for _, i := range g.pos {
		id, ps := st.ids[i], &st.pos[i]
		switch {
		case f < len(a.Promotions) && a.Promotions[f].ID == id:
			if apply {
				ps.state, ps.version, ps.off = found, stamp, len(st.objs)
				st.objs = append(st.objs, a.Promotions[f].JSON...)
				ps.end = len(st.objs)
			}
			f++
		case m < len(a.Missing) && a.Missing[m] == id:
			if apply {
				ps.state, ps.version = missing, stamp
			}
			m++
		case d < len(a.Misdirected) && a.Misdirected[d] == id:
			d++ // stays pending: the next replica is asked
			if apply {
				p.refreshSoon() // the node follows a newer ring
			}
		default:
			return false
		}
	}
	return f == len(a.Promotions) && m == len(a.Missing) && d == len(a.Misdirected)
}

// agree sends back to pending the ids answered from a version older than
// the newest answered or seen, so that the batch is answered from one
// version and never from one older than the proxy has answered.
func (p *Proxy) agree(st *batchState) {
	newest := p.seen.Load()
	for i := range st.pos {
		if ps := &st.pos[i]; ps.state != pending && newest.Less(ps.version) {
			newest = ps.version
		}
	}
	for i := range st.pos {
		if ps := &st.pos[i]; ps.state != pending && ps.version.Less(newest) {
			ps.state, ps.behind = pending, true
		}
	}
}

// answerBatch answers the merged batch.
func (p *Proxy) answerBatch(ctx *fasthttp.RequestCtx, st *batchState) {
	v := st.pos[0].version // agree left one version
	out := append(st.out[:0], `{"version":`...)
	vstart := len(out)
	out = strconv.AppendUint(out, v.Version, 10)
	vend := len(out)
	out = append(out, `,"promotions":[`...)
	comma := false
	for i := range st.pos {
		if ps := &st.pos[i]; ps.state == found {
			if comma {
				out = append(out, ',')
			}
			comma = true
			out = append(out, st.objs[ps.off:ps.end]...)
		}
	}
	out = append(out, `],"missing":[`...)
	comma = false
	for i := range st.pos {
		if st.pos[i].state == missing {
			if comma {
				out = append(out, ',')
			}
			comma = true
			out = append(out, '"')
			out = st.ids[i].AppendText(out)
			out = append(out, '"')
		}
	}
	out = append(out, "]}"...)
	st.out = out
	ctx.Response.Header.SetBytesV(lookup.VersionHeader, out[vstart:vend])
	if v.Epoch > 0 {
		var buf [20]byte
		ctx.Response.Header.SetBytesV(lookup.EpochHeader, strconv.AppendUint(buf[:0], v.Epoch, 10))
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetBody(out)
}

// unanswered answers 503 for a batch some ids of which no replica
// answered, naming the first of them, its slot and its replicas.
func (p *Proxy) unanswered(ctx *fasthttp.RequestCtx, st *batchState, o outcome) {
	n, first := 0, -1
	for i := range st.pos {
		if st.pos[i].state == pending {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	msg := "no replica answered for some ids of the batch"
	if o == behind {
		msg = "the replicas of some ids of the batch did not reach the newest dataset version within the catch-up wait"
	}
	id := st.ids[first]
	var names []string
	for _, o := range st.rt.ring.OwnersOf(id) {
		names = append(names, st.rt.backends[o].name)
	}
	httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, msg, "unanswered", n, "id", id.String(),
		"slot", ring.Slot(id, p.cfg.Slots), "replicas", strings.Join(names, ","), "version", p.seen.Load().Version)
}
