package readnode

import (
	"bytes"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/pebblestore"
	"github.com/promotion-service/promo/promotion"
)

// Versions is the store lookups read from.
type Versions interface {
	// Acquire pins the current version, or returns nil when there is
	// none; the caller releases it.
	Acquire() *pebblestore.View
}

var _ Versions = (*pebblestore.Store)(nil)

// PathPrefix is the path of lookups, before the ID.
const PathPrefix = "/promotions/"

var (
	headerVersion   = []byte("X-Dataset-Version")
	contentTypeJSON = []byte("application/json")
)

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
	// MinVersion is the lowest version that may answer: the one the
	// cluster activated. A node still on an older one answers 503, so that
	// a client never sees a key go back to an older version.
	MinVersion() uint64
}

// Lookup answers promotion lookups.
type Lookup struct {
	versions Versions
	gate     Gate
	cache    Cache
}

// NewLookup returns a Lookup that reads from v.
func NewLookup(v Versions) *Lookup { return &Lookup{versions: v} }

// NewClusterLookup returns a Lookup for a read node: gate decides which ids
// it answers, and cache, if not nil, is read first.
func NewClusterLookup(v Versions, gate Gate, cache Cache) *Lookup {
	return &Lookup{versions: v, gate: gate, cache: cache}
}

// Handle serves GET /promotions/{id} behind fasthttp/router, which puts the
// ID in the user value "id".
func (l *Lookup) Handle(ctx *fasthttp.RequestCtx) {
	id, _ := ctx.UserValue("id").(string)
	l.Serve(ctx, []byte(id))
}

// IsLookup reports whether ctx is a GET or HEAD of PathPrefix followed by
// an ID (and no further path), which HandlePath serves without routing.
func IsLookup(ctx *fasthttp.RequestCtx) bool {
	p := ctx.Path()
	return (ctx.IsGet() || ctx.IsHead()) && bytes.HasPrefix(p, pathPrefix) && bytes.IndexByte(p[len(pathPrefix):], '/') < 0
}

var pathPrefix = []byte(PathPrefix)

// HandlePath serves a request whose path is PathPrefix followed by the ID.
// It does not allocate, unlike routing, which boxes the ID.
func (l *Lookup) HandlePath(ctx *fasthttp.RequestCtx) {
	l.Serve(ctx, bytes.TrimPrefix(ctx.Path(), pathPrefix))
}

// Serve answers the lookup of rawID, the ID as it appears in the path.
func (l *Lookup) Serve(ctx *fasthttp.RequestCtx, rawID []byte) {
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
		if min := l.gate.MinVersion(); v.Version() < min {
			v.Release()
			httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, "this node is catching up with the active dataset version", "version", min)
			return
		}
	}
	if l.cache != nil {
		// Declared here: handing a buffer to an interface moves it to the
		// heap, which only the cache path should pay for.
		var cbuf [160]byte
		if body, ok := l.cache.Get(v.Version(), id, cbuf[:0]); ok {
			ctx.Response.Header.SetCanonical(headerVersion, v.VersionText())
			v.Release()
			ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
			ctx.SetBody(body)
			return
		}
	}
	var r promotion.Record
	found, err := v.Get(id, &r)
	version := v.Version()
	ctx.Response.Header.SetCanonical(headerVersion, v.VersionText())
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
		ctx.SetBody(promotion.AppendJSON(buf[:0], &r))
		if l.cache != nil {
			l.cache.Set(version, id, promotion.AppendJSON(make([]byte, 0, 160), &r))
		}
	}
}

// BadID answers 400 to the lookup of a malformed id; the proxy answers
// with the same bytes.
func BadID(ctx *fasthttp.RequestCtx, raw []byte) {
	httpserver.Error(ctx, fasthttp.StatusBadRequest, "malformed promotion id: want a 36-character UUID such as d018ef0b-dbd9-48f1-ac1a-eb4d90e57118", "id", string(raw))
}
