package httpserver

import (
	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
)

// Router registers the routes of a service: JSON 404 (no redirects) and 405 answers,
// HEAD for every GET, per-route metrics, and the bearer token on writes.
type Router struct {
	r     *router.Router
	m     *Metrics
	token string
}

// NewRouter returns a router that records into m and requires token (when
// not empty) on the routes registered with Write.
func NewRouter(m *Metrics, token string) *Router {
	r := router.New()
	// The router would redirect a near miss (a trailing slash, another
	// letter case) to a URL built from the client's Host header, with a
	// plain-text body: an unknown path is a JSON 404 like any other.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.NotFound = func(ctx *fasthttp.RequestCtx) {
		Error(ctx, fasthttp.StatusNotFound, "no such endpoint", "path", string(ctx.Path()))
	}
	r.MethodNotAllowed = func(ctx *fasthttp.RequestCtx) {
		ctx.SetConnectionClose()
		Error(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed", "method", string(ctx.Method()), "path", string(ctx.Path()))
	}
	return &Router{r: r, m: m, token: token}
}

// Metrics returns the router's request metrics.
func (r *Router) Metrics() *Metrics { return r.m }

// Read registers a GET (and HEAD) route, measured.
func (r *Router) Read(path string, h fasthttp.RequestHandler) {
	h = r.m.Instrument(path, h)
	r.r.GET(path, h)
	r.r.HEAD(path, h)
}

// Write registers a POST route, measured and protected by the token.
func (r *Router) Write(path string, h fasthttp.RequestHandler) {
	r.r.POST(path, r.m.Instrument(path, RequireToken(r.token, h)))
}

// Delete registers a DELETE route, measured and protected by the token.
func (r *Router) Delete(path string, h fasthttp.RequestHandler) {
	r.r.DELETE(path, r.m.Instrument(path, RequireToken(r.token, h)))
}

// Probe registers an unmeasured GET (and HEAD) route, for health checks
// and metrics scrapes.
func (r *Router) Probe(path string, h fasthttp.RequestHandler) {
	r.r.GET(path, h)
	r.r.HEAD(path, h)
}

// Handler returns the request handler of the routes.
func (r *Router) Handler() fasthttp.RequestHandler { return r.r.Handler }
