package lookup_test

import (
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/lookup"
)

func TestRoute(t *testing.T) {
	r := httpserver.NewRouter(httpserver.NewMetrics(metrics.NewSet()), "")
	r.Read("/datasets", func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("datasets") })
	h := lookup.Route(r, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("lookup " + string(ctx.Path())) })
	f := func(method, path string, status int, body string) {
		t.Helper()
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(method)
		ctx.Request.SetRequestURI(path)
		h(&ctx)
		if got := ctx.Response.StatusCode(); got != status {
			t.Fatalf("%s %s: status %d, want %d (%s)", method, path, got, status, ctx.Response.Body())
		}
		if body != "" && string(ctx.Response.Body()) != body {
			t.Fatalf("%s %s: body %q, want %q", method, path, ctx.Response.Body(), body)
		}
	}
	f("GET", "/promotions/abc", 200, "lookup /promotions/abc")
	f("HEAD", "/promotions/abc", 200, "")
	f("GET", "/promotions/", 200, "lookup /promotions/")
	f("GET", "/datasets", 200, "datasets")
	f("POST", "/promotions/abc", 405, "")
	f("GET", "/promotions/abc/", 404, `{"error":"no such endpoint","path":"/promotions/abc/"}`+"\n")
	f("GET", "/promotions/abc/def", 404, "")
}

func TestRouteDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; make test also runs this package without it")
	}
	r := httpserver.NewRouter(httpserver.NewMetrics(metrics.NewSet()), "")
	h := lookup.Route(r, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(fasthttp.MethodGet)
	ctx.Request.SetRequestURI("/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	h(&ctx)
	if n := testing.AllocsPerRun(1000, func() {
		ctx.Response.Reset()
		h(&ctx)
	}); n != 0 {
		t.Errorf("%v allocations per lookup, want 0", n)
	}
}
