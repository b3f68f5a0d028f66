package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
)

// maxExamples bounds the failed and wrong answers a drill reports.
const maxExamples = 5

// lookupLoad is the constant load of a drill: vegeta GETs of random ids of
// the dataset through the proxy, every answer checked as it arrives
// against the row of the version it names.
type lookupLoad struct {
	h     *harness
	atk   *vegeta.Attacker
	done  chan struct{}
	start time.Time
	// prior is the newest version the proxy answered before this load.
	prior uint64
	// lastBad is when the last failed or wrong answer arrived (Unix ns).
	lastBad atomic.Int64

	// Written by the checking goroutine; read once done is closed.
	requests, failed, wrong, older uint64
	statuses                       map[string]uint64
	examples                       []string
	metrics                        vegeta.Metrics
	answers                        []answerAt
	pending                        []pendingAnswer
	buf                            []byte
}

// answerAt is when an answer naming a version was asked for and received.
type answerAt struct {
	sent, got int64 // Unix ns
	version   uint64
}

// pendingAnswer is a 200 from a version whose generation was not known
// yet (its import's answer had not arrived); it is checked at the end.
type pendingAnswer struct {
	id      promotion.ID
	version uint64
	body    []byte
}

// startLoad starts the load of a drill at h.cfg.Rate requests per second.
func (h *harness) startLoad(seed uint64) *lookupLoad {
	u, _ := url.Parse(h.e.Proxy)
	const conns = 64
	l := &lookupLoad{h: h, done: make(chan struct{}), start: time.Now(), statuses: map[string]uint64{}}
	h.mu.Lock()
	l.prior = h.seen
	h.mu.Unlock()
	l.atk = vegeta.NewAttacker(
		vegeta.Workers(conns),
		vegeta.MaxWorkers(conns),
		vegeta.MaxBody(4<<10),
		vegeta.Client(&http.Client{Transport: &fastTransport{keepVersion: true, client: &fasthttp.HostClient{
			Addr:                     u.Host,
			MaxConns:                 conns,
			MaxIdleConnDuration:      time.Minute,
			NoDefaultUserAgentHeader: true,
			DisablePathNormalizing:   true,
			MaxConnWaitTimeout:       5 * time.Second,
		}, timeout: 5 * time.Second}}),
	)
	tr := newTargeter(LoadConfig{Target: h.e.Proxy, Seed: seed}, h.data.text)
	results := l.atk.Attack(tr.next, vegeta.Rate{Freq: h.cfg.Rate, Per: time.Second}, 0, "faults")
	go func() {
		defer close(l.done)
		for r := range results {
			l.check(r)
		}
	}()
	return l
}

// stop ends the load, checks what could not be checked as it arrived, and
// counts the answers from a version older than one answered before.
func (l *lookupLoad) stop(ctx context.Context) {
	l.atk.Stop()
	<-l.done
	l.metrics.Close()
	if len(l.pending) > 0 {
		_, _ = l.h.datasets(ctx) // learns the generations of new versions
		for _, p := range l.pending {
			g, ok := l.h.generation(p.version)
			switch {
			case !ok:
				l.bad(&l.wrong, fmt.Sprintf("200 from version %d, which ingest does not list as one of this run's committed versions", p.version))
			case !bytes.Equal(p.body, expectedBody(nil, p.id, g)):
				l.bad(&l.wrong, fmt.Sprintf("%s from version %d: %q, want %q", p.id, p.version, p.body, expectedBody(nil, p.id, g)))
			}
		}
	}
	older, newest := olderAnswers(l.answers, l.prior)
	l.h.mu.Lock()
	l.h.seen = max(l.h.seen, newest)
	l.h.mu.Unlock()
	if older > 0 {
		l.examples = append(l.examples, fmt.Sprintf("%d answers from a version older than one the proxy had already answered", older))
	}
	l.older = older
}

// check counts and checks one result.
func (l *lookupLoad) check(r *vegeta.Result) {
	l.requests++
	l.metrics.Add(r)
	code := strconv.Itoa(int(r.Code))
	if r.Error != "" && r.Code == 0 {
		code = "error"
	}
	l.statuses[code]++
	id, idErr := promotion.ParseID([]byte(r.URL[len(r.URL)-promotion.IDLen:]))
	var version uint64
	if r.Headers != nil {
		version, _ = strconv.ParseUint(r.Headers.Get(lookup.VersionHeader), 10, 64)
	}
	if r.Code == http.StatusOK || r.Code == http.StatusNotFound {
		l.answers = append(l.answers, answerAt{sent: r.Timestamp.UnixNano(), got: r.End().UnixNano(), version: version})
	}
	switch {
	case idErr != nil:
		l.bad(&l.failed, "cannot tell the id of "+r.URL)
	case r.Code == http.StatusNotFound:
		l.bad(&l.wrong, fmt.Sprintf("404 for %s (version %d), which every version holds", id, version))
	case r.Code != http.StatusOK:
		l.bad(&l.failed, fmt.Sprintf("%d %s %s", r.Code, r.Error, bytes.TrimSpace(r.Body)))
	case version == 0:
		l.bad(&l.wrong, fmt.Sprintf("200 for %s without %s", id, lookup.VersionHeader))
	default:
		g, ok := l.h.generation(version)
		if !ok {
			l.pending = append(l.pending, pendingAnswer{id: id, version: version, body: bytes.Clone(r.Body)})
			return
		}
		l.buf = expectedBody(l.buf[:0], id, g)
		if !bytes.Equal(r.Body, l.buf) {
			l.bad(&l.wrong, fmt.Sprintf("%s from version %d: %q, want %q", id, version, r.Body, l.buf))
		}
	}
}

func (l *lookupLoad) bad(counter *uint64, example string) {
	*counter++
	l.lastBad.Store(time.Now().UnixNano())
	if len(l.examples) < maxExamples {
		l.examples = append(l.examples, example)
	}
}

// olderAnswers counts the answers from a version older than one answered
// before they were asked for (by an earlier load: prior), and returns the
// newest version answered.
func olderAnswers(answers []answerAt, prior uint64) (older uint64, newest uint64) {
	byGot := slices.Clone(answers)
	sort.Slice(byGot, func(i, j int) bool { return byGot[i].got < byGot[j].got })
	// best[i] is the newest version among the first i+1 answers received.
	best := make([]uint64, len(byGot))
	for i, a := range byGot {
		best[i] = a.version
		if i > 0 {
			best[i] = max(best[i], best[i-1])
		}
	}
	newest = prior
	if len(best) > 0 {
		newest = max(newest, best[len(best)-1])
	}
	for _, a := range answers {
		// The answers received before a was sent.
		n := sort.Search(len(byGot), func(i int) bool { return byGot[i].got >= a.sent })
		before := prior
		if n > 0 {
			before = max(before, best[n-1])
		}
		if a.version < before {
			older++
		}
	}
	return older, newest
}

// sweep looks every id of the dataset up through the proxy and returns how
// many did not answer 200 from version v with the row of generation g. An
// id whose lookup fails is asked again a few times; a wrong answer counts
// at once.
func (h *harness) sweep(ctx context.Context, v uint64, g int) (lost int64, examples []string) {
	u, _ := url.Parse(h.e.Proxy)
	const workers = 32
	client := &fasthttp.HostClient{Addr: u.Host, MaxConns: workers, NoDefaultUserAgentHeader: true, MaxIdleConnDuration: time.Minute}
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			var want, uri []byte
			for {
				i := int(next.Add(1) - 1)
				if i >= len(h.data.ids) || ctx.Err() != nil {
					return
				}
				id := h.data.ids[i]
				uri = id.AppendText(append(uri[:0], h.e.Proxy+lookup.PathPrefix...))
				want = expectedBody(want[:0], id, g)
				var problem string
				for try := range 4 {
					if try > 0 {
						time.Sleep(100 * time.Millisecond)
					}
					req.SetRequestURIBytes(uri)
					resp.Reset()
					err := client.DoTimeout(req, resp, 5*time.Second)
					got, _ := strconv.ParseUint(string(resp.Header.Peek(lookup.VersionHeader)), 10, 64)
					switch {
					case err != nil:
						problem = err.Error()
						continue
					case resp.StatusCode() != http.StatusOK && resp.StatusCode() != http.StatusNotFound:
						problem = fmt.Sprintf("%d %s", resp.StatusCode(), bytes.TrimSpace(resp.Body()))
						continue
					case resp.StatusCode() == http.StatusNotFound:
						problem = fmt.Sprintf("404 from version %d", got)
					case got != v:
						problem = fmt.Sprintf("answered from version %d, want %d", got, v)
					case !bytes.Equal(resp.Body(), want):
						problem = fmt.Sprintf("%q, want %q", resp.Body(), want)
					default:
						problem = ""
					}
					break
				}
				if problem != "" {
					mu.Lock()
					lost++
					if len(examples) < maxExamples {
						examples = append(examples, fmt.Sprintf("%s: %s", id, problem))
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		examples = append(examples, "sweep cut short: "+ctx.Err().Error())
	}
	return lost, examples
}
