package ingestclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/promotion-service/promo/ingest"
)

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
func (c *Client) Import(ctx context.Context, path string, opts ingest.Options, progress func(Progress)) (ingest.Status, error) {
	if opts.MaxRejected < 0 {
		return ingest.Status{}, fmt.Errorf("ingestclient: max_rejected must not be negative, got %d", opts.MaxRejected)
	}
	f, size, err := openRegular(path)
	if err != nil {
		return ingest.Status{}, err
	}
	defer f.Close()
	return c.importFrom(ctx, path, f, size, opts, progress)
}

// ImportReader is Import of a stream, such as standard input, read once
// from r: size is its length in bytes, or -1 when unknown (the body is
// then sent chunked and progress has no total). name names the stream in
// errors. Unlike a file, a stream cannot be sent again, so a connection
// that breaks before the server has read the whole body fails the import.
func (c *Client) ImportReader(ctx context.Context, name string, r io.Reader, size int64, opts ingest.Options, progress func(Progress)) (ingest.Status, error) {
	if opts.MaxRejected < 0 {
		return ingest.Status{}, fmt.Errorf("ingestclient: max_rejected must not be negative, got %d", opts.MaxRejected)
	}
	if size < 0 {
		size = -1
	}
	return c.importFrom(ctx, name, r, size, opts, progress)
}

// importFrom runs an import of r, size bytes or -1 when unknown. When r is
// an io.ReaderAt (a file), the transport may send it again.
func (c *Client) importFrom(ctx context.Context, path string, r io.Reader, size int64, opts ingest.Options, progress func(Progress)) (ingest.Status, error) {
	if progress == nil {
		progress = func(Progress) {}
	}
	// The newest import before ours lets the upload find its own job in
	// GET /imports, since the server names it only once the whole body
	// has been read. A server that cannot be reached fails here, before
	// anything is sent.
	baseline, known, err := c.newestImport(ctx)
	if err != nil {
		return ingest.Status{}, err
	}
	u := &upload{
		c:        c,
		path:     path,
		size:     size,
		src:      r,
		baseline: baseline,
		known:    known,
		start:    time.Now(),
		progress: progress,
	}
	u.sent.Store(new(atomic.Int64))
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
	size     int64                        // -1 when unknown
	src      io.Reader                    // an io.ReaderAt for a file, which can be sent again
	sent     atomic.Pointer[atomic.Int64] // bytes read by the latest attempt
	baseline int64                        // the newest import id before ours
	known    bool                         // baseline is known, so ours can be found early
	start    time.Time
	progress func(Progress)
	last     ingest.Status // the latest status of our import
}

type postResult struct {
	st  ingest.Status
	err error
}

// send uploads the file and returns the server's first status of the
// import.
func (u *upload) send(ctx context.Context, opts ingest.Options) (ingest.Status, error) {
	c := u.c
	target := c.base.JoinPath("process-csv")
	if opts.MaxRejected > 0 {
		target.RawQuery = url.Values{"max_rejected": {strconv.FormatInt(opts.MaxRejected, 10)}}.Encode()
	}
	// The transport reads the body only as fast as the connection takes
	// it, so the bytes read are the bytes sent, give or take its buffers.
	ra, resendable := u.src.(io.ReaderAt)
	resendable = resendable && u.size >= 0
	body := func() io.ReadCloser {
		n := new(atomic.Int64)
		u.sent.Store(n)
		if resendable {
			return io.NopCloser(&countingReader{r: io.NewSectionReader(ra, 0, u.size), n: n})
		}
		return io.NopCloser(&countingReader{r: u.src, n: n})
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), body())
	if err != nil {
		return ingest.Status{}, fmt.Errorf("cannot build the upload request: %w", err)
	}
	req.ContentLength = u.size
	if resendable {
		// The transport may resend a request that it could not start on
		// a reused connection the server had just closed.
		req.GetBody = func() (io.ReadCloser, error) { return body(), nil }
	}
	if u.size == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "text/csv")
	c.setHeaders(req)

	posted := make(chan postResult, 1)
	go func() {
		var st ingest.Status
		err := c.do(req, &st)
		posted <- postResult{st, err}
	}()
	// Look for our job while the upload runs, for its rows per second.
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	seen := make(chan ingest.Status, 1)
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
func (u *upload) failed(ctx context.Context, err error) (ingest.Status, error) {
	var se *ServerError
	switch {
	case errors.As(err, &se), errors.Is(err, ErrUnreachable):
		return ingest.Status{}, err
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
		return ingest.Status{}, fmt.Errorf("cannot upload %s: %w", u.path, err)
	}
	st, ferr := u.follow(ctx, u.last)
	var ie *ImportError
	if errors.As(ferr, &ie) {
		return st, ferr
	}
	return st, fmt.Errorf("cannot upload %s (import %d): %w", u.path, u.last.ImportID, err)
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
