package ingestclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxResponseBytes bounds a JSON answer read by a Client; a status carries
// at most a hundred row errors, so this is generous.
const maxResponseBytes = 16 << 20

// Config configures a Client.
type Config struct {
	// Server is the base URL of a promo server that serves
	// POST /process-csv, e.g. http://127.0.0.1:8080.
	Server string
	// Token, when set, is sent as "Authorization: Bearer <Token>".
	Token string
	// HTTP sends the requests. Nil selects a client with connect timeouts
	// and no overall timeout, since an upload may take hours; it must not
	// have Timeout set for large files.
	HTTP *http.Client
	// PollInterval is how often progress is reported and the import's
	// status asked for (default 250 ms).
	PollInterval time.Duration
	// RequestTimeout bounds each status request, not the upload
	// (default 30 s).
	RequestTimeout time.Duration
	// MaxPollErrors is how many status requests in a row may fail before
	// the Client gives up following an accepted import (default 5).
	MaxPollErrors int
}

// DefaultConfig returns the settings of promo import for server.
func DefaultConfig(server string) Config {
	return Config{
		Server:         server,
		PollInterval:   250 * time.Millisecond,
		RequestTimeout: 30 * time.Second,
		MaxPollErrors:  5,
	}
}

// Validate reports the first invalid field of c.
func (c *Config) Validate() error {
	if _, err := parseServerURL(c.Server); err != nil {
		return err
	}
	switch {
	case c.PollInterval <= 0:
		return fmt.Errorf("ingestclient: PollInterval must be positive, got %v", c.PollInterval)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("ingestclient: RequestTimeout must be positive, got %v", c.RequestTimeout)
	case c.MaxPollErrors < 1:
		return fmt.Errorf("ingestclient: MaxPollErrors must be at least 1, got %d", c.MaxPollErrors)
	case strings.ContainsAny(c.Token, "\r\n"):
		return errors.New("ingestclient: Token must not contain line breaks")
	}
	return nil
}

// parseServerURL checks that raw is an http or https URL with a host and
// returns it without a trailing slash.
func parseServerURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("ingestclient: Server is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("ingestclient: invalid Server %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("ingestclient: invalid Server %q: the scheme must be http or https, e.g. http://127.0.0.1:8080", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("ingestclient: invalid Server %q: no host", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("ingestclient: invalid Server %q: it must not have a query or fragment", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Client uploads CSV files to a promo server and follows the imports they
// start. It is safe for concurrent use, though the server runs one import
// at a time.
type Client struct {
	cfg  Config
	base *url.URL
	http *http.Client
}

// New returns a Client for cfg, with the zero fields of cfg set to
// their defaults.
func New(cfg Config) (*Client, error) {
	def := DefaultConfig(cfg.Server)
	if cfg.PollInterval == 0 {
		cfg.PollInterval = def.PollInterval
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = def.RequestTimeout
	}
	if cfg.MaxPollErrors == 0 {
		cfg.MaxPollErrors = def.MaxPollErrors
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base, _ := parseServerURL(cfg.Server)
	hc := cfg.HTTP
	if hc == nil {
		hc = &http.Client{Transport: newTransport()}
	}
	return &Client{cfg: cfg, base: base, http: hc}, nil
}

func (c *Client) get(ctx context.Context, u *url.URL, v any) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("cannot build request: %w", err)
	}
	c.setHeaders(req)
	return c.do(req, v)
}

func (c *Client) setHeaders(req *http.Request) {
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "promo-import")
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
}

// do sends req and decodes a 2xx JSON answer into v. Other answers become
// a *ServerError, and failures to connect an error wrapping
// ErrUnreachable.
func (c *Client) do(req *http.Request, v any) error {
	resp, err := c.http.Do(req)
	if err != nil {
		var opErr *net.OpError
		if req.Context().Err() == nil && errors.As(err, &opErr) && opErr.Op == "dial" {
			return &unreachableError{server: c.base.String(), err: err}
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the method and URL are said below
		}
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("cannot read the answer to %s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return newServerError(req, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("cannot decode the answer to %s %s (%d bytes of %s): %w",
			req.Method, req.URL.Redacted(), len(body), resp.Header.Get("Content-Type"), err)
	}
	return nil
}
