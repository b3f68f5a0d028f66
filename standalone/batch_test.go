package standalone

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
)

// batchAnswer is a 200 answer to POST /promotions/batch, decoded with
// encoding/json to check the hand-written encoder too.
type batchAnswer struct {
	Version     int               `json:"version"`
	Promotions  []json.RawMessage `json:"promotions"`
	Missing     []string          `json:"missing"`
	Misdirected []string          `json:"misdirected"`
}

func idsBody(ids ...string) string {
	b, _ := json.Marshal(map[string][]string{"ids": ids})
	return string(b)
}

func (s *testServer) batch(t *testing.T, body io.Reader, header ...string) response {
	return do(t, http.MethodPost, s.url+"/promotions/batch", "application/json", body, header...)
}

// onlyReader hides the length of its reader, so that the client sends the
// body chunked.
type onlyReader struct{ io.Reader }

func TestBatchContract(t *testing.T) {
	s := startServer(t, func(c *Config) { c.IngestToken = "s3cret" })
	// Before any import: every id is missing, from no version.
	r := s.batch(t, strings.NewReader(idsBody("d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")))
	if want := `{"version":0,"promotions":[],"missing":["d018ef0b-dbd9-48f1-ac1a-eb4d90e57118"]}`; r.status != 200 || string(r.body) != want {
		t.Fatalf("before any import: %d %s, want 200 %s", r.status, r.body, want)
	}
	csv, recs := rows(1200, 1)
	if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv), "Authorization", "Bearer s3cret"); r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	json1 := func(i int) string { return string(promotion.AppendJSON(nil, &recs[i])) }
	id := func(i int) string { return recs[i].ID.String() }
	const unknown = "00000000-0000-0000-0000-000000000000"
	ids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = id(i)
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		body       io.Reader
		status     int
		promotions []string // for 200
		missing    []string
		errorHas   string // for errors
		errorID    string
	}{
		{name: "order, missing, duplicates, any case",
			body:   strings.NewReader(idsBody(id(7), unknown, id(3), strings.ToUpper(id(9)), id(7), "ffffffff-0000-0000-0000-000000000000")),
			status: 200, promotions: []string{json1(7), json1(3), json1(9), json1(7)}, missing: []string{unknown, "ffffffff-0000-0000-0000-000000000000"}},
		{name: "all missing", body: strings.NewReader(idsBody(unknown)), status: 200, promotions: []string{}, missing: []string{unknown}},
		{name: "chunked body", body: onlyReader{strings.NewReader(idsBody(id(1), id(2)))}, status: 200, promotions: []string{json1(1), json1(2)}, missing: []string{}},
		{name: "1000 ids", body: strings.NewReader(idsBody(ids(1000)...)), status: 200, promotions: func() []string {
			var out []string
			for i := range 1000 {
				out = append(out, json1(i))
			}
			return out
		}(), missing: []string{}},
		{name: "1001 ids", body: strings.NewReader(idsBody(ids(1001)...)), status: 413, errorHas: "at most 1000"},
		{name: "body too large", body: strings.NewReader(`{"ids":["` + id(1) + `"]` + strings.Repeat(" ", lookup.MaxBatchBytes) + "}"), status: 413, errorHas: "request body too large"},
		{name: "body too large, chunked", body: onlyReader{strings.NewReader(`{"ids":["` + id(1) + `"]` + strings.Repeat(" ", lookup.MaxBatchBytes) + "}")}, status: 413, errorHas: "request body too large"},
		{name: "malformed id", body: strings.NewReader(idsBody(id(1), "d018ef0b-dbd9-48f1-ac1a-eb4d90e5711x", id(2))), status: 400, errorHas: "malformed promotion id", errorID: "d018ef0b-dbd9-48f1-ac1a-eb4d90e5711x"},
		{name: "malformed JSON", body: strings.NewReader(`{"ids":["` + id(1) + `"`), status: 400, errorHas: "malformed batch request"},
		{name: "not JSON", body: strings.NewReader(`ids=` + id(1)), status: 400, errorHas: "not a JSON object"},
		{name: "empty list", body: strings.NewReader(`{"ids":[]}`), status: 400, errorHas: `"ids" is empty`},
		{name: "empty body", body: strings.NewReader(""), status: 400, errorHas: "empty request body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.batch(t, tc.body)
			if tc.status != 200 {
				expectJSONError(t, r, tc.status, tc.errorHas)
				if got, _ := r.json(t)["id"].(string); got != tc.errorID {
					t.Fatalf(`"id" %q, want %q`, got, tc.errorID)
				}
				return
			}
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			var a batchAnswer
			if err := json.Unmarshal(r.body, &a); err != nil {
				t.Fatalf("%v: %s", err, r.body)
			}
			var got []string
			for _, p := range a.Promotions {
				got = append(got, string(p))
			}
			if a.Version != 1 || r.header.Get("X-Dataset-Version") != "1" || fmt.Sprint(got) != fmt.Sprint(tc.promotions) ||
				fmt.Sprint(a.Missing) != fmt.Sprint(tc.missing) || a.Misdirected != nil || bytes.Contains(r.body, []byte("misdirected")) {
				t.Fatalf("answer %s (version header %q), want promotions %v missing %v", r.body, r.header.Get("X-Dataset-Version"), tc.promotions, tc.missing)
			}
		})
	}
	// Other methods, and a GET, which looks the id "batch" up.
	expectJSONError(t, do(t, http.MethodPut, s.url+"/promotions/batch", "", nil), 405, "method not allowed")
	expectJSONError(t, s.get(t, "/promotions/batch"), 400, "malformed promotion id")
}

// TestBatchesDuringImports runs batches while new versions are imported:
// every answer comes whole from the version it names, and a client never
// sees the version go back.
func TestBatchesDuringImports(t *testing.T) {
	s := startServer(t, func(c *Config) { c.KeepVersions = 1 })
	const n = 2000
	csv, recs := rows(n, 1)
	if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv)); r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	var stop atomic.Bool
	var batches atomic.Int64
	versions := make([]sync.Map, 4) // per worker: version -> seen
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			last := 0
			for !stop.Load() {
				idx := make([]int, 1+rng.IntN(200))
				ids := make([]string, len(idx))
				for i := range idx {
					idx[i] = rng.IntN(n)
					ids[i] = recs[idx[i]].ID.String()
				}
				resp, err := client.Post(s.url+"/promotions/batch", "application/json", strings.NewReader(idsBody(ids...)))
				if err != nil {
					errs <- err.Error()
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var a batchAnswer
				if resp.StatusCode != 200 || json.Unmarshal(body, &a) != nil {
					errs <- fmt.Sprintf("status %d: %s", resp.StatusCode, body)
					return
				}
				if h := resp.Header.Get("X-Dataset-Version"); h != fmt.Sprint(a.Version) {
					errs <- fmt.Sprintf("X-Dataset-Version %s for an answer of version %d", h, a.Version)
					return
				}
				if len(a.Promotions) != len(idx) || len(a.Missing) != 0 {
					errs <- fmt.Sprintf("%d promotions and %d missing for %d ids that every version holds", len(a.Promotions), len(a.Missing), len(idx))
					return
				}
				for i, j := range idx {
					want := recs[j]
					want.PriceMicros = int64(a.Version)*1_000_000 + int64(j%100)*10_000
					if string(a.Promotions[i]) != string(promotion.AppendJSON(nil, &want)) {
						errs <- fmt.Sprintf("the answer of version %d holds %s at %d, want %s", a.Version, a.Promotions[i], i, promotion.AppendJSON(nil, &want))
						return
					}
				}
				if a.Version < last {
					errs <- fmt.Sprintf("version went back from %d to %d", last, a.Version)
					return
				}
				last = a.Version
				versions[g].Store(a.Version, true)
				batches.Add(1)
			}
		}()
	}
	for v := 2; v <= 4; v++ {
		csv, _ := rows(n, v)
		if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv)); r.status != 200 {
			t.Fatalf("import %d: %d %s", v, r.status, r.body)
		}
	}
	// Run until every worker has had an answer from the last version.
	deadline := time.Now().Add(30 * time.Second)
	for g := 0; g < len(versions); {
		if _, ok := versions[g].Load(4); ok {
			g++
			continue
		}
		if time.Now().After(deadline) || len(errs) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	seen := 0
	for v := 1; v <= 4; v++ {
		for g := range versions {
			if _, ok := versions[g].Load(v); ok {
				seen++
				break
			}
		}
	}
	t.Logf("%d batches, answered from %d of the 4 versions", batches.Load(), seen)
	if seen < 2 {
		t.Fatalf("batches were answered from %d versions: the imports did not overlap them", seen)
	}
}

// TestBatchPathDoesNotAllocate runs the server's whole handler chain
// (routing, metrics, batch) for batches of growing size.
func TestBatchPathDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race; make test also runs this package without it")
	}
	s := startServer(t)
	csv, recs := rows(1000, 1)
	if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv)); r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	h := s.handler()
	for _, n := range []int{1, 100, 1000} {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = recs[(i*13)%len(recs)].ID.String()
		}
		ids[0] = "00000000-0000-0000-0000-000000000000"
		ctx := batchCtx(idsBody(ids...))
		h(ctx)
		if ctx.Response.StatusCode() != 200 {
			t.Fatalf("%d ids: %d %s", n, ctx.Response.StatusCode(), ctx.Response.Body())
		}
		if allocs := testing.AllocsPerRun(100, func() {
			ctx.Response.Reset()
			h(ctx)
		}); allocs != 0 {
			t.Errorf("%d ids: %v allocations per batch, want 0", n, allocs)
		}
	}
}

func batchCtx(body string) *fasthttp.RequestCtx {
	ctx := new(fasthttp.RequestCtx)
	ctx.Request.Header.SetMethod(fasthttp.MethodPost)
	ctx.Request.SetRequestURI("/promotions/batch")
	ctx.Request.Header.SetContentType("application/json")
	ctx.Request.SetBodyString(body)
	return ctx
}

// BenchmarkBatchVsSingle compares, on one standalone server of 200,000
// rows in this process, the ids/s of batches of 100 with those of 100
// single GETs: over loopback HTTP with a fasthttp client ("http"), and
// calling the server's handler chain directly ("handler", no network).
//
//	go test -run '^$' -bench BatchVsSingle -benchtime 2s ./standalone
func BenchmarkBatchVsSingle(b *testing.B) {
	const per = 100
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = b.TempDir()
	cfg.ImportDir = b.TempDir()
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.HTTP.Logger = cfg.Logger
	s, err := Start(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	var csv bytes.Buffer
	if _, err := gen.Generate(&csv, gen.DefaultConfig(200_000)); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, 0, 100*per)
	for line := range strings.Lines(csv.String()) {
		if len(ids) == cap(ids) {
			break
		}
		ids = append(ids, line[:36])
	}
	resp, err := http.Post("http://"+s.Addr()+"/process-csv?wait=true", "text/csv", &csv)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("import: %v %v", err, resp)
	}
	resp.Body.Close()
	// The requests: 100 batches of 100 ids, and the same ids one by one.
	batches := make([][]byte, len(ids)/per)
	for i := range batches {
		batches[i] = []byte(idsBody(ids[i*per : (i+1)*per]...))
	}
	paths := make([][]byte, len(ids))
	for i, id := range ids {
		paths[i] = []byte("/promotions/" + id)
	}
	// The server keeps each connection's body buffers from request to
	// request; a bare Request or Response hands them back to fasthttp's
	// pool, which, calibrated on single lookups, drops the ~10 KiB ones
	// of batches: keep them here too, as the server does.
	report := func(b *testing.B, n int64) {
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "ids/s")
	}

	client := &fasthttp.HostClient{Addr: s.Addr(), MaxConns: 64}
	b.Run("http/single", func(b *testing.B) {
		var n atomic.Int64
		b.SetParallelism(4)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.Header.SetHost(s.Addr())
			resp.KeepBodyBuffer = true
			i := 0
			for pb.Next() {
				// One op is 100 lookups, the ids of one batch.
				for range per {
					req.SetRequestURIBytes(paths[i%len(paths)])
					i++
					if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
						b.Errorf("lookup: %v %d", err, resp.StatusCode())
						return
					}
				}
				n.Add(per)
			}
		})
		report(b, n.Load())
	})
	b.Run("http/batch", func(b *testing.B) {
		var n atomic.Int64
		b.SetParallelism(4)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.Header.SetHost(s.Addr())
			req.Header.SetMethod(fasthttp.MethodPost)
			req.Header.SetContentType("application/json")
			req.SetRequestURI("/promotions/batch")
			resp.KeepBodyBuffer = true
			i := 0
			for pb.Next() {
				req.SetBodyRaw(batches[i%len(batches)])
				i++
				if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					b.Errorf("batch: %v %d %s", err, resp.StatusCode(), resp.Body())
					return
				}
				n.Add(per)
			}
		})
		report(b, n.Load())
	})

	h := s.handler()
	b.Run("handler/single", func(b *testing.B) {
		ctx := new(fasthttp.RequestCtx)
		ctx.Request.Header.SetMethod(fasthttp.MethodGet)
		ctx.Response.KeepBodyBuffer = true
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			for range per {
				ctx.Request.SetRequestURIBytes(paths[i%len(paths)])
				i++
				ctx.Response.Reset()
				h(ctx)
			}
		}
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("lookup: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		report(b, int64(b.N)*per)
	})
	b.Run("handler/batch", func(b *testing.B) {
		ctxs := make([]*fasthttp.RequestCtx, len(batches))
		for i := range ctxs {
			ctxs[i] = batchCtx(string(batches[i]))
			ctxs[i].Response.KeepBodyBuffer = true
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			ctx := ctxs[i%len(ctxs)]
			i++
			ctx.Response.Reset()
			h(ctx)
		}
		if ctxs[0].Response.StatusCode() != 200 {
			b.Fatalf("batch: %d %s", ctxs[0].Response.StatusCode(), ctxs[0].Response.Body())
		}
		report(b, int64(b.N)*per)
	})
}
