package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/client"
	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// fastTransport is an http.RoundTripper over fasthttp's client. vegeta
// paces and records the attack through net/http's interfaces; sending the
// requests with fasthttp halves the generator's CPU per request, which on
// a 2-core machine decides whether the generator or the server is the
// bottleneck.
type fastTransport struct {
	client  *fasthttp.HostClient
	timeout time.Duration
	// keepVersion copies the answer's X-Dataset-Version into the
	// response's header (the fault drills check it; load tests need not
	// pay for the header).
	keepVersion bool
}

func newFastTransport(addr string, tls bool, conns int, timeout time.Duration) *fastTransport {
	return &fastTransport{
		client: &fasthttp.HostClient{
			Addr:                          addr,
			IsTLS:                         tls,
			MaxConns:                      conns,
			MaxIdleConnDuration:           time.Minute,
			ReadBufferSize:                16 << 10,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
			MaxConnWaitTimeout:            timeout,
		},
		timeout: timeout,
	}
}

// RoundTrip implements http.RoundTripper, for requests with a body (a
// batch) or without.
func (t *fastTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(r.Method)
	req.SetRequestURI(r.URL.RequestURI())
	req.Header.SetHost(r.URL.Host)
	if r.Body != nil {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		req.SetBodyRaw(body)
		req.Header.SetContentType("application/json")
	}
	if err := t.client.DoTimeout(req, resp, t.timeout); err != nil {
		return nil, err
	}
	h := http.Header{}
	if v := resp.Header.Peek(lookup.VersionHeader); t.keepVersion && len(v) > 0 {
		h.Set(lookup.VersionHeader, string(v))
	}
	return response(r, resp.StatusCode(), h, append([]byte(nil), resp.Body()...)), nil
}

// response is the http.Response of code and body to r.
func response(r *http.Request, code int, h http.Header, body []byte) *http.Response {
	return &http.Response{
		Status:        strconv.Itoa(code) + " " + http.StatusText(code),
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       r,
	}
}

// clientTransport is an http.RoundTripper over the Go client library: the
// id of GET /promotions/{id} (or the ids of a batch) go to client.Get (or
// BatchGet), which routes them itself; the URL's host is not used. An
// answer is 200, 404 for ErrNotFound, or 502 with the client's error.
type clientTransport struct {
	c *client.Client
}

var foundBody = []byte(`{}`)

func (t *clientTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	// The client bounds its own tries and retries (TryTimeout, Retries).
	ctx := r.Context()
	path := r.URL.Path
	if path == lookup.BatchPath {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		pids, berr := lookup.ParseBatch(body, nil)
		if berr != nil {
			return response(r, berr.Status, nil, []byte(berr.Error())), nil
		}
		ids := make([]string, len(pids))
		for i, id := range pids {
			ids[i] = id.String()
		}
		found, missing, err := t.c.BatchGet(ctx, ids)
		if err != nil {
			return nil, err
		}
		return response(r, http.StatusOK, nil, fmt.Appendf(nil, `{"found":%d,"missing":%d}`, len(found), len(missing))), nil
	}
	id, ok := strings.CutPrefix(path, lookup.PathPrefix)
	if !ok {
		return response(r, http.StatusNotFound, nil, nil), nil
	}
	_, err := t.c.Get(ctx, id)
	switch {
	case err == nil:
		return response(r, http.StatusOK, nil, foundBody), nil
	case errors.Is(err, client.ErrNotFound):
		return response(r, http.StatusNotFound, nil, nil), nil
	case errors.Is(err, client.ErrBadID):
		return response(r, http.StatusBadRequest, nil, []byte(err.Error())), nil
	}
	return nil, err
}

// ownerTransport is a fasthttp client that sends each lookup straight to
// the primary owner of its id, by the ring of GET /cluster: the baseline
// of the client library, with no routing logic beyond the ring.
type ownerTransport struct {
	ring  *ring.Assignment
	nodes []*fastTransport // indexed like ring.Nodes()
}

// newOwnerTransport reads the ring from target's GET /cluster.
func newOwnerTransport(ctx context.Context, target string, conns int, timeout time.Duration) (*ownerTransport, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(target, "/")+"/cluster", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: cannot read the ring: %w", err)
	}
	defer resp.Body.Close()
	var cl ring.Cluster
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: GET %s/cluster: status %d (--via owner needs a read node or the proxy)", target, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&cl); err != nil {
		return nil, fmt.Errorf("bench: GET %s/cluster: %w", target, err)
	}
	a, urls, err := cl.Ring()
	if err != nil {
		return nil, err
	}
	t := &ownerTransport{ring: a}
	for _, name := range a.Nodes() {
		u, err := url.Parse(urls[name])
		if err != nil {
			return nil, err
		}
		t.nodes = append(t.nodes, newFastTransport(u.Host, u.Scheme == "https", conns, timeout))
	}
	return t, nil
}

func (t *ownerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	raw, ok := strings.CutPrefix(r.URL.Path, lookup.PathPrefix)
	id, err := promotion.ParseID([]byte(raw))
	if !ok || err != nil {
		return nil, fmt.Errorf("bench: --via owner routes single lookups only, not %s", r.URL.Path)
	}
	n := t.nodes[t.ring.OwnersOf(id)[0]]
	r2 := *r
	u := *r.URL
	u.Host = n.client.Addr
	r2.URL = &u
	return n.RoundTrip(&r2)
}
