package httpserver

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
)

// Metrics counts requests and their latency per route in a metrics.Set.
type Metrics struct {
	set *metrics.Set
}

// NewMetrics returns request metrics registered in set.
func NewMetrics(set *metrics.Set) *Metrics { return &Metrics{set: set} }

// durationBuckets are the upper bounds, in seconds, of the request
// duration histogram: the Prometheus defaults (5 ms to 10 s) below which
// lookups, answered in microseconds, would all fall in the first bucket,
// plus finer ones from 100 us so that histogram_quantile() can tell a p99
// of 0.3 ms from one of 3 ms (the read nodes' target is 1 ms). A request
// stops at the first bound above it, so fast ones compare fewer bounds.
var durationBuckets = []float64{
	.0001, .00025, .0005, .001, .0025,
	.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10,
}

// Instrument wraps h so that each request is counted in
// promo_http_requests_total{route,code} and timed in
// promo_http_request_duration_seconds{route}. It adds no allocation per
// request once every status code has been seen.
func (m *Metrics) Instrument(route string, h fasthttp.RequestHandler) fasthttp.RequestHandler {
	hist := m.set.GetOrCreatePrometheusHistogramExt(`promo_http_request_duration_seconds{route="`+route+`"}`, durationBuckets)
	codes := &codeCounters{set: m.set, route: route}
	return func(ctx *fasthttp.RequestCtx) {
		start := time.Now()
		h(ctx)
		hist.UpdateDuration(start)
		codes.get(ctx.Response.StatusCode()).Inc()
	}
}

type codeCounters struct {
	set   *metrics.Set
	route string
	c     [600]atomic.Pointer[metrics.Counter]
}

func (cc *codeCounters) get(code int) *metrics.Counter {
	if code < 100 || code >= len(cc.c) {
		code = 599
	}
	if c := cc.c[code].Load(); c != nil {
		return c
	}
	c := cc.set.GetOrCreateCounter(`promo_http_requests_total{route="` + cc.route + `",code="` + strconv.Itoa(code) + `"}`)
	cc.c[code].Store(c)
	return c
}

// WriteMetrics answers a Prometheus scrape with the sets followed by the
// process metrics. HELP and TYPE lines are written when the program has
// called metrics.ExposeMetadata(true), as cmd/promo does.
func WriteMetrics(ctx *fasthttp.RequestCtx, sets ...*metrics.Set) {
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	w := ctx.Response.BodyWriter()
	for _, s := range sets {
		s.WritePrometheus(w)
	}
	metrics.WriteProcessMetrics(w)
}
