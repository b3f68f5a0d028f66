package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/ingest/csv"
)

// maxFormBytes bounds a url-encoded form or a multipart text field.
const maxFormBytes = 64 << 10

// HandleProcessCSV serves POST /process-csv: it starts an import of a file
// in the import directory (form field filename), of the request body
// (text/csv or application/octet-stream), or of the multipart field file.
// It answers 202 with the job's status, or with ?wait=true the final
// status: 200, or 422 when rows were rejected.
func (s *Service) HandleProcessCSV(ctx *fasthttp.RequestCtx) {
	// Every answer that closes the connection may leave part of the body
	// unread (a refusal before reading it, an import that stopped
	// early): the client must still read the answer.
	defer func() {
		if ctx.Response.Header.ConnectionClose() {
			httpserver.CloseLingering(ctx)
		}
	}()
	opts, wait, ok := s.importOptions(ctx)
	if !ok {
		return
	}
	if j := s.Running(); j != nil {
		s.busy(ctx, j)
		return
	}
	in, ok := s.input(ctx)
	if !ok {
		return
	}
	job, err := s.Start(ctx, in, opts)
	if err != nil {
		if in.Close != nil {
			_ = in.Close()
		}
		ctx.SetConnectionClose()
		var fields []any
		if job != nil {
			// The job failed; its status stays listed.
			fields = []any{"import_id", job.ID(), "status_url", fmt.Sprintf("/imports/%d", job.ID())}
		}
		switch {
		case errors.Is(err, ErrBusy):
			// Busy elsewhere: another process holds the store's lock.
			s.busy(ctx, s.Running())
		case errors.Is(err, ErrCancelled):
			httpserver.Error(ctx, fasthttp.StatusConflict, "the import was cancelled before it started", fields...)
		case errors.Is(err, ErrClosed):
			httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, "the server is shutting down", fields...)
		case errors.Is(err, syscall.ENOSPC):
			httpserver.Error(ctx, fasthttp.StatusInsufficientStorage, "cannot start import: "+err.Error(), fields...)
		case errors.Is(err, ErrUnavailable):
			ctx.Response.Header.Set("Retry-After", "5")
			httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, "cannot start import: "+err.Error(), fields...)
		default:
			httpserver.Error(ctx, fasthttp.StatusInternalServerError, "cannot start import: "+err.Error(), fields...)
		}
		return
	}
	if in.upload {
		// An uploaded body must be consumed before the handler returns.
		<-job.InputDone()
		if job.parseErr != nil {
			// Stopped early: the rest of the body is not worth reading.
			ctx.SetConnectionClose()
		}
	}
	if wait {
		<-job.Done()
		st := job.Status()
		httpserver.WriteJSON(ctx, statusCode(job.Err()), st)
		return
	}
	st := job.Status()
	ctx.Response.Header.Set("Location", st.StatusURL)
	httpserver.WriteJSON(ctx, fasthttp.StatusAccepted, st)
}

// statusCode maps an import's outcome to the HTTP status of ?wait=true.
func statusCode(err error) int {
	var netErr net.Error
	switch {
	case err == nil:
		return fasthttp.StatusOK
	case errors.Is(err, ErrHeld):
		return fasthttp.StatusConflict
	case errors.Is(err, csv.ErrTooManyRejected), errors.Is(err, ErrNoRows), errors.Is(err, csv.ErrRecordTooLong),
		errors.Is(err, ErrTooManyDuplicates):
		return fasthttp.StatusUnprocessableEntity
	case errors.Is(err, ErrUploadTooLarge):
		return fasthttp.StatusRequestEntityTooLarge
	case errors.Is(err, syscall.ENOSPC):
		return fasthttp.StatusInsufficientStorage
	case errors.Is(err, ErrUploadTooSlow):
		return fasthttp.StatusRequestTimeout
	case errors.Is(err, errUpload), errors.As(err, &netErr):
		return fasthttp.StatusBadRequest
	case errors.Is(err, ErrCancelled):
		return fasthttp.StatusConflict
	case errors.Is(err, ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, ErrUnavailable):
		return fasthttp.StatusServiceUnavailable
	}
	return fasthttp.StatusInternalServerError
}

var errUpload = errors.New("ingest: upload interrupted")

// busy answers 409 for an import that runs (j), or that is starting or
// runs in another process (j nil).
func (s *Service) busy(ctx *fasthttp.RequestCtx, j *Job) {
	ctx.SetConnectionClose()
	if j == nil {
		httpserver.Error(ctx, fasthttp.StatusConflict, "an import is already running; retry when it has finished")
		return
	}
	httpserver.Error(ctx, fasthttp.StatusConflict, "an import is already running; retry when it has finished",
		"import_id", j.ID(), "status_url", fmt.Sprintf("/imports/%d", j.ID()))
}

func (s *Service) importOptions(ctx *fasthttp.RequestCtx) (opts Options, wait, ok bool) {
	q := ctx.QueryArgs()
	if v := q.Peek("wait"); v != nil {
		b, err := strconv.ParseBool(string(v))
		if err != nil && len(v) > 0 {
			ctx.SetConnectionClose()
			httpserver.Error(ctx, fasthttp.StatusBadRequest, "query parameter wait must be true or false", "wait", clip(string(v), maxNameBytes))
			return opts, false, false
		}
		wait = b || len(v) == 0
	}
	if v := q.Peek("max_rejected"); v != nil {
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || n < 0 {
			ctx.SetConnectionClose()
			httpserver.Error(ctx, fasthttp.StatusBadRequest, "query parameter max_rejected must be a non-negative integer", "max_rejected", clip(string(v), maxNameBytes))
			return opts, false, false
		}
		opts.MaxRejected = n
	}
	return opts, wait, true
}

// input finds the CSV of a request. On failure it has answered.
func (s *Service) input(ctx *fasthttp.RequestCtx) (Input, bool) {
	bodyless := ctx.Request.Header.ContentLength() == 0 || ctx.Request.Header.ContentLength() == -2
	if name := ctx.QueryArgs().Peek("filename"); name != nil {
		if !bodyless {
			ctx.SetConnectionClose()
			httpserver.Error(ctx, fasthttp.StatusBadRequest, "filename in the query and a request body: send one or the other")
			return Input{}, false
		}
		return s.openFile(ctx, string(name))
	}
	if bodyless {
		httpserver.Error(ctx, fasthttp.StatusBadRequest,
			"empty request: send filename=<path in the import directory> as a form, or the CSV itself with Content-Type: text/csv")
		return Input{}, false
	}
	ct := string(ctx.Request.Header.ContentType())
	mt, params, err := mime.ParseMediaType(ct)
	if ct == "" {
		mt, err = "text/csv", nil
	}
	if err != nil {
		ctx.SetConnectionClose()
		httpserver.Error(ctx, fasthttp.StatusUnsupportedMediaType, "malformed Content-Type", "content_type", clip(ct, maxNameBytes))
		return Input{}, false
	}
	if n := ctx.Request.Header.ContentLength(); int64(n) > s.cfg.MaxUploadBytes {
		ctx.SetConnectionClose()
		httpserver.Error(ctx, fasthttp.StatusRequestEntityTooLarge, "the upload exceeds the size limit",
			"limit_bytes", s.cfg.MaxUploadBytes, "content_length", n)
		return Input{}, false
	}
	body := s.body(ctx)
	switch mt {
	case "application/x-www-form-urlencoded":
		raw, err := io.ReadAll(io.LimitReader(body, maxFormBytes+1))
		if err != nil {
			ctx.SetConnectionClose()
			httpserver.Error(ctx, fasthttp.StatusBadRequest, "cannot read form: "+err.Error())
			return Input{}, false
		}
		if len(raw) > maxFormBytes {
			ctx.SetConnectionClose()
			httpserver.Error(ctx, fasthttp.StatusRequestEntityTooLarge,
				"form body too large: send filename=<path> as a form, or the CSV itself with Content-Type: text/csv")
			return Input{}, false
		}
		form, err := url.ParseQuery(string(raw))
		if err != nil || !form.Has("filename") {
			httpserver.Error(ctx, fasthttp.StatusBadRequest,
				"expected form field filename=<path inside the import directory>; to send the CSV itself use Content-Type: text/csv")
			return Input{}, false
		}
		return s.openFile(ctx, form.Get("filename"))
	case "multipart/form-data":
		return s.multipartInput(ctx, body, params["boundary"])
	case "text/csv", "application/csv", "text/plain", "application/octet-stream":
		size := int64(ctx.Request.Header.ContentLength())
		if size < 0 {
			size = -1
		}
		return Input{Source: "upload", Reader: body, Size: size, Interrupt: body.interrupt, upload: true}, true
	}
	ctx.SetConnectionClose()
	httpserver.Error(ctx, fasthttp.StatusUnsupportedMediaType,
		"unsupported Content-Type: use application/x-www-form-urlencoded (filename=...), text/csv, application/octet-stream or multipart/form-data (field file)",
		"content_type", clip(ct, maxNameBytes))
	return Input{}, false
}

func (s *Service) multipartInput(ctx *fasthttp.RequestCtx, body *uploadReader, boundary string) (Input, bool) {
	if boundary == "" {
		ctx.SetConnectionClose()
		httpserver.Error(ctx, fasthttp.StatusBadRequest, "multipart body without boundary")
		return Input{}, false
	}
	delim := "\n--" + boundary + "--"
	watch := &closeWatch{r: body, delim: []byte(delim), tail: make([]byte, 0, 2*len(delim))}
	mr := multipart.NewReader(watch, boundary)
	for {
		part, err := mr.NextPart()
		if err != nil {
			ctx.SetConnectionClose()
			msg := "multipart body has no field file (the CSV) or filename (a path in the import directory)"
			if !errors.Is(err, io.EOF) {
				msg = clip("cannot read multipart body: "+err.Error(), maxErrorBytes)
			}
			httpserver.Error(ctx, fasthttp.StatusBadRequest, msg)
			return Input{}, false
		}
		switch part.FormName() {
		case "file":
			src := "upload"
			if name := part.FileName(); name != "" {
				src = "upload:" + clip(name, maxNameBytes)
			}
			size := int64(-1)
			if ctx.Request.Header.ContentLength() > 0 {
				// The part is most of the body; an estimate beats none.
				size = int64(ctx.Request.Header.ContentLength())
			}
			in := &multipartFile{mr: mr, part: part, watch: watch}
			return Input{Source: src, Reader: in, Size: size, Close: part.Close, Interrupt: body.interrupt, upload: true}, true
		case "filename":
			raw, err := io.ReadAll(io.LimitReader(part, maxFormBytes))
			if err != nil {
				ctx.SetConnectionClose()
				httpserver.Error(ctx, fasthttp.StatusBadRequest, "cannot read multipart field filename: "+err.Error())
				return Input{}, false
			}
			ctx.SetConnectionClose()
			return s.openFile(ctx, strings.TrimSpace(string(raw)))
		}
	}
}

// multipartFile reads the file part of a multipart body and ends cleanly
// only when the body's closing boundary has arrived: a body cut inside
// the part, or after it, fails instead of importing what came.
type multipartFile struct {
	mr    *multipart.Reader
	part  *multipart.Part
	watch *closeWatch
}

func (m *multipartFile) Read(p []byte) (int, error) {
	n, err := m.part.Read(p)
	if err != io.EOF {
		if err != nil {
			err = fmt.Errorf("%w: %v", errUpload, err)
		}
		return n, err
	}
	for {
		next, err := m.mr.NextPart()
		if err == io.EOF && !m.watch.closed {
			// NextPart's io.EOF also means a body that ended right
			// after a boundary line, where a part's headers were due.
			return n, fmt.Errorf("%w: multipart body ended before its closing boundary", errUpload)
		}
		if err == io.EOF {
			return n, io.EOF
		}
		if err != nil {
			return n, fmt.Errorf("%w: multipart body ended before its closing boundary: %v", errUpload, err)
		}
		// A field after the file: read past it.
		if _, err := io.Copy(io.Discard, io.LimitReader(next, maxFormBytes)); err != nil {
			return n, fmt.Errorf("%w: %v", errUpload, err)
		}
	}
}

// closeWatch passes a multipart body through and records whether its
// close delimiter (a line end, "--", the boundary, "--") has gone by:
// multipart.Reader ends with the same io.EOF whether it met the close
// delimiter or the body ended after a boundary line.
type closeWatch struct {
	r      io.Reader
	delim  []byte
	tail   []byte // the last len(delim)-1 bytes read
	closed bool
}

func (w *closeWatch) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if n > 0 && !w.closed {
		w.scan(p[:n])
	}
	return n, err
}

func (w *closeWatch) scan(b []byte) {
	keep := len(w.delim) - 1
	// A delimiter split between the previous read and this one.
	joint := append(w.tail, b[:min(len(b), keep)]...)
	if bytes.Contains(joint, w.delim) || bytes.Contains(b, w.delim) {
		w.closed = true
		return
	}
	if len(b) >= keep {
		w.tail = append(w.tail[:0], b[len(b)-keep:]...)
		return
	}
	w.tail = append(w.tail[:0], joint[max(0, len(joint)-keep):]...)
}

// body returns the request body as a stream that fails when the client
// sends nothing for UploadIdleTimeout, too slowly (UploadMinRate), for
// longer than UploadTimeout, or more than MaxUploadBytes.
func (s *Service) body(ctx *fasthttp.RequestCtx) *uploadReader {
	r := ctx.RequestBodyStream()
	if r == nil {
		r = strings.NewReader(string(ctx.Request.Body()))
	}
	length := int64(ctx.Request.Header.ContentLength())
	if length < 0 {
		length = -1
	}
	u := &uploadReader{r: r, length: length, conn: ctx.Conn(), idle: s.cfg.UploadIdleTimeout,
		max: s.cfg.MaxUploadBytes, minRate: s.cfg.UploadMinRate}
	if s.cfg.UploadTimeout > 0 {
		u.timeout = s.cfg.UploadTimeout
		u.deadline = time.Now().Add(s.cfg.UploadTimeout)
	}
	return u
}

type uploadReader struct {
	r       io.Reader
	length  int64 // Content-Length, or -1 for a chunked body
	conn    net.Conn
	idle    time.Duration
	n       int64
	max     int64
	stopped atomic.Bool

	// The rate is measured over the time spent waiting for the client,
	// not the time between reads: an import slower than its client
	// leaves the data waiting in socket buffers, and reads return at
	// once.
	minRate  int64 // bytes per second over each idle of waiting; 0: off
	waited   time.Duration
	received int64 // during waited

	timeout  time.Duration
	deadline time.Time // of the whole upload; zero: none
}

// errStopped ends the Read of an upload the import no longer wants.
var errStopped = errors.New("ingest: import stopped reading the upload")

func (u *uploadReader) Read(p []byte) (int, error) {
	start := time.Now()
	if !u.deadline.IsZero() && !start.Before(u.deadline) {
		return 0, u.tooLong()
	}
	if u.conn != nil {
		d := start.Add(u.idle)
		if !u.deadline.IsZero() && u.deadline.Before(d) {
			d = u.deadline
		}
		_ = u.conn.SetReadDeadline(d)
	}
	// Checked after the deadline is set, so that a concurrent interrupt
	// either is seen here or moves the deadline to the past itself.
	if u.stopped.Load() {
		return 0, errStopped
	}
	n, err := u.r.Read(p)
	u.n += int64(n)
	if err == nil && u.minRate > 0 {
		u.waited += time.Since(start)
		u.received += int64(n)
		if u.waited >= u.idle {
			if float64(u.received) < float64(u.minRate)*u.waited.Seconds() {
				return n, fmt.Errorf("%w: the client sent %d bytes in %.1fs of waiting for it, less than the minimum of %d bytes/s",
					ErrUploadTooSlow, u.received, u.waited.Seconds(), u.minRate)
			}
			u.waited, u.received = 0, 0
		}
	}
	switch {
	case u.n > u.max:
		return n, ErrUploadTooLarge
	case err == io.EOF && u.length >= 0 && u.n < u.length:
		return n, fmt.Errorf("%w: the body ended after %d of its %d bytes", errUpload, u.n, u.length)
	case err != nil && err != io.EOF && !u.deadline.IsZero() && !time.Now().Before(u.deadline) && !u.stopped.Load():
		return n, u.tooLong()
	case err != nil && err != io.EOF:
		// %v, not %w: an io.ErrUnexpectedEOF of a cut connection must not
		// look like the end of the input.
		return n, fmt.Errorf("%w: %v", errUpload, err)
	}
	return n, err
}

func (u *uploadReader) tooLong() error {
	return fmt.Errorf("%w: the upload did not end within %v (%d bytes received)", ErrUploadTooSlow, u.timeout, u.n)
}

// interrupt makes a blocked Read return and every later one fail.
func (u *uploadReader) interrupt() {
	u.stopped.Store(true)
	if u.conn != nil {
		_ = u.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// resolveDir returns dir as an absolute path with symlinks resolved.
func resolveDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("cannot resolve import directory %q: %w", dir, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("cannot resolve import directory %q: %w", dir, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("cannot use import directory %q: %w", dir, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("import directory %q is not a directory", dir)
	}
	return real, nil
}

// within reports whether path is root or below it; both are clean and
// absolute.
func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// resolve returns path with every symbolic link of its existing part
// resolved, and the part that does not exist (or cannot be looked at)
// appended as it is: where path leads, whether or not it exists. Unlike
// filepath.EvalSymlinks, it follows a link whose target is missing, so
// that the answer for a name outside the import directory never depends
// on what exists there. path is absolute and clean.
func resolve(path string) (string, error) {
	const maxLinks = 255
	links := 0
	cur := "/"
	rest := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		if err != nil {
			// Missing, not a directory, or not searchable: nothing below
			// can be a link we could follow.
			return filepath.Join(append([]string{next}, rest...)...), nil
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return "", errors.New("too many levels of symbolic links")
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return cur, nil
}

// openFile opens a file named by a client, which must resolve, symlinks
// included, to a regular file inside the import directory. Where the name
// leads is decided before anything there is looked at: a name that leads
// outside is refused with 403 whether or not the file exists. On failure
// it has answered 400, 403 or 404.
func (s *Service) openFile(ctx *fasthttp.RequestCtx, name string) (Input, bool) {
	fail := func(status int, msg string) (Input, bool) {
		httpserver.Error(ctx, status, msg, "filename", clip(name, maxNameBytes))
		return Input{}, false
	}
	if name == "" || strings.IndexByte(name, 0) >= 0 {
		return fail(fasthttp.StatusBadRequest, "filename must name a file in the import directory")
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(s.root, path)
	}
	path = filepath.Clean(path)
	real, err := resolve(path)
	switch {
	case err != nil:
		return fail(fasthttp.StatusForbidden, "cannot resolve filename: "+err.Error())
	case !within(s.root, real) && within(s.root, path):
		return fail(fasthttp.StatusForbidden, "filename resolves outside the import directory through a symbolic link")
	case !within(s.root, real):
		return fail(fasthttp.StatusForbidden, "filename is outside the import directory")
	}
	rel, err := filepath.Rel(s.root, real)
	if err != nil {
		return fail(fasthttp.StatusForbidden, "filename is outside the import directory")
	}
	// Opening through os.Root refuses a symlink swapped in since the
	// check above.
	root, err := os.OpenRoot(s.root)
	if err != nil {
		return fail(fasthttp.StatusInternalServerError, "cannot open import directory: "+err.Error())
	}
	defer root.Close()
	// O_NONBLOCK: opening a named pipe must not block the handler.
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail(fasthttp.StatusNotFound, "file not found in the import directory")
	case errors.Is(err, fs.ErrPermission):
		return fail(fasthttp.StatusForbidden, "permission denied")
	case err != nil:
		return fail(fasthttp.StatusForbidden, "cannot open file: "+err.Error())
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		_ = f.Close()
		if err == nil && fi.IsDir() {
			return fail(fasthttp.StatusBadRequest, "filename is a directory, not a file")
		}
		return fail(fasthttp.StatusBadRequest, "filename is not a regular file")
	}
	return Input{Source: "file:" + clip(filepath.ToSlash(rel), maxNameBytes), Reader: f, Size: fi.Size(), Close: f.Close}, true
}

// HandleImports serves GET /imports: the remembered imports, newest first.
func (s *Service) HandleImports(ctx *fasthttp.RequestCtx) {
	jobs := s.Jobs()
	out := struct {
		Imports []Status `json:"imports"`
	}{Imports: make([]Status, 0, len(jobs))}
	for _, j := range jobs {
		out.Imports = append(out.Imports, s.readerStatus(ctx, j))
	}
	httpserver.WriteJSON(ctx, fasthttp.StatusOK, out)
}

// readerStatus returns the status of j as the reader of ctx may see it:
// when a token is configured and the request does not carry it, the
// rejected values (the file's content) are left out; line, field and
// reason stay.
func (s *Service) readerStatus(ctx *fasthttp.RequestCtx, j *Job) Status {
	st := j.Status()
	if s.cfg.IngestToken == "" || httpserver.HasToken(ctx, s.cfg.IngestToken) {
		return st
	}
	for i := range st.Errors { // a copy: Status snapshots the errors
		st.Errors[i].Value = ""
	}
	return st
}

// importID parses the {id} of a route; on failure it has answered 400.
func importID(ctx *fasthttp.RequestCtx) (int64, bool) {
	raw, _ := ctx.UserValue("id").(string)
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id < 1 {
		httpserver.Error(ctx, fasthttp.StatusBadRequest, "import id must be a positive integer", "import_id", clip(raw, maxNameBytes))
		return 0, false
	}
	return id, true
}

// unknownImport answers 404 for import id.
func (s *Service) unknownImport(ctx *fasthttp.RequestCtx, id int64) {
	httpserver.Error(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such import (the last %d are remembered)", s.cfg.KeepJobs), "import_id", id)
}

// HandleImport serves GET /imports/{id}.
func (s *Service) HandleImport(ctx *fasthttp.RequestCtx) {
	id, ok := importID(ctx)
	if !ok {
		return
	}
	j, ok := s.Job(id)
	if !ok {
		s.unknownImport(ctx, id)
		return
	}
	httpserver.WriteJSON(ctx, fasthttp.StatusOK, s.readerStatus(ctx, j))
}

// cancelWait is how long DELETE /imports/{id} waits for the import to end.
const cancelWait = 5 * time.Second

// HandleCancel serves DELETE /imports/{id}: it cancels a queued or running
// import, which fails and leaves nothing visible. It answers 200 with the
// final status once the import has ended, or 202 with the current one
// when it takes longer than a few seconds; 409 for an import that has
// finished (or that finished before the cancellation could stop it), 404
// for an unknown id.
func (s *Service) HandleCancel(ctx *fasthttp.RequestCtx) {
	id, ok := importID(ctx)
	if !ok {
		return
	}
	j, err := s.Cancel(id)
	switch {
	case errors.Is(err, ErrUnknownImport):
		s.unknownImport(ctx, id)
		return
	case errors.Is(err, ErrFinished):
		st := j.Status()
		httpserver.Error(ctx, fasthttp.StatusConflict, "the import has already finished", "import_id", id, "state", st.State, "status_url", st.StatusURL)
		return
	case err != nil:
		httpserver.Error(ctx, fasthttp.StatusInternalServerError, err.Error(), "import_id", id)
		return
	}
	timer := time.NewTimer(cancelWait)
	defer timer.Stop()
	select {
	case <-j.Done():
	case <-timer.C:
	case <-ctx.Done():
	}
	st := j.Status()
	switch st.State {
	case StateFailed:
		httpserver.WriteJSON(ctx, fasthttp.StatusOK, st)
	case StateSucceeded, StateHeld:
		httpserver.Error(ctx, fasthttp.StatusConflict, "the import finished before it could be cancelled", "import_id", id, "state", st.State,
			"dataset_version", st.DatasetVersion, "status_url", st.StatusURL)
	default:
		ctx.Response.Header.Set("Location", st.StatusURL)
		httpserver.WriteJSON(ctx, fasthttp.StatusAccepted, st)
	}
}

// Router returns the router of a server that exposes the import API,
// counting requests in m: its write routes require IngestToken, and
// POST /process-csv, GET /imports, GET /imports/{id} and
// DELETE /imports/{id} are registered.
// The server adds its own routes.
func (s *Service) Router(m *httpserver.Metrics) *httpserver.Router {
	r := httpserver.NewRouter(m, s.cfg.IngestToken)
	r.Write("/process-csv", s.HandleProcessCSV)
	r.Read("/imports", s.HandleImports)
	r.Read("/imports/{id}", s.HandleImport)
	r.Delete("/imports/{id}", s.HandleCancel)
	return r
}
