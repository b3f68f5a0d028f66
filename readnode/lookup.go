package readnode

import (
	"bytes"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/api"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/store"
)

// Versions is the store lookups read from.
type Versions interface {
	// Acquire pins the current version, or returns nil when there is
	// none; the caller releases it.
	Acquire() *store.View
}

var _ Versions = (*store.Store)(nil)

// PathPrefix is the path of lookups, before the ID.
const PathPrefix = "/promotions/"

var (
	headerVersion   = []byte("X-Dataset-Version")
	contentTypeJSON = []byte("application/json")
)

// Lookup answers promotion lookups.
type Lookup struct {
	versions Versions
}

// NewLookup returns a Lookup that reads from v.
func NewLookup(v Versions) *Lookup { return &Lookup{versions: v} }

// Handle serves GET /promotions/{id} behind fasthttp/router, which puts the
// ID in the user value "id".
func (l *Lookup) Handle(ctx *fasthttp.RequestCtx) {
	id, _ := ctx.UserValue("id").(string)
	l.Serve(ctx, []byte(id))
}

// HandlePath serves a request whose path is PathPrefix followed by the ID.
// It does not allocate, unlike routing, which boxes the ID.
func (l *Lookup) HandlePath(ctx *fasthttp.RequestCtx) {
	l.Serve(ctx, bytes.TrimPrefix(ctx.Path(), []byte(PathPrefix)))
}

// Serve answers the lookup of rawID, the ID as it appears in the path.
func (l *Lookup) Serve(ctx *fasthttp.RequestCtx, rawID []byte) {
	id, err := promotion.ParseID(rawID)
	if err != nil {
		api.Error(ctx, fasthttp.StatusBadRequest, "malformed promotion id: want a 36-character UUID such as d018ef0b-dbd9-48f1-ac1a-eb4d90e57118", "id", string(rawID))
		return
	}
	v := l.versions.Acquire()
	if v == nil {
		api.Error(ctx, fasthttp.StatusNotFound, "promotion not found: no dataset has been imported yet", "id", id.String())
		return
	}
	var r promotion.Record
	found, err := v.Get(id, &r)
	ctx.Response.Header.SetCanonical(headerVersion, v.VersionText())
	v.Release()
	switch {
	case err != nil:
		api.Error(ctx, fasthttp.StatusInternalServerError, "cannot read promotion: "+err.Error(), "id", id.String())
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
	}
}
