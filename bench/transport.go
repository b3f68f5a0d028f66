package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/client"
	"github.com/promotion-service/promo/lookup"
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
	c       *client.Client
	timeout time.Duration
}

var foundBody = []byte(`{}`)

func (t *clientTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(r.Context(), t.timeout)
	defer cancel()
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
