package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"github.com/tsenart/vegeta/v12/lib/plot"

	"github.com/promotion-service/promo/client"
	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
)

// LoadConfig describes a constant-rate load test of GET /promotions/{id}.
type LoadConfig struct {
	// Target is the base URL of the server, e.g. http://127.0.0.1:8080.
	Target string
	// IDsFile holds the ids to look up, one per line (a promotions CSV
	// works too: the first field of each line is used).
	IDsFile string
	// Rate is the number of requests per second; 0 sends them as fast as
	// Connections workers can, one request each at a time (closed loop),
	// to measure the most the path serves.
	Rate int
	// Duration is how long the attack lasts.
	Duration time.Duration
	// MissRatio is the share of requests (0 to 1) for unknown ids, whose
	// 404 is expected and counts as a success.
	MissRatio float64
	// Zipf, when above 1, skews the choice of ids: id i is drawn with
	// probability proportional to 1/(1+i)^Zipf, so a few ids are hot.
	// 0 draws ids uniformly.
	Zipf float64
	// Out is the directory for report.json, results.bin, plot.html and
	// latency.png; empty writes nothing.
	Out string
	// Connections is the number of keep-alive connections (default 64).
	Connections int
	// Timeout bounds each request (default 5s).
	Timeout time.Duration
	// MaxIDs bounds how many ids are read from IDsFile (default 1,000,000),
	// so that the generator's memory does not grow with the file.
	MaxIDs int
	// Seed makes the sequence of ids reproducible.
	Seed uint64
	// Progress, if set, receives a line per second while the attack runs.
	Progress io.Writer
	// Name labels the attack in its report and plots.
	Name string
	// Via is how requests reach the servers: ViaHTTP (the default), a
	// fasthttp client to Target; ViaOwner, a fasthttp client to the
	// primary owner of each id by the ring of Target's GET /cluster (the
	// direct path a client library would take); or ViaClient, the Go
	// client library (package client) seeded with Target, which routes
	// each id to its owners itself, with failover and hedging.
	Via string
	// Batch, above 1, sends POST /promotions/batch of Batch ids (or
	// client.BatchGet) instead of single lookups; the report counts ids
	// per second too.
	Batch int
	// Client, with Via ViaClient, is the client to drive; nil makes one
	// seeded with Target, closed at the end.
	Client *client.Client
}

// Ways requests reach the servers (LoadConfig.Via).
const (
	ViaHTTP   = "http"
	ViaOwner  = "owner"
	ViaClient = "client"
)

// DefaultLoadConfig returns the defaults of promo bench load.
func DefaultLoadConfig() LoadConfig {
	return LoadConfig{
		Target:      "http://127.0.0.1:8080",
		Rate:        10_000,
		Duration:    10 * time.Second,
		Connections: 64,
		Timeout:     5 * time.Second,
		MaxIDs:      1_000_000,
		Seed:        1,
		Name:        "promo",
	}
}

// Validate reports the first invalid field of c.
func (c *LoadConfig) Validate() error {
	u, err := url.Parse(c.Target)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("bench: Target must be an http(s) URL such as http://127.0.0.1:8080, got %q", c.Target)
	case c.IDsFile == "":
		return errors.New("bench: IDsFile is required")
	case c.Rate < 0:
		return fmt.Errorf("bench: Rate must be positive, or 0 for as fast as possible, got %d", c.Rate)
	case c.Via != "" && c.Via != ViaHTTP && c.Via != ViaOwner && c.Via != ViaClient:
		return fmt.Errorf("bench: Via must be %q, %q or %q, got %q", ViaHTTP, ViaOwner, ViaClient, c.Via)
	case c.Via == ViaOwner && c.Batch > 1:
		return errors.New("bench: Via owner sends single lookups only, not batches")
	case c.Batch < 0 || c.Batch > lookup.MaxBatch:
		return fmt.Errorf("bench: Batch must be between 0 and %d, got %d", lookup.MaxBatch, c.Batch)
	case c.Duration <= 0:
		return fmt.Errorf("bench: Duration must be positive, got %v", c.Duration)
	case c.MissRatio < 0 || c.MissRatio > 1:
		return fmt.Errorf("bench: MissRatio must be between 0 and 1, got %v", c.MissRatio)
	case c.Zipf != 0 && c.Zipf <= 1:
		return fmt.Errorf("bench: Zipf must be above 1 (or 0 for uniform), got %v", c.Zipf)
	case c.Connections < 1:
		return fmt.Errorf("bench: Connections must be positive, got %d", c.Connections)
	case c.Timeout <= 0:
		return fmt.Errorf("bench: Timeout must be positive, got %v", c.Timeout)
	case c.MaxIDs < 1:
		return fmt.Errorf("bench: MaxIDs must be positive, got %d", c.MaxIDs)
	}
	return nil
}

// LoadReport is the outcome of a load test, as written to report.json.
type LoadReport struct {
	Name         string         `json:"name"`
	Target       string         `json:"target"`
	Rate         float64        `json:"rate"`       // requests sent per second
	Throughput   float64        `json:"throughput"` // successful requests per second
	Requests     uint64         `json:"requests"`
	Success      float64        `json:"success"` // share of expected answers
	DurationSec  float64        `json:"duration_seconds"`
	Latency      Latencies      `json:"latency"`
	StatusCodes  map[string]int `json:"status_codes"`
	Errors       []string       `json:"errors,omitempty"`
	MissRatio    float64        `json:"miss_ratio"`
	Zipf         float64        `json:"zipf"`
	RequestedQPS int            `json:"requested_rate"`
	Via          string         `json:"via"`
	// CPUPerRequestUS is the CPU time this process used per request, in
	// microseconds: the load generator's, and the servers' when they run
	// in it (promo bench cluster). On a shared machine it varies much
	// less than the rates.
	CPUPerRequestUS float64 `json:"cpu_us_per_request"`
	// Batch is the ids per request; IDsPerSecond is Throughput times it.
	Batch        int     `json:"batch,omitempty"`
	IDsPerSecond float64 `json:"ids_per_second"`
	// Baseline is the same attack against the bare baseline server, when
	// one was run, and the ratios of this report to it.
	Baseline *LoadReport `json:"baseline,omitempty"`
	// ThroughputRatio is Throughput / Baseline.Throughput.
	ThroughputRatio float64 `json:"throughput_ratio,omitempty"`
	// P99AddedMS is Latency.P99 - Baseline.Latency.P99, in milliseconds.
	P99AddedMS float64 `json:"p99_added_ms,omitempty"`
}

// Latencies are in milliseconds.
type Latencies struct {
	Mean float64 `json:"mean_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
}

// missPrefix starts every unknown id the load asks for: ids of version 4
// with a zero time part, which random UUIDs practically never are.
const missPrefix = "00000000-0000-4000-8000-"

// RunLoad runs the attack of c against c.Target, writes its artifacts to
// c.Out and returns the report. It fails fast when the target does not
// answer.
func RunLoad(ctx context.Context, c LoadConfig) (LoadReport, error) {
	if err := c.Validate(); err != nil {
		return LoadReport{}, err
	}
	ids, err := readIDs(c.IDsFile, c.MaxIDs)
	if err != nil {
		return LoadReport{}, err
	}
	if err := probe(ctx, c.Target, c.Timeout); err != nil {
		return LoadReport{}, err
	}
	if c.Out != "" {
		if err := os.MkdirAll(c.Out, 0o755); err != nil {
			return LoadReport{}, err
		}
	}
	return attack(ctx, c, ids)
}

// readIDs reads at most max ids, one per line (the first CSV field).
func readIDs(path string, max int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bench: cannot read ids: %w", err)
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() && len(ids) < max {
		line := sc.Text()
		if i := strings.IndexByte(line, ','); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if _, err := promotion.ParseID([]byte(line)); err != nil {
			return nil, fmt.Errorf("bench: %s line %d: %q is not a promotion id", path, len(ids)+1, line)
		}
		ids = append(ids, strings.ToLower(line))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bench: cannot read ids: %w", err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("bench: %s holds no ids", path)
	}
	return ids, nil
}

// probe fails with a clear error when the target does not answer HTTP.
func probe(ctx context.Context, target string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, min(timeout, 5*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(target, "/")+"/promotions/"+missPrefix+"000000000000", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: target %s does not answer: %w", target, err)
	}
	resp.Body.Close()
	return nil
}

// targeter draws ids for the attack. It is safe for concurrent use.
type targeter struct {
	mu     sync.Mutex
	rng    *rand.Rand
	zipf   *rand.Zipf
	ids    []string
	prefix string
	miss   float64
	batch  int
}

func newTargeter(c LoadConfig, ids []string) *targeter {
	t := &targeter{
		rng:    rand.New(rand.NewPCG(c.Seed, c.Seed+1)),
		ids:    ids,
		prefix: strings.TrimSuffix(c.Target, "/") + "/promotions/",
		miss:   c.MissRatio,
		batch:  c.Batch,
	}
	if c.Zipf > 1 {
		// Shuffle first, so that the hot ids are not the first of the file.
		t.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		t.zipf = rand.NewZipf(t.rng, c.Zipf, 1, uint64(len(ids)-1))
	}
	return t
}

func (t *targeter) next(tgt *vegeta.Target) error {
	if t.batch > 1 {
		body := append(make([]byte, 0, 8+t.batch*39), `{"ids":[`...)
		t.mu.Lock()
		for i := range t.batch {
			if i > 0 {
				body = append(body, ',')
			}
			body = append(append(append(body, '"'), t.id()...), '"')
		}
		t.mu.Unlock()
		tgt.Method = http.MethodPost
		tgt.URL = t.prefix + "batch"
		tgt.Body = append(body, "]}"...)
		return nil
	}
	t.mu.Lock()
	id := t.id()
	t.mu.Unlock()
	tgt.Method = http.MethodGet
	tgt.URL = t.prefix + id
	return nil
}

// id draws an id; t.mu is held.
func (t *targeter) id() string {
	switch {
	case t.miss > 0 && t.rng.Float64() < t.miss:
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], t.rng.Uint64())
		return fmt.Sprintf("%s%012x", missPrefix, binary.BigEndian.Uint64(b[:])&0xffffffffffff)
	case t.zipf != nil:
		return t.ids[t.zipf.Uint64()]
	default:
		return t.ids[t.rng.IntN(len(t.ids))]
	}
}

// expected reports whether r is the answer the load wanted: a 200, or a
// 404 for an id it made up.
func expected(r *vegeta.Result) bool {
	return r.Code == http.StatusOK || (r.Code == http.StatusNotFound && strings.Contains(r.URL, "/promotions/"+missPrefix))
}

// attack runs the attack of c with ids and records every result.
func attack(ctx context.Context, c LoadConfig, ids []string) (LoadReport, error) {
	var rt http.RoundTripper
	if c.Via == ViaClient {
		cl := c.Client
		if cl == nil {
			var err error
			if cl, err = client.New(ctx, client.Config{Seeds: []string{c.Target}, Logger: slog.New(slog.DiscardHandler)}); err != nil {
				return LoadReport{}, err
			}
			defer cl.Close()
		}
		rt = &clientTransport{c: cl}
	}
	if c.Via == ViaOwner {
		ot, err := newOwnerTransport(ctx, c.Target, c.Connections, c.Timeout)
		if err != nil {
			return LoadReport{}, err
		}
		rt = ot
	}
	atk := newAttacker(c, rt)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	rec, err := newRecorder(c)
	if err != nil {
		return LoadReport{}, err
	}
	defer rec.close()
	results := atk.Attack(newTargeter(c, ids).next, vegeta.Rate{Freq: c.Rate, Per: time.Second}, c.Duration, c.Name) // Freq 0: closed loop
	for r := range results {
		if err := rec.add(r); err != nil {
			atk.Stop()
			return LoadReport{}, err
		}
	}
	rep, err := rec.report()
	if err != nil || c.Out == "" {
		return rep, err
	}
	return rep, rec.save(rep)
}

// newAttacker returns a vegeta attacker that sends over rt, or else over
// c.Connections fasthttp connections to c.Target (validated).
func newAttacker(c LoadConfig, rt http.RoundTripper) *vegeta.Attacker {
	u, _ := url.Parse(c.Target)
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	if rt == nil {
		rt = newFastTransport(host, u.Scheme == "https", c.Connections, c.Timeout)
	}
	return vegeta.NewAttacker(
		vegeta.Workers(uint64(c.Connections)),
		vegeta.MaxWorkers(uint64(c.Connections)),
		vegeta.MaxBody(4<<10),
		vegeta.Client(&http.Client{Transport: rt}),
	)
}

// recorder collects the results of one attack: its metrics, status codes
// and errors, the plots, results.bin when c.Out is set, and a progress
// line per second.
type recorder struct {
	c           LoadConfig
	resultsFile *os.File      // c.Out/results.bin, or nil
	bw          *bufio.Writer // buffers resultsFile
	enc         vegeta.Encoder
	htmlPlot    *plot.Plot
	chart       *latencyChart

	m     vegeta.Metrics
	ok    uint64 // expected answers
	codes map[string]int
	errs  map[string]int

	start, lastTick time.Time
	lastCount       uint64
	cpu             time.Duration // processCPU at the start
}

func newRecorder(c LoadConfig) (*recorder, error) {
	r := &recorder{
		c:        c,
		htmlPlot: plot.New(plot.Title(c.Name+" "+c.Target), plot.Downsample(4000)),
		chart:    newLatencyChart(),
		codes:    map[string]int{},
		errs:     map[string]int{},
	}
	if c.Out != "" {
		f, err := os.Create(filepath.Join(c.Out, "results.bin"))
		if err != nil {
			return nil, err
		}
		r.resultsFile = f
		r.bw = bufio.NewWriterSize(f, 1<<20)
		r.enc = vegeta.NewEncoder(r.bw)
	}
	r.start = time.Now()
	r.lastTick = r.start
	r.cpu = processCPU()
	return r, nil
}

// add records one result.
func (rec *recorder) add(r *vegeta.Result) error {
	if expected(r) {
		rec.ok++
		r.Error = "" // an expected 404 is not an error in plots
	} else if r.Error != "" {
		rec.errs[r.Error]++
	}
	rec.m.Add(r)
	rec.codes[fmt.Sprint(r.Code)]++
	rec.chart.add(r.Timestamp.Sub(rec.start), r.Latency)
	_ = rec.htmlPlot.Add(r)
	r.Headers, r.Body = nil, nil // not needed, and most of an encoded result
	if rec.enc != nil {
		if err := rec.enc.Encode(r); err != nil {
			return fmt.Errorf("bench: cannot write results: %w", err)
		}
	}
	if rec.c.Progress != nil && time.Since(rec.lastTick) >= time.Second {
		now := time.Now()
		fmt.Fprintf(rec.c.Progress, "%5.1fs  %8d requests  %7.0f req/s  success %.4f  p99 %s\n",
			now.Sub(rec.start).Seconds(), rec.m.Requests, float64(rec.m.Requests-rec.lastCount)/now.Sub(rec.lastTick).Seconds(),
			float64(rec.ok)/float64(rec.m.Requests), rec.m.Latencies.Quantile(0.99).Round(time.Microsecond))
		rec.lastTick, rec.lastCount = now, rec.m.Requests
	}
	return nil
}

// report closes the metrics and returns what they measured.
func (rec *recorder) report() (LoadReport, error) {
	m, c := &rec.m, rec.c
	m.Close()
	if m.Requests == 0 {
		return LoadReport{}, errors.New("bench: the attack sent no request")
	}
	rep := LoadReport{
		Name:         c.Name,
		Target:       c.Target,
		Rate:         m.Rate,
		Requests:     m.Requests,
		Success:      float64(rec.ok) / float64(m.Requests),
		DurationSec:  m.Duration.Seconds(),
		StatusCodes:  rec.codes,
		MissRatio:    c.MissRatio,
		Zipf:         c.Zipf,
		RequestedQPS: c.Rate,
		Latency: Latencies{
			Mean: ms(m.Latencies.Mean),
			P50:  ms(m.Latencies.P50),
			P90:  ms(m.Latencies.P90),
			P99:  ms(m.Latencies.P99),
			Max:  ms(m.Latencies.Max),
		},
	}
	if total := m.Duration + m.Wait; total > 0 {
		rep.Throughput = float64(rec.ok) / total.Seconds()
	}
	rep.Via, rep.Batch = c.Via, c.Batch
	if rep.Via == "" {
		rep.Via = ViaHTTP
	}
	rep.IDsPerSecond = rep.Throughput * float64(max(c.Batch, 1))
	rep.CPUPerRequestUS = math.Round(float64(processCPU()-rec.cpu)/float64(m.Requests)/10) / 100
	for e, n := range rec.errs {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%d× %s", n, e))
	}
	sort.Strings(rep.Errors)
	if len(rep.Errors) > 20 {
		rep.Errors = rep.Errors[:20]
	}
	return rep, nil
}

// save writes results.bin, plot.html, latency.png and report.json to
// c.Out.
func (rec *recorder) save(rep LoadReport) error {
	c := rec.c
	if err := rec.bw.Flush(); err != nil {
		return err
	}
	rec.htmlPlot.Close()
	if err := writeFile(filepath.Join(c.Out, "plot.html"), func(w io.Writer) error {
		_, err := rec.htmlPlot.WriteTo(w)
		return err
	}); err != nil {
		return err
	}
	if err := rec.chart.save(filepath.Join(c.Out, "latency.png"), c.Name+" "+c.Target); err != nil {
		return err
	}
	return WriteReport(filepath.Join(c.Out, "report.json"), rep)
}

// close closes results.bin, flushed or not.
func (rec *recorder) close() {
	if rec.resultsFile != nil {
		rec.resultsFile.Close()
	}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// WriteReport writes v as indented JSON to path.
func WriteReport(path string, v any) error {
	return writeFile(path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	})
}

func writeFile(path string, fn func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	if err := fn(bw); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// RunBaseline runs the attack of c against a bare server in a child
// process started as bare says, labelled "bare fasthttp baseline", with
// its artifacts in c.Out/baseline. Compare attaches its report to the one
// of the same attack on the server.
func RunBaseline(ctx context.Context, c LoadConfig, bare BareChildConfig) (LoadReport, error) {
	child, err := StartBareChild(ctx, bare)
	if err != nil {
		return LoadReport{}, err
	}
	defer child.Close()
	c.Target = child.URL()
	c.Name = "bare fasthttp baseline"
	if c.Out != "" {
		c.Out = filepath.Join(c.Out, "baseline")
	}
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "baseline: attacking %s at %d req/s for %v\n", c.Target, c.Rate, c.Duration)
	}
	return RunLoad(ctx, c)
}

// Compare attaches base, the same attack against the baseline, to r and
// computes the ratios.
func Compare(r *LoadReport, base LoadReport) {
	r.Baseline = &base
	if base.Throughput > 0 {
		r.ThroughputRatio = math.Round(r.Throughput/base.Throughput*1000) / 1000
	}
	r.P99AddedMS = math.Round((r.Latency.P99-base.Latency.P99)*1000) / 1000
}
