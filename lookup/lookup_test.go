package lookup_test

import (
	"context"
	"encoding/binary"
	"flag"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/pebblestore"
	"github.com/promotion-service/promo/promotion"
)

// mustStore returns a store whose version 1 holds n random records.
func mustStore(tb testing.TB, n int) (*pebblestore.Store, []promotion.Record) {
	tb.Helper()
	cfg := pebblestore.DefaultConfig(tb.TempDir())
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.CacheSize = 64 << 20
	s, err := pebblestore.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]promotion.Record, n)
	b, err := s.Begin(context.Background(), "test", 1)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range recs {
		binary.BigEndian.PutUint64(recs[i].ID[:8], rng.Uint64())
		binary.BigEndian.PutUint64(recs[i].ID[8:], rng.Uint64())
		recs[i].PriceMicros = rng.Int64N(100_000_000)
		recs[i].Expires = 1_500_000_000 + rng.Int64N(100_000_000)
		if err := b.Add(0, &recs[i], int64(i)); err != nil {
			tb.Fatal(err)
		}
	}
	if _, _, err := b.Commit(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return s, recs
}

func request(path string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(fasthttp.MethodGet)
	ctx.Request.SetRequestURI(path)
	return &ctx
}

func TestLookup(t *testing.T) {
	s, recs := mustStore(t, 1000)
	l := lookup.New(lookup.VersionsOf(s.Acquire))
	f := func(path string, status int, body string) {
		t.Helper()
		ctx := request(path)
		l.HandlePath(ctx)
		if got := ctx.Response.StatusCode(); got != status {
			t.Fatalf("%s: status %d, want %d (%s)", path, got, status, ctx.Response.Body())
		}
		if got := string(ctx.Response.Body()); got != body {
			t.Fatalf("%s: body %s, want %s", path, got, body)
		}
		if got := string(ctx.Response.Header.ContentType()); got != "application/json" {
			t.Fatalf("%s: Content-Type %q", path, got)
		}
		if status != fasthttp.StatusBadRequest {
			if v := string(ctx.Response.Header.Peek("X-Dataset-Version")); v != "1" {
				t.Fatalf("%s: X-Dataset-Version %q", path, v)
			}
		}
	}
	r := recs[42]
	f("/promotions/"+r.ID.String(), 200, string(promotion.AppendJSON(nil, &r)))
	upper := []byte(r.ID.String())
	for i, c := range upper {
		if c >= 'a' && c <= 'f' {
			upper[i] = c - 'a' + 'A'
		}
	}
	f("/promotions/"+string(upper), 200, string(promotion.AppendJSON(nil, &r)))
	f("/promotions/00000000-0000-0000-0000-000000000000", 404,
		`{"error":"promotion not found","id":"00000000-0000-0000-0000-000000000000"}`+"\n")
	ctx := request("/promotions/nope")
	l.HandlePath(ctx)
	if ctx.Response.StatusCode() != 400 {
		t.Fatalf("malformed id: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// nilView is a store's own view type, for VersionsOf.
type nilView struct{}

func (*nilView) Version() uint64                                   { return 0 }
func (*nilView) VersionText() []byte                               { return nil }
func (*nilView) Get(promotion.ID, *promotion.Record) (bool, error) { return false, nil }
func (*nilView) Release()                                          {}

func TestVersionsOfTurnsNilIntoNoView(t *testing.T) {
	vs := lookup.VersionsOf(func() *nilView { return nil })
	if v := vs.Acquire(); v != nil {
		t.Fatalf("Acquire() = %#v, want a nil View for a nil *nilView", v)
	}
	// A store without a version: the handler must see no View and answer
	// 404, rather than call a method on a nil pointer.
	cfg := pebblestore.DefaultConfig(t.TempDir())
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := pebblestore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := request("/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	lookup.New(lookup.VersionsOf(s.Acquire)).HandlePath(ctx)
	if ctx.Response.StatusCode() != 404 || !strings.Contains(string(ctx.Response.Body()), "no dataset has been imported yet") {
		t.Fatalf("lookup in an empty store: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; make test also runs this package without it")
	}
	s, recs := mustStore(t, 1000)
	l := lookup.New(lookup.VersionsOf(s.Acquire))
	hit := request("/promotions/" + recs[1].ID.String())
	miss := request("/promotions/00000000-0000-0000-0000-000000000000")
	for name, ctx := range map[string]*fasthttp.RequestCtx{"hit": hit, "miss": miss} {
		l.HandlePath(ctx) // warm the response buffers
		if n := testing.AllocsPerRun(1000, func() {
			ctx.Response.Reset()
			l.HandlePath(ctx)
		}); n != 0 {
			t.Errorf("%s: %v allocations per lookup, want 0", name, n)
		}
	}
}

// BenchmarkLookup measures the lookup handler alone (no network) over
// random existing IDs of a 200,000-row version.
func BenchmarkLookup(b *testing.B) {
	s, recs := mustStore(b, *lookupRows)
	l := lookup.New(lookup.VersionsOf(s.Acquire))
	ctxs := make([]*fasthttp.RequestCtx, 1024)
	for i := range ctxs {
		ctxs[i] = request("/promotions/" + recs[(i*7919)%len(recs)].ID.String())
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ctx := ctxs[i%len(ctxs)]
		ctx.Response.Reset()
		l.HandlePath(ctx)
		i++
	}
	if ctxs[0].Response.StatusCode() != 200 {
		b.Fatal("lookup failed")
	}
}

var lookupRows = flag.Int("rows", 200_000, "rows in the version BenchmarkLookup reads")

// gate holds every id and accepts versions from min on.
type gate struct{ min uint64 }

func (g gate) Holds(promotion.ID) bool                        { return true }
func (g gate) Misdirected(*fasthttp.RequestCtx, promotion.ID) {}
func (g gate) Min() lookup.Stamp                              { return lookup.Stamp{Epoch: g.min, Version: g.min} }

// A node whose version is older than the cluster's active one answers 503
// instead of an older value, naming the version it holds, so that the
// proxy waits for it (or asks a replica that has switched) rather than
// giving up on it.
func TestLookupBehindTheActiveVersion(t *testing.T) {
	s, recs := mustStore(t, 10)
	path := "/promotions/" + recs[3].ID.String()
	behind := lookup.NewCluster(lookup.VersionsOf(s.Acquire), gate{min: 2}, nil)
	ctx := request(path)
	behind.HandlePath(ctx)
	if ctx.Response.StatusCode() != fasthttp.StatusServiceUnavailable || !strings.Contains(string(ctx.Response.Body()), "catching up") {
		t.Fatalf("behind: %d %s, want 503 catching up", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	if v := string(ctx.Response.Header.Peek(lookup.VersionHeader)); v != "1" {
		t.Fatalf("behind: X-Dataset-Version %q, want the version it holds, 1", v)
	}
	current := lookup.NewCluster(lookup.VersionsOf(s.Acquire), gate{min: 1}, nil)
	ctx = request(path)
	current.HandlePath(ctx)
	if ctx.Response.StatusCode() != fasthttp.StatusOK {
		t.Fatalf("on the active version: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}
