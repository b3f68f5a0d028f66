package httpserver

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
)

func TestAppendStringIsValidJSON(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		got := string(AppendString(nil, in))
		if got != want {
			t.Fatalf("AppendString(%q) = %s, want %s", in, got, want)
		}
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Fatalf("AppendString(%q) = %s is not JSON: %v", in, got, err)
		}
	}
	f("plain", `"plain"`)
	f(`q"b\`, `"q\"b\\"`)
	f("a\nb\r\tc", `"a\nb\r\tc"`)
	f("\x00\x1f\x7f", `"\u0000\u001f\u007f"`)
	f("héllo ✓", `"héllo ✓"`)
	f("bad\xffutf8", `"bad\ufffdutf8"`)
}

func TestErrorBody(t *testing.T) {
	got := string(AppendError(nil, "boom", "line", 3, "field", "id", "raw", []byte("x\"y")))
	var m map[string]any
	if err := json.Unmarshal([]byte(got), &m); err != nil {
		t.Fatalf("%s: %v", got, err)
	}
	if m["error"] != "boom" || m["line"] != float64(3) || m["field"] != "id" || m["raw"] != `x"y` {
		t.Fatalf("error body %s", got)
	}
}

func TestRequireToken(t *testing.T) {
	called := 0
	h := RequireToken("s3cret", func(ctx *fasthttp.RequestCtx) { called++ })
	f := func(header string, wantStatus int) {
		t.Helper()
		var ctx fasthttp.RequestCtx
		if header != "" {
			ctx.Request.Header.Set("Authorization", header)
		}
		before := called
		h(&ctx)
		ran := called > before
		if wantStatus == 0 {
			if !ran {
				t.Fatalf("%q: handler not called (%d %s)", header, ctx.Response.StatusCode(), ctx.Response.Body())
			}
			return
		}
		if ran || ctx.Response.StatusCode() != wantStatus {
			t.Fatalf("%q: ran=%v status %d, want %d", header, ran, ctx.Response.StatusCode(), wantStatus)
		}
	}
	f("", 401)
	f("Bearer wrong", 401)
	f("Basic czNjcmV0", 401)
	f("Bearer s3cret", 0)
	f("bearer s3cret", 0)
	f("Bearer s3cret2", 401)

	open := RequireToken("", func(ctx *fasthttp.RequestCtx) { called++ })
	var ctx fasthttp.RequestCtx
	open(&ctx)
	if called != 3 {
		t.Fatal("an empty token must let requests through")
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true,
		"localhost:8080": true,
		"[::1]:8080":     true,
		"127.0.0.2:80":   true,
		":8080":          false,
		"0.0.0.0:8080":   false,
		"[::]:8080":      false,
		"10.0.0.1:8080":  false,
		"example.com:80": false,
		"garbage":        false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// A path with a trailing slash, or in another case, is an unknown endpoint
// (JSON 404), not the router's redirect to a URL built from the client's
// Host header with a plain-text body.
func TestRouterAnswersNearMissesWithJSON404(t *testing.T) {
	r := NewRouter(NewMetrics(metrics.NewSet()), "")
	r.Read("/datasets", func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	r.Read("/promotions/{id}", func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	h := r.Handler()
	for _, path := range []string{"/datasets/", "/DATASETS", "/promotions/x/", "//datasets"} {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("GET")
		ctx.Request.Header.SetHost("evil.example")
		ctx.Request.SetRequestURI(path)
		h(&ctx)
		var body map[string]any
		if err := json.Unmarshal(ctx.Response.Body(), &body); err != nil || ctx.Response.StatusCode() != fasthttp.StatusNotFound {
			t.Errorf("GET %s: %d %q (%v), want a JSON 404", path, ctx.Response.StatusCode(), ctx.Response.Body(), err)
		}
		if loc := ctx.Response.Header.Peek("Location"); len(loc) > 0 {
			t.Errorf("GET %s: Location %s", path, loc)
		}
	}
}

func TestHealthz(t *testing.T) {
	f := func(h fasthttp.RequestHandler, want string) {
		t.Helper()
		var ctx fasthttp.RequestCtx
		h(&ctx)
		if ctx.Response.StatusCode() != 200 || string(ctx.Response.Header.ContentType()) != "application/json" || string(ctx.Response.Body()) != want {
			t.Fatalf("healthz: %d %s %q, want 200 application/json %q", ctx.Response.StatusCode(), ctx.Response.Header.ContentType(), ctx.Response.Body(), want)
		}
	}
	f(Healthz("v1"), `{"status":"ok","version":"v1"}`+"\n")
	f(Healthz("dev", "node", "n1"), `{"node":"n1","status":"ok","version":"dev"}`+"\n")
}

// TestDurationHistogramResolvesMilliseconds checks that the request
// duration histogram has bounds below 5 ms, where the read nodes' 1 ms p99
// target lies, and that a request slower than 1 ms is counted above it.
func TestDurationHistogramResolvesMilliseconds(t *testing.T) {
	set := metrics.NewSet()
	h := NewMetrics(set).Instrument("/slow", func(ctx *fasthttp.RequestCtx) { time.Sleep(2 * time.Millisecond) })
	var ctx fasthttp.RequestCtx
	h(&ctx)
	var b bytes.Buffer
	set.WritePrometheus(&b)
	out := b.String()
	for _, want := range []string{
		`promo_http_request_duration_seconds_bucket{route="/slow",le="0.0001"} 0`,
		`promo_http_request_duration_seconds_bucket{route="/slow",le="0.00025"} 0`,
		`promo_http_request_duration_seconds_bucket{route="/slow",le="0.0005"} 0`,
		`promo_http_request_duration_seconds_bucket{route="/slow",le="0.001"} 0`,
		`promo_http_request_duration_seconds_bucket{route="/slow",le="10"} 1`,
		`promo_http_request_duration_seconds_count{route="/slow"} 1`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("no line %q in\n%s", want, out)
		}
	}
}
