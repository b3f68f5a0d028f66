package lookup

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/promotion"
)

// Routes is Route for both kinds of lookup: it also sends a POST of
// BatchPath to batch, measured under that route, ahead of the router. The
// router then never sees batches: a POST route registered there would
// require the ingest token, and a batch is a read.
func Routes(r *httpserver.Router, get, batch fasthttp.RequestHandler) fasthttp.RequestHandler {
	next := Route(r, get)
	fast := r.Metrics().Instrument(BatchPath, batch)
	return func(ctx *fasthttp.RequestCtx) {
		if ctx.IsPost() && string(ctx.Path()) == BatchPath {
			fast(ctx)
			return
		}
		next(ctx)
	}
}

// batch is the state of one batch lookup, pooled: its buffers grow to the
// largest batch seen and are reused, so that a batch allocates nothing,
// whatever its number of ids.
type batch struct {
	body        []byte // the request body, when the server streams it
	ids         []promotion.ID
	missing     []promotion.ID
	misdirected []promotion.ID
	out         []byte
	rec         promotion.Record

	// With a sortedGetter: the ids held, sorted, with their positions;
	// what was read for each; and each position's index in sorted, or -1
	// for an id of a slot this node does not hold.
	pairs  []idPos
	sorted []promotion.ID
	recs   []promotion.Record
	found  []bool
	rank   []int32
}

// sortedGetter is a View that reads many ids in ascending order faster
// than one by one (pebblestore's View: one iterator for the batch).
type sortedGetter interface {
	GetSorted(ids []promotion.ID, recs []promotion.Record, found []bool) error
}

// idPos is an id of a batch as two big-endian halves, which compare in
// two integer comparisons (bytes.Compare of the 16 bytes cost twice the
// sort), and its position in the batch.
type idPos struct {
	hi, lo uint64
	pos    int32
}

func compareIDPos(a, b idPos) int {
	if a.hi != b.hi {
		return cmp.Compare(a.hi, b.hi)
	}
	return cmp.Compare(a.lo, b.lo)
}

// readSorted reads the ids of b that this node holds through g, in id
// order, into b.recs and b.found, indexed through b.rank.
func (b *batch) readSorted(g sortedGetter, gate Gate) error {
	b.pairs = b.pairs[:0]
	b.rank = slices.Grow(b.rank[:0], len(b.ids))[:len(b.ids)]
	for i, id := range b.ids {
		if gate != nil && !gate.Holds(id) {
			b.rank[i] = -1
			continue
		}
		b.pairs = append(b.pairs, idPos{binary.BigEndian.Uint64(id[:8]), binary.BigEndian.Uint64(id[8:]), int32(i)})
	}
	slices.SortFunc(b.pairs, compareIDPos)
	b.sorted = b.sorted[:0]
	for k, p := range b.pairs {
		b.sorted = append(b.sorted, b.ids[p.pos])
		b.rank[p.pos] = int32(k)
	}
	n := len(b.sorted)
	b.recs = slices.Grow(b.recs[:0], n)[:n]
	b.found = slices.Grow(b.found[:0], n)[:n]
	return g.GetSorted(b.sorted, b.recs, b.found)
}

func (l *Handler) batch() *batch {
	if b, ok := l.batches.Get().(*batch); ok {
		return b
	}
	return new(batch)
}

// HandleBatch answers POST /promotions/batch (see ParseBatch for the
// request, ParseBatchAnswer for the answer). Every id of a batch is read
// from one version, acquired once. The promotions found come in request
// order, and so do the ids in "missing"; an id given twice is answered
// twice, in both places, so that an answer lines up with its request.
//
// On a read node (NewCluster), ids of slots the node does not hold are
// listed in "misdirected" instead of failing the batch, and a node behind
// the cluster's active version answers 503 with the version it holds, as
// single lookups do. A standalone server without any dataset answers every
// id missing, with version 0 and no version header.
//
// Batches skip the cache: a round trip to it per id costs more than the
// store's Get, and a batch must come from one version, which entries
// cached over time cannot promise without a check per id.
func (l *Handler) HandleBatch(ctx *fasthttp.RequestCtx) {
	b := l.batch()
	defer l.batches.Put(b)
	var ok bool
	if b.body, b.ids, ok = ReadBatch(ctx, b.body, b.ids[:0]); !ok {
		return
	}
	b.missing, b.misdirected = b.missing[:0], b.misdirected[:0]
	v := l.versions.Acquire()
	if v == nil {
		if l.gate != nil {
			httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, "this node serves no dataset version yet")
			return
		}
		b.out = append(b.out[:0], `{"version":0,"promotions":[],"missing":`...)
		b.out = appendIDs(b.out, b.ids)
		b.out = append(b.out, '}')
		ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
		ctx.SetBody(b.out)
		return
	}
	if l.gate != nil {
		if min := l.gate.Min(); StampOf(v).Less(min) {
			setStampHeaders(&ctx.Response.Header, v)
			v.Release()
			catchingUp(ctx, min)
			return
		}
	}
	out := append(b.out[:0], `{"version":`...)
	out = append(out, v.VersionText()...)
	out = append(out, `,"promotions":[`...)
	comma := false
	sg, sorted := v.(sortedGetter)
	var serr error
	if sorted {
		serr = b.readSorted(sg, l.gate)
	}
	for i, id := range b.ids {
		var found bool
		var err error
		rec := &b.rec
		switch {
		case sorted && b.rank[i] < 0, !sorted && l.gate != nil && !l.gate.Holds(id):
			b.misdirected = append(b.misdirected, id)
			continue
		case sorted:
			found, rec, err = b.found[b.rank[i]], &b.recs[b.rank[i]], serr
		default:
			found, err = v.Get(id, &b.rec)
		}
		if err != nil {
			setStampHeaders(&ctx.Response.Header, v)
			v.Release()
			b.out = out
			httpserver.Error(ctx, fasthttp.StatusInternalServerError, "cannot read promotion: "+err.Error(), "id", id.String())
			return
		}
		if !found {
			b.missing = append(b.missing, id)
			continue
		}
		if comma {
			out = append(out, ',')
		}
		comma = true
		out = promotion.AppendJSON(out, rec)
	}
	setStampHeaders(&ctx.Response.Header, v)
	v.Release()
	out = append(out, `],"missing":`...)
	out = appendIDs(out, b.missing)
	if len(b.misdirected) > 0 {
		out = append(out, `,"misdirected":`...)
		out = appendIDs(out, b.misdirected)
	}
	out = append(out, '}')
	b.out = out
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(out)
}

// ReadBatch reads and parses the batch request of ctx, appending its ids
// to ids. When the server streams request bodies, the body is read into
// buf, which is returned for reuse either way. A malformed request is
// answered here, with the same bytes by every server (400, or 413 for too
// many ids or too large a body), and ReadBatch reports false.
func ReadBatch(ctx *fasthttp.RequestCtx, buf []byte, ids []promotion.ID) ([]byte, []promotion.ID, bool) {
	body, buf, err := readBody(ctx, buf[:0])
	if err == nil {
		ids, err = ParseBatch(body, ids)
	}
	if err == nil {
		return buf, ids, true
	}
	switch {
	case err.ID != nil:
		httpserver.Error(ctx, err.Status, err.Reason, "id", err.ID, "index", err.Index)
	case err.Status == fasthttp.StatusRequestEntityTooLarge:
		httpserver.Error(ctx, err.Status, err.Reason, "max_ids", MaxBatch)
	default:
		httpserver.Error(ctx, err.Status, err.Reason)
	}
	if err == errBodyTooLarge && ctx.Request.IsBodyStream() {
		// The client may still be sending: closing with its data unread
		// would reset the connection, and the reset can destroy the answer
		// before the client reads it.
		httpserver.CloseLingering(ctx)
	}
	return buf, ids, false
}

var errBodyTooLarge = &BatchError{Status: fasthttp.StatusRequestEntityTooLarge, Index: -1,
	Reason: fmt.Sprintf("request body too large: a batch request takes at most %d bytes (%d ids)", MaxBatchBytes, MaxBatch)}

// readBody returns the request body of ctx, at most MaxBatchBytes. A
// streamed body is read into buf, returned grown.
func readBody(ctx *fasthttp.RequestCtx, buf []byte) (body, grown []byte, _ *BatchError) {
	// What is left unread of a streamed body is drained by the server
	// (up to 256 KiB), or by ReadBatch's CloseLingering when too large.
	if ctx.Request.Header.ContentLength() > MaxBatchBytes {
		return nil, buf, errBodyTooLarge
	}
	if !ctx.Request.IsBodyStream() {
		if body := ctx.PostBody(); len(body) <= MaxBatchBytes {
			return body, buf, nil
		}
		return nil, buf, errBodyTooLarge
	}
	r := ctx.RequestBodyStream()
	for {
		if len(buf) > MaxBatchBytes {
			return nil, buf, errBodyTooLarge
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, max(4096, len(buf)))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF && len(buf) <= MaxBatchBytes {
			return buf, buf, nil
		}
		if err != nil && err != io.EOF {
			return nil, buf, &BatchError{Status: fasthttp.StatusBadRequest, Reason: "cannot read request body: " + err.Error(), Index: -1}
		}
	}
}
