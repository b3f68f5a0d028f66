package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrUnreachable is wrapped by the errors of a Client that could not
// connect to the server at all.
var ErrUnreachable = errors.New("ingest: server unreachable")

// Phases a Client reports in Progress besides the server's own (such as
// "parsing", "sorting", "ingesting", "activating") and the final job
// states StateSucceeded and StateFailed.
const (
	// PhaseUploading is reported while the file is being sent.
	PhaseUploading = "uploading"
	// PhaseWaiting is reported once the file is sent while the server has
	// not said which phase it is in.
	PhaseWaiting = "waiting"
)

// maxResponseBytes bounds a JSON answer read by a Client; a status carries
// at most a hundred row errors, so this is generous.
const maxResponseBytes = 16 << 20

// ClientConfig configures a Client.
type ClientConfig struct {
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

// DefaultClientConfig returns the settings of promo import for server.
func DefaultClientConfig(server string) ClientConfig {
	return ClientConfig{
		Server:         server,
		PollInterval:   250 * time.Millisecond,
		RequestTimeout: 30 * time.Second,
		MaxPollErrors:  5,
	}
}

// Validate reports the first invalid field of c.
func (c *ClientConfig) Validate() error {
	if _, err := parseServerURL(c.Server); err != nil {
		return err
	}
	switch {
	case c.PollInterval <= 0:
		return fmt.Errorf("ingest: PollInterval must be positive, got %v", c.PollInterval)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("ingest: RequestTimeout must be positive, got %v", c.RequestTimeout)
	case c.MaxPollErrors < 1:
		return fmt.Errorf("ingest: MaxPollErrors must be at least 1, got %d", c.MaxPollErrors)
	case strings.ContainsAny(c.Token, "\r\n"):
		return errors.New("ingest: Token must not contain line breaks")
	}
	return nil
}

// parseServerURL checks that raw is an http or https URL with a host and
// returns it without a trailing slash.
func parseServerURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("ingest: server URL is empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("ingest: invalid server URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("ingest: invalid server URL %q: the scheme must be http or https, e.g. http://127.0.0.1:8080", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("ingest: invalid server URL %q: no host", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("ingest: invalid server URL %q: it must not have a query or fragment", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Client uploads CSV files to a promo server and follows the imports they
// start. It is safe for concurrent use, though the server runs one import
// at a time.
type Client struct {
	cfg  ClientConfig
	base *url.URL
	http *http.Client
}

// NewClient returns a Client for cfg, with the zero fields of cfg set to
// their defaults.
func NewClient(cfg ClientConfig) (*Client, error) {
	def := DefaultClientConfig(cfg.Server)
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

// newTransport returns the default transport with larger buffers, which
// save system calls during an upload, and with connections that let the
// server's answer to an upload it refuses win over the write error.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.WriteBufferSize = 256 << 10
	t.ReadBufferSize = 64 << 10
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newAnswerFirstConn(conn, answerGrace), nil
	}
	return t
}

// answerGrace is how long a failed write waits for the server's answer.
const answerGrace = 2 * time.Second

// answerFirstConn holds back a failed write until the connection's reader
// has read what the server sent, or failed too.
//
// The server answers 401, 409 or 413 to an upload without reading its body
// and closes the connection, so the client's next write fails with
// "connection reset by peer". net/http returns that write error as soon as
// it happens, even when the answer that explains it is already in the
// socket buffer; delaying the write error lets the transport's reader
// deliver the answer first.
type answerFirstConn struct {
	net.Conn
	grace      time.Duration
	readFailed chan struct{}
	readOnce   sync.Once
	closed     chan struct{}
	closeOnce  sync.Once
}

func newAnswerFirstConn(c net.Conn, grace time.Duration) *answerFirstConn {
	return &answerFirstConn{Conn: c, grace: grace, readFailed: make(chan struct{}), closed: make(chan struct{})}
}

func (c *answerFirstConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.readOnce.Do(func() { close(c.readFailed) })
	}
	return n, err
}

func (c *answerFirstConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	var netErr net.Error
	if err != nil && !(errors.As(err, &netErr) && netErr.Timeout()) {
		t := time.NewTimer(c.grace)
		defer t.Stop()
		select {
		case <-c.readFailed:
		case <-c.closed:
		case <-t.C:
		}
	}
	return n, err
}

func (c *answerFirstConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// Progress is a snapshot of an import run by Client.Import.
type Progress struct {
	// Phase is PhaseUploading while the file is sent, then the server's
	// phase of the import (or PhaseWaiting), and at last the job's final
	// state, StateSucceeded or StateFailed.
	Phase string
	// BytesSent is how much of the file has been handed to the network.
	BytesSent int64
	// BytesTotal is the size of the file.
	BytesTotal int64
	// Elapsed is the time since the upload began.
	Elapsed time.Duration
	// Status is the latest status of the import known to the client. Its
	// ImportID is zero until the server's answer (or a poll of
	// GET /imports during the upload) has said which job is ours.
	Status Status
}

// ServerError is an answer of the server that is not a success: the HTTP
// status and the server's JSON error.
type ServerError struct {
	// Method and URL are those of the request.
	Method, URL string
	// StatusCode is the HTTP status, e.g. 401 or 409.
	StatusCode int
	// Message is the server's "error" field, or a description of the
	// answer when it was not JSON.
	Message string
	// Fields are the other fields of the server's JSON error, such as the
	// import_id of the import that is already running with a 409.
	Fields map[string]json.RawMessage
}

// Error returns the status, the message and the context fields on one line.
func (e *ServerError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "server answered %d %s to %s %s", e.StatusCode, http.StatusText(e.StatusCode), e.Method, e.URL)
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if len(e.Fields) > 0 {
		keys := make([]string, 0, len(e.Fields))
		for k := range e.Fields {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteString(" (")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s=%s", k, e.Fields[k])
		}
		b.WriteString(")")
	}
	return b.String()
}

// ImportError reports an import that the server accepted and that failed.
type ImportError struct {
	// Status is the final status of the import, with its row errors.
	Status Status
}

// Error returns the server's reason for the failure.
func (e *ImportError) Error() string {
	msg := e.Status.Error
	if msg == "" {
		msg = "no reason given"
	}
	return fmt.Sprintf("import %d failed: %s", e.Status.ImportID, msg)
}

// unreachableError is a failure to connect to the server.
type unreachableError struct {
	server string
	err    error
}

func (e *unreachableError) Error() string {
	reason := e.err.Error()
	var dnsErr *net.DNSError
	var opErr *net.OpError
	switch {
	case errors.Is(e.err, syscall.ECONNREFUSED):
		reason = "connection refused (is the server running, and on this port?)"
	case errors.As(e.err, &dnsErr):
		reason = "cannot resolve host " + dnsErr.Name + ": " + dnsErr.Err
	case errors.As(e.err, &opErr) && opErr.Timeout():
		reason = "connection timed out"
	case errors.As(e.err, &opErr) && opErr.Err != nil:
		reason = opErr.Err.Error()
	}
	return fmt.Sprintf("cannot connect to the promo server at %s: %s", e.server, reason)
}

func (e *unreachableError) Unwrap() []error { return []error{ErrUnreachable, e.err} }

// Import streams the CSV file at path to the server's POST /process-csv and
// follows the import it starts until it has succeeded or failed. progress,
// if not nil, is called every PollInterval and once at the end, always on
// the goroutine that called Import.
//
// It returns the final status of the import. A failed import returns its
// status and an *ImportError; a refused request (401, 409, 413, ...) a
// *ServerError; a server that cannot be reached an error wrapping
// ErrUnreachable. When ctx ends during the upload, the server discards the
// import; when it ends afterwards, the import goes on on the server and
// Import returns the last status it saw with ctx's error.
func (c *Client) Import(ctx context.Context, path string, opts Options, progress func(Progress)) (Status, error) {
	if opts.MaxRejected < 0 {
		return Status{}, fmt.Errorf("ingest: max_rejected must not be negative, got %d", opts.MaxRejected)
	}
	if progress == nil {
		progress = func(Progress) {}
	}
	f, size, err := openRegular(path)
	if err != nil {
		return Status{}, err
	}
	defer f.Close()

	// The newest import before ours lets the upload find its own job in
	// GET /imports, since the server names it only once the whole body
	// has been read. A server that cannot be reached fails here, before
	// anything is sent.
	baseline, known, err := c.newestImport(ctx)
	if err != nil {
		return Status{}, err
	}
	u := &upload{
		c:        c,
		path:     path,
		size:     size,
		file:     f,
		baseline: baseline,
		known:    known,
		start:    time.Now(),
		progress: progress,
	}
	st, err := u.send(ctx, opts)
	if err != nil {
		return st, err
	}
	return u.follow(ctx, st)
}

// openRegular opens path for an upload, which must be a regular file.
func openRegular(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot open the file to import: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("cannot open the file to import: %w", err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		if fi.IsDir() {
			return nil, 0, fmt.Errorf("cannot import %s: it is a directory, not a file", path)
		}
		return nil, 0, fmt.Errorf("cannot import %s: not a regular file", path)
	}
	return f, fi.Size(), nil
}

// upload is one run of Client.Import.
type upload struct {
	c        *Client
	path     string
	size     int64
	file     *os.File
	sent     atomic.Pointer[atomic.Int64] // bytes read by the latest attempt
	baseline int64                        // the newest import id before ours
	known    bool                         // baseline is known, so ours can be found early
	start    time.Time
	progress func(Progress)
	last     Status // the latest status of our import
}

func (u *upload) report(phase string) {
	u.progress(Progress{
		Phase:      phase,
		BytesSent:  u.sent.Load().Load(),
		BytesTotal: u.size,
		Elapsed:    time.Since(u.start),
		Status:     u.last,
	})
}

type postResult struct {
	st  Status
	err error
}

// send uploads the file and returns the server's first status of the
// import.
func (u *upload) send(ctx context.Context, opts Options) (Status, error) {
	c := u.c
	target := c.base.JoinPath("process-csv")
	if opts.MaxRejected > 0 {
		target.RawQuery = url.Values{"max_rejected": {strconv.FormatInt(opts.MaxRejected, 10)}}.Encode()
	}
	// The transport reads the body only as fast as the connection takes
	// it, so the bytes read are the bytes sent, give or take its buffers.
	body := func() io.ReadCloser {
		n := new(atomic.Int64)
		u.sent.Store(n)
		return io.NopCloser(&countingReader{r: io.NewSectionReader(u.file, 0, u.size), n: n})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), body())
	if err != nil {
		return Status{}, fmt.Errorf("cannot build the upload request: %w", err)
	}
	req.ContentLength = u.size
	// The transport may resend a request that it could not start on a
	// reused connection the server had just closed.
	req.GetBody = func() (io.ReadCloser, error) { return body(), nil }
	if u.size == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "text/csv")
	c.setHeaders(req)

	posted := make(chan postResult, 1)
	go func() {
		var st Status
		err := c.do(req, &st)
		posted <- postResult{st, err}
	}()
	// Look for our job while the upload runs, for its rows per second.
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	seen := make(chan Status, 1)
	if u.known {
		wg.Go(func() { u.watch(wctx, seen) })
	}
	stop := func() {
		stopWatch()
		wg.Wait()
		select {
		case st := <-seen:
			u.last = st
		default:
		}
	}
	tick := time.NewTicker(c.cfg.PollInterval)
	defer tick.Stop()
	for {
		select {
		case st := <-seen:
			u.last = st
		case <-tick.C:
			u.report(PhaseUploading)
		case r := <-posted:
			stop()
			if r.err == nil {
				u.last = r.st
				u.report(PhaseWaiting)
				return r.st, nil
			}
			return u.failed(ctx, r.err)
		}
	}
}

// failed handles an upload that got no success: a refusal, a cancelled ctx
// or a connection that broke. The last may mean the server stopped reading
// because the import failed, so a job found to be ours is followed to its
// end for its reason.
func (u *upload) failed(ctx context.Context, err error) (Status, error) {
	var se *ServerError
	switch {
	case errors.As(err, &se), errors.Is(err, ErrUnreachable):
		return Status{}, err
	case ctx.Err() != nil:
		if u.last.ImportID != 0 {
			return u.last, fmt.Errorf("upload of %s cancelled; the server discards import %d: %w", u.path, u.last.ImportID, context.Cause(ctx))
		}
		return u.last, fmt.Errorf("upload of %s cancelled: %w", u.path, context.Cause(ctx))
	}
	if u.last.ImportID == 0 && u.known {
		if st, ok := u.find(ctx); ok {
			u.last = st
		}
	}
	if u.last.ImportID == 0 {
		return Status{}, fmt.Errorf("cannot upload %s: %w", u.path, err)
	}
	st, ferr := u.follow(ctx, u.last)
	var ie *ImportError
	if errors.As(ferr, &ie) {
		return st, ferr
	}
	return st, fmt.Errorf("cannot upload %s (import %d): %w", u.path, u.last.ImportID, err)
}

// watch polls the server until ctx ends, sending the latest status of our
// import to seen: GET /imports until the job shows up, then its own
// status, which is smaller.
func (u *upload) watch(ctx context.Context, seen chan Status) {
	var id int64
	interval := max(u.c.cfg.PollInterval, time.Second)
	t := time.NewTimer(u.c.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A failed poll only means "not now": the next one tries again.
		var st Status
		var ok bool
		if id == 0 {
			st, ok = u.find(ctx)
		} else {
			var err error
			st, err = u.c.Status(ctx, id)
			ok = err == nil
		}
		if ok {
			id = st.ImportID
			interval = u.c.cfg.PollInterval
			select {
			case <-seen:
			default:
			}
			seen <- st
		}
		t.Reset(interval)
	}
}

// find looks for our import in GET /imports: the newest upload of our
// size started after the baseline. The server runs one import at a time,
// so another upload of the same size in that window would have made ours
// fail with 409. A failed request finds nothing.
func (u *upload) find(ctx context.Context) (Status, bool) {
	list, err := u.c.Imports(ctx)
	if err != nil {
		return Status{}, false
	}
	for _, st := range list {
		if st.ImportID > u.baseline && st.Source == "upload" && st.BytesTotal != nil && *st.BytesTotal == u.size {
			return st, true
		}
	}
	return Status{}, false
}

// follow polls the status of the import of st until it has finished.
func (u *upload) follow(ctx context.Context, st Status) (Status, error) {
	u.last = st
	fails := 0
	var lastErr error
	t := time.NewTimer(u.c.cfg.PollInterval)
	defer t.Stop()
	for !finished(u.last.State) {
		select {
		case <-ctx.Done():
			return u.last, fmt.Errorf("stopped following import %d, which goes on on the server (GET %s): %w",
				u.last.ImportID, u.c.base.JoinPath("imports", strconv.FormatInt(u.last.ImportID, 10)), context.Cause(ctx))
		case <-t.C:
		}
		st, err := u.c.Status(ctx, u.last.ImportID)
		var se *ServerError
		switch {
		case err == nil:
			u.last, fails = st, 0
			u.report(phaseOf(st))
		case ctx.Err() != nil:
			continue
		case errors.As(err, &se) && se.StatusCode == http.StatusNotFound:
			return u.last, fmt.Errorf("lost import %d: the server no longer knows it (restarted?): %w", u.last.ImportID, err)
		default:
			fails++
			lastErr = err
			if fails >= u.c.cfg.MaxPollErrors {
				return u.last, fmt.Errorf("cannot follow import %d after %d attempts: %w", u.last.ImportID, fails, lastErr)
			}
		}
		t.Reset(u.c.cfg.PollInterval)
	}
	u.report(u.last.State)
	if u.last.State == StateFailed {
		return u.last, &ImportError{Status: u.last}
	}
	return u.last, nil
}

func finished(state string) bool { return state == StateSucceeded || state == StateFailed }

func phaseOf(st Status) string {
	switch {
	case finished(st.State):
		return st.State
	case st.Phase != "":
		return st.Phase
	}
	return PhaseWaiting
}

// Status returns the status of import id, from GET /imports/{id}.
func (c *Client) Status(ctx context.Context, id int64) (Status, error) {
	var st Status
	err := c.get(ctx, c.base.JoinPath("imports", strconv.FormatInt(id, 10)), &st)
	return st, err
}

// Imports returns the imports the server remembers, newest first, from
// GET /imports.
func (c *Client) Imports(ctx context.Context) ([]Status, error) {
	var out struct {
		Imports []Status `json:"imports"`
	}
	err := c.get(ctx, c.base.JoinPath("imports"), &out)
	return out.Imports, err
}

// newestImport returns the id of the newest import the server remembers,
// and whether it could tell: a server without GET /imports does not stop
// an upload, it only hides the job until the upload is done.
func (c *Client) newestImport(ctx context.Context) (int64, bool, error) {
	list, err := c.Imports(ctx)
	var se *ServerError
	switch {
	case errors.As(err, &se):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	}
	var id int64
	for _, st := range list {
		id = max(id, st.ImportID)
	}
	return id, true, nil
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

func newServerError(req *http.Request, code int, body []byte) *ServerError {
	e := &ServerError{Method: req.Method, URL: req.URL.Redacted(), StatusCode: code}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) == nil {
		if raw, ok := fields["error"]; ok {
			if json.Unmarshal(raw, &e.Message) != nil {
				e.Message = string(raw)
			}
			delete(fields, "error")
			if len(fields) > 0 {
				e.Fields = fields
			}
			return e
		}
	}
	// Not one of ours: a proxy's page, say. Its start is enough.
	msg := string(bytes.TrimSpace(body))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	e.Message = strings.Join(strings.Fields(msg), " ")
	return e
}

// countingReader counts the bytes read from r into n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
