package bench

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

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

// RoundTrip implements http.RoundTripper for bodiless requests.
func (t *fastTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(r.Method)
	req.SetRequestURI(r.URL.RequestURI())
	req.Header.SetHost(r.URL.Host)
	if err := t.client.DoTimeout(req, resp, t.timeout); err != nil {
		return nil, err
	}
	body := append([]byte(nil), resp.Body()...)
	code := resp.StatusCode()
	h := http.Header{}
	if v := resp.Header.Peek(lookup.VersionHeader); t.keepVersion && len(v) > 0 {
		h.Set(lookup.VersionHeader, string(v))
	}
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
	}, nil
}
