package lookup

import (
	"bytes"
	"sync"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/promotion"
)

// PathPrefix is the path of lookups, before the ID.
const PathPrefix = "/promotions/"

// VersionHeader names the response header that carries the dataset
// version an answer was read from, in decimal.
const VersionHeader = "X-Dataset-Version"

var (
	pathPrefix      = []byte(PathPrefix)
	headerVersion   = []byte(VersionHeader)
	contentTypeJSON = []byte("application/json")
)

// Versions is the store lookups read from.
type Versions interface {
	// Acquire pins the current version, or returns nil when there is
	// none; the caller releases it.
	Acquire() View
}

// View is one pinned dataset version.
type View interface {
	// Version returns the dataset version.
	Version() uint64
	// VersionText returns the version in decimal, in a slice the caller
	// must not modify, valid at least until Release.
	VersionText() []byte
	// Get fills r with the record of id and reports whether the version
	// holds it. It copies what it reads into r, keeps no reference to r,
	// and should not allocate: it runs on every lookup.
	Get(id promotion.ID, r *promotion.Record) (bool, error)
	// Release unpins the version; the View must not be used afterwards.
	Release()
}

// VersionsOf adapts acquire, a store method that returns a pointer to the
// store's own view type or nil when no version serves (such as
// pebblestore's Store.Acquire), to Versions. A nil pointer becomes a nil
// View: put in the interface as it is, it would not compare equal to nil.
func VersionsOf[P interface {
	comparable
	View
}](acquire func() P) Versions {
	return acquireFunc[P](acquire)
}

type acquireFunc[P interface {
	comparable
	View
}] func() P

func (f acquireFunc[P]) Acquire() View {
	var none P
	if v := f(); v != none {
		return v
	}
	return nil
}

// Cache is a read-through cache of lookup answers in front of the store.
// Entries are keyed by dataset version, so a new version never serves a
// value cached for an older one.
type Cache interface {
	// Get appends the cached body of id in version to dst and reports
	// whether there was one. It must give up quickly when the cache is
	// slow or down, and report a miss.
	Get(version uint64, id promotion.ID, dst []byte) ([]byte, bool)
	// Set stores body, which the caller hands over, without blocking.
	Set(version uint64, id promotion.ID, body []byte)
}

// Gate decides, in a cluster, whether this node may answer for an id.
type Gate interface {
	// Holds reports whether this node holds the slot of id.
	Holds(id promotion.ID) bool
	// Misdirected answers a lookup of an id this node does not hold
	// (421, naming the owners).
	Misdirected(ctx *fasthttp.RequestCtx, id promotion.ID)
	// Min is the oldest Stamp that may answer: the cluster's latest
	// activation. A node still on an older one answers 503 with the
	// stamp it holds, so that a client never sees a key go back to an
	// older version, nor miss a rollback.
	Min() Stamp
}

// Handler answers promotion lookups.
type Handler struct {
	versions Versions
	gate     Gate
	cache    Cache
	// records holds the Records lookups decode into: View.Get is an
	// interface call, so a Record declared in Serve would move to the
	// heap, one allocation per request.
	records sync.Pool
	// batches holds the state of batch lookups (batch.go).
	batches sync.Pool
}

// New returns a Handler that reads from v.
func New(v Versions) *Handler { return &Handler{versions: v} }

// NewCluster returns a Handler for a read node: gate decides which ids it
// answers, and cache, if not nil, is read first.
func NewCluster(v Versions, gate Gate, cache Cache) *Handler {
	return &Handler{versions: v, gate: gate, cache: cache}
}

// Route registers h, which serves a request whose path is PathPrefix
// followed by the ID, as the GET and HEAD route PathPrefix+"{id}" of r. It
// returns r's handler preceded by a fast path that sends those lookups to
// h, measured under the same route, without routing: fasthttp/router boxes
// the path parameter, an allocation per request. The route stays
// registered so that the router still answers other methods with 405.
func Route(r *httpserver.Router, h fasthttp.RequestHandler) fasthttp.RequestHandler {
	const route = PathPrefix + "{id}"
	r.Read(route, h)
	routed := r.Handler()
	fast := r.Metrics().Instrument(route, h)
	return func(ctx *fasthttp.RequestCtx) {
		if isLookup(ctx) {
			fast(ctx)
			return
		}
		routed(ctx)
	}
}

// isLookup reports whether ctx is a GET or HEAD of PathPrefix followed by
// an ID (and no further path), which is exactly what the route
// PathPrefix+"{id}" matches.
func isLookup(ctx *fasthttp.RequestCtx) bool {
	p := ctx.Path()
	return (ctx.IsGet() || ctx.IsHead()) && bytes.HasPrefix(p, pathPrefix) && bytes.IndexByte(p[len(pathPrefix):], '/') < 0
}

// HandlePath serves a request whose path is PathPrefix followed by the ID.
func (l *Handler) HandlePath(ctx *fasthttp.RequestCtx) {
	l.serve(ctx, bytes.TrimPrefix(ctx.Path(), pathPrefix))
}

// serve answers the lookup of rawID, the ID as it appears in the path.
func (l *Handler) serve(ctx *fasthttp.RequestCtx, rawID []byte) {
	id, err := promotion.ParseID(rawID)
	if err != nil {
		BadID(ctx, rawID)
		return
	}
	if l.gate != nil && !l.gate.Holds(id) {
		l.gate.Misdirected(ctx, id)
		return
	}
	v := l.versions.Acquire()
	if v == nil {
		if l.gate != nil {
			httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, "this node serves no dataset version yet", "id", id.String())
			return
		}
		httpserver.Error(ctx, fasthttp.StatusNotFound, "promotion not found: no dataset has been imported yet", "id", id.String())
		return
	}
	if l.gate != nil {
		if min := l.gate.Min(); StampOf(v).Less(min) {
			// The version it holds tells the proxy that this node is
			// behind, worth waiting for, unlike one that fails.
			setStampHeaders(&ctx.Response.Header, v)
			v.Release()
			catchingUp(ctx, min)
			return
		}
	}
	if l.cache != nil {
		// Declared here: handing a buffer to an interface moves it to the
		// heap, which only the cache path should pay for.
		var cbuf [160]byte
		if body, ok := l.cache.Get(v.Version(), id, cbuf[:0]); ok {
			setStampHeaders(&ctx.Response.Header, v)
			v.Release()
			ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
			ctx.SetBody(body)
			return
		}
	}
	r := l.record()
	defer l.records.Put(r)
	found, err := v.Get(id, r)
	version := v.Version()
	setStampHeaders(&ctx.Response.Header, v)
	v.Release()
	switch {
	case err != nil:
		httpserver.Error(ctx, fasthttp.StatusInternalServerError, "cannot read promotion: "+err.Error(), "id", id.String())
	case !found:
		// Unknown IDs can be as frequent as known ones: no allocation here
		// either.
		var buf [96]byte
		body := append(buf[:0], `{"error":"promotion not found","id":"`...)
		body = id.AppendText(body)
		body = append(body, "\"}\n"...)
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
		ctx.SetBody(body)
	default:
		var buf [160]byte
		ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
		ctx.SetBody(promotion.AppendJSON(buf[:0], r))
		if l.cache != nil {
			l.cache.Set(version, id, promotion.AppendJSON(make([]byte, 0, 160), r))
		}
	}
}

func (l *Handler) record() *promotion.Record {
	if r, ok := l.records.Get().(*promotion.Record); ok {
		return r
	}
	return new(promotion.Record)
}

// BadID answers 400 to the lookup of a malformed id; the proxy answers
// with the same bytes.
func BadID(ctx *fasthttp.RequestCtx, raw []byte) {
	httpserver.Error(ctx, fasthttp.StatusBadRequest, "malformed promotion id: want a 36-character UUID such as d018ef0b-dbd9-48f1-ac1a-eb4d90e57118", "id", string(raw))
}
