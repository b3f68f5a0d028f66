package lookup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/pebblestore"
	"github.com/promotion-service/promo/promotion"
)

const unknownID = "00000000-0000-0000-0000-000000000000"

func post(path string, body string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(fasthttp.MethodPost)
	ctx.Request.SetRequestURI(path)
	ctx.Request.Header.SetContentType("application/json")
	ctx.Request.SetBodyString(body)
	return &ctx
}

// batchBody is the request for ids.
func batchBody(ids ...string) string {
	b, _ := json.Marshal(map[string][]string{"ids": ids})
	return string(b)
}

func TestParseBatch(t *testing.T) {
	const a, b = "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118", "e2649ca5-7e05-4d53-a8ff-919917a4922e"
	many := func(n int) string {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = a
		}
		return batchBody(ids...)
	}
	for _, tc := range []struct {
		name, body string
		ids        []string // when the body is valid
		status     int      // when it is not
		reason     string
		id         string // the id named, if any
	}{
		{name: "one", body: `{"ids":["` + a + `"]}`, ids: []string{a}},
		{name: "order and duplicates kept", body: `{"ids":["` + b + `","` + a + `","` + b + `"]}`, ids: []string{b, a, b}},
		{name: "upper case", body: `{"ids":["` + strings.ToUpper(a) + `"]}`, ids: []string{a}},
		{name: "whitespace", body: " \r\n{ \"ids\" :\n [ \"" + a + "\" ,\t\"" + b + "\" ] } \n", ids: []string{a, b}},
		{name: "unknown fields skipped", body: `{"hedge":{"x":[1,-2.5e3,true,null,"s\"}"]},"ids":["` + a + `"],"z":false}`, ids: []string{a}},
		{name: "escaped id", body: `{"ids":["\u0064018ef0b-dbd9-48f1-ac1a-eb4d90e57118"]}`, ids: []string{a}},
		{name: "1000 ids", body: many(1000), ids: nil},
		{name: "1001 ids", body: many(1001), status: 413, reason: "at most 1000"},
		{name: "1001 ids, the last malformed", body: strings.Replace(many(1001), `"]}`, `x"]}`, 1), status: 413, reason: "at most 1000"},
		{name: "malformed id", body: `{"ids":["` + a + `","nope"]}`, status: 400, reason: "malformed promotion id", id: "nope"},
		{name: "id one character short", body: `{"ids":["` + a[:35] + `"]}`, status: 400, reason: "malformed promotion id", id: a[:35]},
		{name: "number for an id", body: `{"ids":[12]}`, status: 400, reason: "want a string", id: "12"},
		{name: "null for an id", body: `{"ids":[null]}`, status: 400, reason: "want a string", id: "null"},
		{name: "escape that is not a UUID character", body: `{"ids":["\n` + a[1:] + `"]}`, status: 400, reason: "malformed promotion id", id: `\n` + a[1:]},
		{name: "empty body", body: "", status: 400, reason: "empty request body"},
		{name: "blank body", body: " \n", status: 400, reason: "empty request body"},
		{name: "not an object", body: `["` + a + `"]`, status: 400, reason: "not a JSON object"},
		{name: "empty list", body: `{"ids":[]}`, status: 400, reason: `"ids" is empty`},
		{name: "no ids field", body: `{"id":["` + a + `"]}`, status: 400, reason: `no "ids" field`},
		{name: "empty object", body: `{}`, status: 400, reason: `no "ids" field`},
		{name: "ids not an array", body: `{"ids":"` + a + `"}`, status: 400, reason: "must be an array"},
		{name: "ids null", body: `{"ids":null}`, status: 400, reason: "must be an array"},
		{name: "ids twice", body: `{"ids":["` + a + `"],"ids":["` + b + `"]}`, status: 400, reason: "given twice"},
		{name: "unterminated string", body: `{"ids":["` + a, status: 400, reason: "unterminated"},
		{name: "unterminated array", body: `{"ids":["` + a + `"`, status: 400, reason: "want , or ]"},
		{name: "trailing comma in the list", body: `{"ids":["` + a + `",]}`, status: 400, reason: "malformed batch request"},
		{name: "trailing comma in the object", body: `{"ids":["` + a + `"],}`, status: 400, reason: "want a field name"},
		{name: "missing comma", body: `{"ids":["` + a + `" "` + b + `"]}`, status: 400, reason: "want , or ]"},
		{name: "data after the object", body: `{"ids":["` + a + `"]}x`, status: 400, reason: "data after"},
		{name: "two objects", body: `{"ids":["` + a + `"]}{}`, status: 400, reason: "data after"},
		{name: "bad value of an unknown field", body: `{"x":tru,"ids":["` + a + `"]}`, status: 400, reason: "invalid JSON value"},
		{name: "deep nesting", body: `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `,"ids":["` + a + `"]}`, status: 400, reason: "invalid JSON value"},
		{name: "control character in a string", body: "{\"ids\":[\"a\tb\"]}", status: 400, reason: "unterminated or invalid string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids, err := lookup.ParseBatch([]byte(tc.body), nil)
			if tc.status != 0 {
				if err == nil {
					t.Fatalf("parsed %d ids, want %d %q", len(ids), tc.status, tc.reason)
				}
				if err.Status != tc.status || !strings.Contains(err.Reason, tc.reason) || string(err.ID) != tc.id {
					t.Fatalf("got %d %q id %q, want %d %q id %q", err.Status, err.Reason, err.ID, tc.status, tc.reason, tc.id)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.ids == nil { // many(1000)
				if len(ids) != 1000 {
					t.Fatalf("%d ids, want 1000", len(ids))
				}
				return
			}
			var got []string
			for _, id := range ids {
				got = append(got, id.String())
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.ids) {
				t.Fatalf("ids %v, want %v", got, tc.ids)
			}
		})
	}
}

func TestAppendBatchRequest(t *testing.T) {
	for _, n := range []int{1, 2, lookup.MaxBatch} {
		ids := make([]promotion.ID, n)
		for i := range ids {
			ids[i] = promotion.ID{byte(i), byte(i >> 8), 0xab, 15: byte(i % 3)}
		}
		body := lookup.AppendBatchRequest(nil, ids)
		got, err := lookup.ParseBatch(body, nil)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Fatalf("%d ids: %s parses to %v, %v", n, body, got, err)
		}
	}
}

// FuzzParseBatch checks ParseBatch against encoding/json: what it accepts
// is valid JSON whose "ids" decode to the same ids, and what encoding/json
// decodes to an object holding 1 to 1000 valid ids is accepted.
func FuzzParseBatch(f *testing.F) {
	for _, s := range []string{
		`{"ids":["d018ef0b-dbd9-48f1-ac1a-eb4d90e57118"]}`,
		`{"x":[1,{"y":null}],"ids":["D018EF0B-dbd9-48f1-ac1a-eb4d90e57118","e2649ca5-7e05-4d53-a8ff-919917a4922e"]}`,
		`{"ids":["\u0064018ef0b-dbd9-48f1-ac1a-eb4d90e57118"]}`,
		`{"ids":[]}`, `{"ids":[1]}`, `[]`, ``, `{"ids":["a"]} `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ids, perr := lookup.ParseBatch(body, nil)
		var obj map[string]json.RawMessage
		jerr := json.Unmarshal(body, &obj)
		var strs []string
		if jerr == nil {
			if raw, ok := obj["ids"]; ok {
				jerr = json.Unmarshal(raw, &strs)
			} else {
				jerr = fmt.Errorf("no ids")
			}
		}
		if perr == nil {
			if jerr != nil {
				t.Fatalf("ParseBatch accepted %q, which encoding/json refuses: %v", body, jerr)
			}
			if len(strs) != len(ids) {
				t.Fatalf("%q: %d ids, encoding/json %d", body, len(ids), len(strs))
			}
			for i, s := range strs {
				if id, err := promotion.ParseID([]byte(s)); err != nil || id != ids[i] {
					t.Fatalf("%q: id %d is %s, encoding/json %q", body, i, ids[i], s)
				}
			}
			return
		}
		if jerr != nil || len(strs) == 0 || len(strs) > lookup.MaxBatch || bytes.Count(body, []byte(`"ids"`)) != 1 || obj == nil {
			return
		}
		for _, s := range strs {
			if _, err := promotion.ParseID([]byte(s)); err != nil {
				return
			}
		}
		t.Fatalf("ParseBatch refused %q (%v), which holds %d valid ids", body, perr, len(strs))
	})
}

func TestParseBatchAnswer(t *testing.T) {
	var a lookup.BatchAnswer
	f := func(body string, want string) {
		t.Helper()
		err := lookup.ParseBatchAnswer([]byte(body), &a)
		got := ""
		if err != nil {
			got = "error"
		} else {
			got = fmt.Sprintf("v%d", a.Version)
			for _, p := range a.Promotions {
				got += fmt.Sprintf(" %x:%s", p.ID[:1], p.JSON)
			}
			got += " missing"
			for _, id := range a.Missing {
				got += fmt.Sprintf(" %x", id[:1])
			}
			got += " misdirected"
			for _, id := range a.Misdirected {
				got += fmt.Sprintf(" %x", id[:1])
			}
		}
		if got != want {
			t.Fatalf("%s:\ngot  %s\nwant %s", body, got, want)
		}
	}
	id := func(b byte) string { return promotion.ID{b}.String() }
	f(`{"version":7,"promotions":[],"missing":[]}`, "v7 missing misdirected")
	f(`{"version":7,"promotions":[{"id":"`+id(1)+`","price":1.5}, {"price":2,"id":"`+id(2)+`","x":[{}]}],"missing":["`+id(3)+`"],"misdirected":["`+id(4)+`","`+id(5)+`"],"other":null}`,
		`v7 01:{"id":"`+id(1)+`","price":1.5} 02:{"price":2,"id":"`+id(2)+`","x":[{}]} missing 03 misdirected 04 05`)
	f(` { "missing" : [ ] , "version" : 18446744073709551615 } `, "v18446744073709551615 missing misdirected")
	f(`{"version":18446744073709551616}`, "error")
	f(`{"version":07}`, "error")
	f(`{"version":-1}`, "error")
	f(`{"promotions":[]}`, "error")
	f(`{"version":1,"promotions":[{"price":1}]}`, "error")
	f(`{"version":1,"missing":["nope"]}`, "error")
	f(`{"version":1} x`, "error")
	f(`{"version":1,"promotions":[{"id":"`+id(1)+`"}`, "error")
}

func FuzzParseBatchAnswer(f *testing.F) {
	f.Add([]byte(`{"version":7,"promotions":[{"id":"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118","price":60.68,"expiration_date":"2018-08-04T03:32:31Z"}],"missing":["e2649ca5-7e05-4d53-a8ff-919917a4922e"],"misdirected":[]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var a lookup.BatchAnswer
		if lookup.ParseBatchAnswer(body, &a) != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		for _, p := range a.Promotions {
			if !json.Valid(p.JSON) {
				t.Fatalf("promotion %q of %q is not JSON", p.JSON, body)
			}
		}
	})
}

// holder is a read node's gate: it holds the ids holds accepts and serves
// versions from min on.
type holder struct {
	min   uint64
	holds func(promotion.ID) bool
}

func (g holder) Holds(id promotion.ID) bool                     { return g.holds(id) }
func (g holder) Misdirected(*fasthttp.RequestCtx, promotion.ID) {}
func (g holder) Min() lookup.Stamp                              { return lookup.Stamp{Epoch: g.min, Version: g.min} }

// wantAnswer is the body of a batch answer.
func wantAnswer(version int, found []promotion.Record, missing, misdirected []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"version":%d,"promotions":[`, version)
	for i := range found {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(promotion.AppendJSON(nil, &found[i]))
	}
	b.WriteString(`],"missing":[`)
	for i, id := range missing {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q", id)
	}
	b.WriteString("]")
	if len(misdirected) > 0 {
		b.WriteString(`,"misdirected":[`)
		for i, id := range misdirected {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%q", id)
		}
		b.WriteString("]")
	}
	b.WriteString("}")
	return b.String()
}

func TestBatch(t *testing.T) {
	s, recs := mustStore(t, 100)
	a, b, c := recs[5], recs[6], recs[7]
	upper := strings.ToUpper(c.ID.String())
	other := promotion.ID{1, 2, 3}.String()
	even := func(id promotion.ID) bool { return id[15]%2 == 0 }
	for _, tc := range []struct {
		name    string
		handler *lookup.Handler
		body    string
		status  int
		version string
		want    string
	}{
		{"standalone", lookup.New(lookup.VersionsOf(s.Acquire)),
			batchBody(b.ID.String(), unknownID, a.ID.String(), upper, b.ID.String(), unknownID, other),
			200, "1", wantAnswer(1, []promotion.Record{b, a, c, b}, []string{unknownID, unknownID, other}, nil)},
		{"read node holding every id", lookup.NewCluster(lookup.VersionsOf(s.Acquire), holder{min: 1, holds: func(promotion.ID) bool { return true }}, nil),
			batchBody(a.ID.String(), unknownID),
			200, "1", wantAnswer(1, []promotion.Record{a}, []string{unknownID}, nil)},
		{"read node holding even ids", lookup.NewCluster(lookup.VersionsOf(s.Acquire), holder{min: 1, holds: even}, nil),
			batchBody(a.ID.String(), b.ID.String(), c.ID.String(), unknownID, other, a.ID.String()),
			200, "1", func() string {
				known := map[promotion.ID]promotion.Record{a.ID: a, b.ID: b, c.ID: c}
				var found []promotion.Record
				var missing, misdirected []string
				for _, id := range []promotion.ID{a.ID, b.ID, c.ID, {}, {1, 2, 3}, a.ID} {
					r, ok := known[id]
					switch {
					case !even(id):
						misdirected = append(misdirected, id.String())
					case ok:
						found = append(found, r)
					default:
						missing = append(missing, id.String())
					}
				}
				return wantAnswer(1, found, missing, misdirected)
			}()},
		{"read node behind the active version", lookup.NewCluster(lookup.VersionsOf(s.Acquire), holder{min: 2, holds: even}, nil),
			batchBody(a.ID.String()), 503, "1", `{"error":"this node is catching up with the active dataset version","version":2,"epoch":2}` + "\n"},
		{"malformed id", lookup.New(lookup.VersionsOf(s.Acquire)), batchBody(a.ID.String(), "nope"),
			400, "", `{"error":"malformed promotion id: want a 36-character UUID such as d018ef0b-dbd9-48f1-ac1a-eb4d90e57118","id":"nope","index":1}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := post(lookup.BatchPath, tc.body)
			tc.handler.HandleBatch(ctx)
			if got := ctx.Response.StatusCode(); got != tc.status {
				t.Fatalf("status %d, want %d: %s", got, tc.status, ctx.Response.Body())
			}
			if got := string(ctx.Response.Body()); got != tc.want {
				t.Fatalf("body\n%s\nwant\n%s", got, tc.want)
			}
			if got := string(ctx.Response.Header.Peek(lookup.VersionHeader)); got != tc.version {
				t.Fatalf("X-Dataset-Version %q, want %q", got, tc.version)
			}
			if got := string(ctx.Response.Header.ContentType()); got != "application/json" {
				t.Fatalf("Content-Type %q", got)
			}
			if tc.status == 200 && !json.Valid(ctx.Response.Body()) {
				t.Fatal("the answer is not JSON")
			}
		})
	}
}

func TestBatchWithoutDataset(t *testing.T) {
	cfg := pebblestore.DefaultConfig(t.TempDir())
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := pebblestore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	body := batchBody(unknownID, "d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	ctx := post(lookup.BatchPath, body)
	lookup.New(lookup.VersionsOf(s.Acquire)).HandleBatch(ctx)
	if want := `{"version":0,"promotions":[],"missing":["` + unknownID + `","d018ef0b-dbd9-48f1-ac1a-eb4d90e57118"]}`; ctx.Response.StatusCode() != 200 || string(ctx.Response.Body()) != want {
		t.Fatalf("standalone without a dataset: %d %s, want 200 %s", ctx.Response.StatusCode(), ctx.Response.Body(), want)
	}
	ctx = post(lookup.BatchPath, body)
	lookup.NewCluster(lookup.VersionsOf(s.Acquire), holder{holds: func(promotion.ID) bool { return true }}, nil).HandleBatch(ctx)
	if ctx.Response.StatusCode() != 503 || !strings.Contains(string(ctx.Response.Body()), "no dataset version yet") {
		t.Fatalf("read node without a dataset: %d %s, want 503", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// batchRequests returns a request for each size, of existing ids with one
// unknown id in ten, that keeps its response body buffer.
func batchRequests(recs []promotion.Record, sizes ...int) map[int]*fasthttp.RequestCtx {
	out := map[int]*fasthttp.RequestCtx{}
	for _, n := range sizes {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = recs[(i*7919)%len(recs)].ID.String()
			if i%10 == 9 {
				ids[i] = unknownID
			}
		}
		ctx := post(lookup.BatchPath, batchBody(ids...))
		// As a server's connection does: a bare Response hands its body
		// buffer back to fasthttp's pool on Reset, and the pool, calibrated
		// on small answers, drops the large ones of batches.
		ctx.Response.KeepBodyBuffer = true
		out[n] = ctx
	}
	return out
}

// TestBatchDoesNotAllocate: a batch allocates nothing once the pooled
// buffers have grown, whatever its number of ids, on standalone servers and
// read nodes alike.
func TestBatchDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; make test also runs this package without it")
	}
	s, recs := mustStore(t, 5000)
	handlers := map[string]*lookup.Handler{
		"standalone": lookup.New(lookup.VersionsOf(s.Acquire)),
		"read node":  lookup.NewCluster(lookup.VersionsOf(s.Acquire), holder{min: 1, holds: func(id promotion.ID) bool { return id[0]%3 != 0 }}, nil),
	}
	for name, h := range handlers {
		for n, ctx := range batchRequests(recs, 1, 100, 1000) {
			h.HandleBatch(ctx) // grow the buffers
			if ctx.Response.StatusCode() != 200 {
				t.Fatalf("%s, %d ids: %d %s", name, n, ctx.Response.StatusCode(), ctx.Response.Body())
			}
			if allocs := testing.AllocsPerRun(100, func() {
				ctx.Response.Reset()
				h.HandleBatch(ctx)
			}); allocs != 0 {
				t.Errorf("%s: %v allocations per batch of %d ids, want 0", name, allocs, n)
			}
		}
	}
}

// BenchmarkBatch measures the batch handler alone (no network) over
// batches of existing ids of a 200,000-row version; ids/s compares with
// BenchmarkLookup's requests/s.
func BenchmarkBatch(b *testing.B) {
	s, recs := mustStore(b, *lookupRows)
	h := lookup.New(lookup.VersionsOf(s.Acquire))
	for _, n := range []int{1, 10, 100, 1000} {
		ctx := batchRequests(recs, n)[n]
		b.Run(fmt.Sprintf("ids=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ctx.Response.Reset()
				h.HandleBatch(ctx)
			}
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "ids/s")
		})
	}
}

func TestRoutes(t *testing.T) {
	r := httpserver.NewRouter(httpserver.NewMetrics(metrics.NewSet()), "token")
	h := lookup.Routes(r, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("lookup " + string(ctx.Path())) },
		func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("batch " + string(ctx.PostBody())) })
	f := func(method, path string, status int, body string) {
		t.Helper()
		ctx := post(path, "{}")
		ctx.Request.Header.SetMethod(method)
		h(ctx)
		if got := ctx.Response.StatusCode(); got != status {
			t.Fatalf("%s %s: status %d, want %d (%s)", method, path, got, status, ctx.Response.Body())
		}
		if body != "" && string(ctx.Response.Body()) != body {
			t.Fatalf("%s %s: body %q, want %q", method, path, ctx.Response.Body(), body)
		}
	}
	// A batch is a read: no token, unlike the router's POST routes.
	f("POST", "/promotions/batch", 200, "batch {}")
	f("GET", "/promotions/batch", 200, "lookup /promotions/batch") // a lookup of the malformed id "batch"
	f("GET", "/promotions/abc", 200, "lookup /promotions/abc")
	f("POST", "/promotions/batch/", 404, "")
	f("PUT", "/promotions/batch", 405, "")
	f("POST", "/promotions/abc", 405, "")
}

func TestRoutesDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; make test also runs this package without it")
	}
	r := httpserver.NewRouter(httpserver.NewMetrics(metrics.NewSet()), "")
	h := lookup.Routes(r, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("batch") })
	for _, ctx := range []*fasthttp.RequestCtx{request("/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e57118"), post(lookup.BatchPath, "{}")} {
		h(ctx)
		if n := testing.AllocsPerRun(1000, func() {
			ctx.Response.Reset()
			h(ctx)
		}); n != 0 {
			t.Errorf("%s %s: %v allocations per request, want 0", ctx.Method(), ctx.Path(), n)
		}
	}
}
