package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"

	"github.com/promotion-service/promo/ingest/csv"
)

// Errors callers branch on.
var (
	// ErrBusy is returned by Start while another import runs.
	ErrBusy = errors.New("ingest: an import is already running")
	// ErrNoRows fails an import in which no row was accepted: an empty
	// file would otherwise replace the whole dataset with nothing.
	ErrNoRows = errors.New("ingest: the file has no valid rows")
	// ErrUploadTooLarge fails an upload beyond Config.MaxUploadBytes.
	ErrUploadTooLarge = errors.New("ingest: upload exceeds the size limit")
	// ErrUploadTooSlow fails an upload slower than Config.UploadMinRate or
	// longer than Config.UploadTimeout.
	ErrUploadTooSlow = errors.New("ingest: upload too slow")
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("ingest: service is shutting down")
	// ErrUnavailable is wrapped by sinks whose backing store cannot be
	// reached; the HTTP API answers 503.
	ErrUnavailable = errors.New("ingest: the write store is unavailable")
	// ErrCancelled fails an import cancelled with Cancel (DELETE
	// /imports/{id}).
	ErrCancelled = errors.New("ingest: import cancelled")
	// ErrUnknownImport is returned by Cancel for an id not remembered.
	ErrUnknownImport = errors.New("ingest: no such import")
	// ErrFinished is returned by Cancel for an import that has finished.
	ErrFinished = errors.New("ingest: the import has already finished")
	// ErrHeld is wrapped, with the reason, by a Batch's Commit whose
	// version was committed but not activated by the activation guard
	// (the min rows ratio): the import ends in StateHeld, and the
	// version serves only once activated on purpose.
	ErrHeld = errors.New("ingest: the new version is held by the activation guard")
	// ErrTooManyDuplicates is wrapped by sinks that cannot remove a file's
	// duplicates in bounded memory: it repeats a few ids a great many
	// times. The HTTP API answers 422.
	ErrTooManyDuplicates = errors.New("ingest: the file repeats its ids too often")
)

// SpaceChecker is implemented by batches that can tell, from the size of
// the input, that the store's disk cannot hold it. Start calls
// ExpectBytes when the size is known (a file, a Content-Length) and fails
// the import at once with its error, before reading anything; an error
// wrapping syscall.ENOSPC answers 507.
type SpaceChecker interface {
	ExpectBytes(size int64) error
}

// Sink stores the rows of imports as new dataset versions.
type Sink interface {
	// Begin starts a new version whose rows come from up to workers
	// goroutines. source describes the input, for the version's metadata.
	Begin(ctx context.Context, source string, workers int) (Batch, error)
}

// Batch is one dataset version being written; the CSV reader adds the
// rows it accepts.
type Batch interface {
	csv.RowSink
	// Version returns the version being built.
	Version() uint64
	// Commit makes the version durable and current. It returns the number
	// of distinct rows and of duplicates dropped; on error the batch is
	// aborted, except for an error wrapping ErrHeld: then the version is
	// durable but not current, and rows and duplicates are its counts.
	Commit(ctx context.Context) (rows, duplicates int64, err error)
	// Abort discards the version. It is safe after a failed Commit.
	Abort()
}

// Progresser is implemented by batches that report progress while they
// commit.
type Progresser interface {
	Progress() (phase string, done, total int64)
}

// Service runs imports into a Sink, one at a time, and remembers recent
// ones.
type Service struct {
	cfg  Config
	sink Sink
	log  *slog.Logger
	root string // ImportDir with symlinks resolved

	// mu guards the fields below it. It is never held across I/O: the
	// status routes and the metrics take it, and must answer while the
	// sink hangs.
	mu     sync.Mutex
	jobs   []*Job // oldest first
	nextID int64
	closed bool

	// running is the job that holds the only import slot.
	running atomic.Pointer[Job]

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	rowsAccepted *metrics.Counter
	rowsRejected *metrics.Counter
	succeeded    *metrics.Counter
	failed       *metrics.Counter
	held         *metrics.Counter
	duration     *metrics.PrometheusHistogram
}

// New returns a Service that imports into sink.
func New(cfg Config, sink Sink) (*Service, error) {
	cfg.fillDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	root, err := resolveDir(cfg.ImportDir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		cfg:    cfg,
		sink:   sink,
		log:    cfg.Logger.With("component", "ingest"),
		root:   root,
		nextID: 1,
		ctx:    ctx,
		cancel: cancel,
	}
	m := cfg.Metrics
	s.rowsAccepted = m.NewCounter("promo_import_rows_accepted_total")
	s.rowsRejected = m.NewCounter("promo_import_rows_rejected_total")
	s.succeeded = m.NewCounter(`promo_imports_total{result="succeeded"}`)
	s.failed = m.NewCounter(`promo_imports_total{result="failed"}`)
	s.held = m.NewCounter(`promo_imports_total{result="held"}`)
	s.duration = m.NewPrometheusHistogram("promo_import_duration_seconds")
	m.NewGauge("promo_import_bytes_read", func() float64 {
		if j := s.Running(); j != nil {
			return float64(j.progress.BytesRead())
		}
		return 0
	})
	m.NewGauge("promo_import_bytes_total", func() float64 {
		if j := s.Running(); j != nil && j.size > 0 {
			return float64(j.size)
		}
		return 0
	})
	m.NewGauge("promo_import_running", func() float64 {
		if s.Running() != nil {
			return 1
		}
		return 0
	})
	return s, nil
}

// Input is the CSV of one import.
type Input struct {
	// Source describes the input in statuses and logs, e.g. a file name.
	Source string
	// Reader yields the CSV.
	Reader io.Reader
	// Size is the input's length in bytes, or -1 when unknown.
	Size int64
	// Close, if set, is called when the import no longer reads.
	Close func() error
	// Interrupt, if set, is called when the import stops reading before
	// the end, from another goroutine: it must make a blocked Read return.
	Interrupt func()

	upload bool // the request body, read while the handler waits
}

// Options are the per-import settings of POST /process-csv.
type Options struct {
	// MaxRejected is how many rejected rows are tolerated; one more fails
	// the import.
	MaxRejected int64
}

// Start queues an import of in, waits until the sink has begun its
// version, and returns its job, which runs in the background. It fails
// with ErrBusy while another import holds the slot (nil job), and with
// ErrUnavailable when the sink does not begin within Config.StoreTimeout,
// or with the sink's error; then the job it returns has failed. It stops
// waiting when ctx ends.
func (s *Service) Start(ctx context.Context, in Input, opts Options) (*Job, error) {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, ErrClosed
	case s.Running() != nil:
		s.mu.Unlock()
		return nil, ErrBusy
	}
	j := &Job{
		id:        s.nextID,
		source:    clip(in.Source, maxSourceBytes),
		size:      in.Size,
		opts:      opts,
		started:   time.Now(),
		inputDone: make(chan struct{}),
		done:      make(chan struct{}),
		state:     StateQueued,
	}
	j.ctx, j.cancel = context.WithCancelCause(s.ctx)
	s.nextID++
	// The job holds the slot until the sink's Begin has returned, even
	// when Start gave up on it: two versions are never begun at once.
	s.running.Store(j)
	s.jobs = append(s.jobs, j)
	if len(s.jobs) > s.cfg.KeepJobs {
		s.jobs = slices.Delete(s.jobs, 0, len(s.jobs)-s.cfg.KeepJobs)
	}
	// Added under mu, before Close can wait; run, or a failed begin,
	// marks it done.
	s.wg.Add(1)
	s.mu.Unlock()

	batch, err := s.begin(ctx, j)
	if sc, ok := batch.(SpaceChecker); ok && err == nil && in.Size > 0 {
		if err = sc.ExpectBytes(in.Size); err != nil {
			batch.Abort()
			s.running.CompareAndSwap(j, nil)
		}
	}
	if err != nil {
		close(j.inputDone)
		s.ended(j, 0, 0, err)
		j.cancel(nil)
		close(j.done)
		s.wg.Done()
		return j, err
	}
	j.mu.Lock()
	j.batch = batch
	j.state = StateRunning
	j.mu.Unlock()
	go s.run(j, in)
	return j, nil
}

// begin calls the sink's Begin for j with a deadline, without holding mu,
// and gives up waiting at the deadline (or when j is cancelled) even if
// the sink does not: a Begin that returns later has its batch aborted.
// Then it records j in the history. On failure the slot is freed, now or
// once Begin returns.
func (s *Service) begin(ctx context.Context, j *Job) (Batch, error) {
	type begun struct {
		batch Batch
		err   error
	}
	const waiting, taken, abandoned = 0, 1, 2
	var state atomic.Int32
	result := make(chan begun, 1)
	bctx, cancel := context.WithTimeout(j.ctx, s.cfg.StoreTimeout)
	defer cancel()
	s.wg.Add(1) // the caller holds one: Close is not past Wait
	go func() {
		defer s.wg.Done()
		b, err := s.sink.Begin(bctx, j.source, s.cfg.Workers)
		if err != nil {
			b = nil
		}
		if state.CompareAndSwap(waiting, taken) {
			result <- begun{b, err}
			return
		}
		// Start gave up: undo, then free the slot.
		if b != nil {
			b.Abort()
		}
		s.running.CompareAndSwap(j, nil)
	}()
	var r begun
	got := false
	select {
	case r = <-result:
		got = true
	case <-bctx.Done():
	case <-ctx.Done():
	}
	if !got {
		if state.CompareAndSwap(waiting, abandoned) {
			return nil, s.beginError(ctx, bctx, nil)
		}
		r = <-result // Begin returned just now
	}
	if r.err == nil && r.batch == nil {
		r.err = errors.New("ingest: the sink began no batch")
	}
	if r.err != nil {
		s.running.CompareAndSwap(j, nil)
		return nil, s.beginError(ctx, bctx, r.err)
	}
	// Recorded before the import reads anything, so that its id is never
	// given out again, even after a crash.
	if err := s.save(bctx, j); err != nil {
		r.batch.Abort()
		s.running.CompareAndSwap(j, nil)
		return nil, s.beginError(ctx, bctx, err)
	}
	return r.batch, nil
}

// beginError explains why Begin failed, or was given up (err nil).
func (s *Service) beginError(ctx, bctx context.Context, err error) error {
	switch {
	case s.ctx.Err() != nil:
		return ErrClosed
	case errors.Is(context.Cause(bctx), ErrCancelled):
		return ErrCancelled
	case errors.Is(bctx.Err(), context.DeadlineExceeded) && (err == nil || !errors.Is(err, ErrBusy)):
		msg := fmt.Sprintf("the write store did not answer within %v", s.cfg.StoreTimeout)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrUnavailable, msg, err)
		}
		return fmt.Errorf("%w: %s", ErrUnavailable, msg)
	case err == nil:
		return fmt.Errorf("import not started: %w", context.Cause(ctx))
	}
	return err
}

func (s *Service) run(j *Job, in Input) {
	defer s.wg.Done()
	s.log.Info("import started", "import_id", j.id, "source", j.source, "dataset_version", j.batch.Version())
	cfg := csv.Config{
		Workers:     s.cfg.Workers,
		ChunkSize:   s.cfg.ChunkSize,
		MaxRejected: j.opts.MaxRejected,
		MaxErrors:   s.cfg.MaxErrors,
		Interrupt:   in.Interrupt,
	}
	err := csv.Parse(j.ctx, in.Reader, j.batch, cfg, &j.progress)
	if in.Close != nil {
		_ = in.Close()
	}
	j.parseErr = err
	close(j.inputDone)
	if err == nil && j.progress.Accepted() == 0 {
		err = ErrNoRows
	}
	var rows, dups int64
	if err == nil {
		rows, dups, err = j.batch.Commit(j.ctx)
	} else {
		j.batch.Abort()
	}
	// The slot is free before the outcome shows: a client that saw it
	// may start the next import at once.
	s.running.Store(nil)
	s.ended(j, rows, dups, err)
	j.cancel(nil)
	close(j.done)
}

// ended records the outcome of j, in the history too, counts and logs
// it.
func (s *Service) ended(j *Job, rows, dups int64, err error) {
	if errors.Is(err, context.Canceled) && errors.Is(context.Cause(j.ctx), ErrCancelled) {
		err = fmt.Errorf("%w: %w", ErrCancelled, err)
	}
	j.finish(rows, dups, err)
	if j.saved {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StoreTimeout)
		if herr := s.save(ctx, j); herr != nil {
			s.log.Warn("cannot record the outcome of an import; after a restart it shows as interrupted", "import_id", j.id, "err", herr)
		}
		cancel()
	}
	s.rowsAccepted.Add(int(j.progress.Accepted()))
	s.rowsRejected.Add(int(j.progress.Rejected()))
	s.duration.UpdateDuration(j.started)
	st := j.Status()
	log := s.log.With("import_id", j.id, "source", j.source)
	if errors.Is(err, ErrHeld) {
		s.held.Inc()
		log.Warn("import committed but held by the activation guard", "dataset_version", st.DatasetVersion, "rows", rows,
			"reason", st.Error)
		return
	}
	if err != nil {
		s.failed.Inc()
		log.Warn("import failed", "err", err, "rows_accepted", st.RowsAccepted, "rows_rejected", st.RowsRejected, "elapsed", st.ElapsedSeconds)
		return
	}
	s.succeeded.Inc()
	log.Info("import succeeded", "dataset_version", st.DatasetVersion, "rows", rows, "duplicates", dups,
		"rows_rejected", st.RowsRejected, "elapsed", st.ElapsedSeconds, "rows_per_second", st.RowsPerSecond)
}

// Job returns the import with the given id, if it is remembered.
func (s *Service) Job(id int64) (*Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, j := range s.jobs {
		if j.id == id {
			return j, true
		}
	}
	return nil, false
}

// Jobs returns the remembered imports, newest first.
func (s *Service) Jobs() []*Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.jobs)
	slices.Reverse(out)
	return out
}

// Running returns the import that holds the slot, queued or running, or
// nil. It does not wait.
func (s *Service) Running() *Job { return s.running.Load() }

// Cancel cancels import id, queued or running: it fails with ErrCancelled
// and its version is aborted, so nothing of it becomes visible, unless it
// was already past the point of no return of its commit and succeeds. It
// returns at once; the job's Done channel is closed once it has ended.
// It fails with ErrUnknownImport or ErrFinished.
func (s *Service) Cancel(id int64) (*Job, error) {
	j, ok := s.Job(id)
	switch {
	case !ok:
		return nil, ErrUnknownImport
	case j.restored != nil:
		return j, ErrFinished
	}
	select {
	case <-j.done:
		return j, ErrFinished
	default:
	}
	j.cancel(ErrCancelled)
	return j, nil
}

// Close cancels a running import, which is aborted, and waits for it until
// ctx ends.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("import still running at shutdown: %w", ctx.Err())
	}
}

// Job states.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	// StateHeld ends an import whose version was committed but not
	// activated by the activation guard; Status.Error says why.
	StateHeld = "held"
)

// Job is one import.
type Job struct {
	id      int64
	source  string
	size    int64
	opts    Options
	started time.Time
	// ctx is cancelled with ErrCancelled by Cancel, and when the job
	// ends.
	ctx    context.Context
	cancel context.CancelCauseFunc
	saved  bool // recorded in the history, by begin before run
	// restored is the status of a job of an earlier process, loaded from
	// the history; such a job has only id and done besides.
	restored *Status
	// progress is written by the parse and read by Status at any time.
	progress csv.Progress

	parseErr  error // set before inputDone is closed
	inputDone chan struct{}
	done      chan struct{}

	mu sync.Mutex
	// batch is written by the import until it ends, then dropped: a job
	// is remembered for KeepJobs imports, and a batch may hold far more
	// memory (a sink's dedup filter) than its status is worth.
	batch    Batch
	state    string
	finished time.Time
	rows     int64
	dups     int64
	version  uint64
	err      error
}

// ID returns the job's id.
func (j *Job) ID() int64 { return j.id }

// Done is closed when the import has finished.
func (j *Job) Done() <-chan struct{} { return j.done }

// InputDone is closed when the import no longer reads its input.
func (j *Job) InputDone() <-chan struct{} { return j.inputDone }

// Err returns why the import failed, or nil.
func (j *Job) Err() error {
	if j.restored != nil {
		switch j.restored.State {
		case StateFailed:
			return errors.New(j.restored.Error)
		case StateHeld:
			return fmt.Errorf("%w: %s", ErrHeld, j.restored.Error)
		}
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

func (j *Job) finish(rows, dups int64, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.finished = time.Now()
	j.rows, j.dups, j.err = rows, dups, err
	switch {
	case errors.Is(err, ErrHeld):
		j.state = StateHeld
		j.version = j.batch.Version()
	case err != nil:
		j.state = StateFailed
	default:
		j.state = StateSucceeded
		j.version = j.batch.Version()
	}
	j.batch = nil
}

// Status is the JSON form of a job in GET /imports. While the job runs,
// Phase is "parsing" (reading the input) and then the sink's phases
// (for the store: "sorting", with PhaseDone of PhaseTotal rows written,
// "ingesting" and "activating").
type Status struct {
	ImportID       int64          `json:"import_id"`
	StatusURL      string         `json:"status_url"`
	State          string         `json:"state"`
	Phase          string         `json:"phase,omitempty"`
	PhaseDone      int64          `json:"phase_done,omitempty"`
	PhaseTotal     int64          `json:"phase_total,omitempty"`
	Source         string         `json:"source"`
	BytesRead      int64          `json:"bytes_read"`
	BytesTotal     *int64         `json:"bytes_total"`
	RowsAccepted   int64          `json:"rows_accepted"`
	RowsRejected   int64          `json:"rows_rejected"`
	RowsDuplicate  int64          `json:"rows_duplicate"`
	Rows           int64          `json:"rows"`
	RowsPerSecond  float64        `json:"rows_per_second"`
	ElapsedSeconds float64        `json:"elapsed_seconds"`
	MaxRejected    int64          `json:"max_rejected"`
	StartedAt      time.Time      `json:"started_at"`
	FinishedAt     *time.Time     `json:"finished_at,omitempty"`
	DatasetVersion uint64         `json:"dataset_version,omitempty"`
	Error          string         `json:"error,omitempty"`
	Errors         []csv.RowError `json:"errors"`
}

// Status returns a snapshot of the job.
func (j *Job) Status() Status {
	if j.restored != nil {
		st := *j.restored
		st.Errors = slices.Clone(st.Errors)
		return st
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	st := Status{
		ImportID:     j.id,
		StatusURL:    fmt.Sprintf("/imports/%d", j.id),
		State:        j.state,
		Source:       j.source,
		BytesRead:    j.progress.BytesRead(),
		RowsAccepted: j.progress.Accepted(),
		RowsRejected: j.progress.Rejected(),
		MaxRejected:  j.opts.MaxRejected,
		StartedAt:    j.started.UTC(),
		Errors:       j.progress.Errors(),
	}
	if j.size >= 0 {
		size := j.size
		st.BytesTotal = &size
	}
	end := time.Now()
	if !j.finished.IsZero() {
		end = j.finished
		f := j.finished.UTC()
		st.FinishedAt = &f
	}
	elapsed := end.Sub(j.started)
	st.ElapsedSeconds = elapsed.Seconds()
	if elapsed > 0 {
		st.RowsPerSecond = float64(st.RowsAccepted+st.RowsRejected) / elapsed.Seconds()
	}
	switch j.state {
	case StateRunning:
		st.Phase = "parsing"
		select {
		case <-j.inputDone:
			st.Phase = "committing"
			if p, ok := j.batch.(Progresser); ok {
				st.Phase, st.PhaseDone, st.PhaseTotal = p.Progress()
			}
		default:
		}
	case StateSucceeded:
		st.Rows, st.RowsDuplicate = j.rows, j.dups
		st.DatasetVersion = j.version
	case StateHeld:
		st.Rows, st.RowsDuplicate = j.rows, j.dups
		st.DatasetVersion = j.version
		st.Error = clip(heldReason(j.err), maxErrorBytes)
	case StateFailed:
		st.Error = clip(describe(j.err, st.RowsRejected, j.opts.MaxRejected, j.progress.Stopped()), maxErrorBytes)
	}
	if st.Errors == nil {
		st.Errors = []csv.RowError{}
	}
	return st
}

// Bounds of what a client controls and a job keeps, in statuses, logs and
// the metadata of versions: one upload must not make GET /imports or
// GET /datasets megabytes long.
const (
	// maxNameBytes bounds a file name a client sends.
	maxNameBytes = 256
	// maxSourceBytes bounds Input.Source, a name and its prefix.
	maxSourceBytes = maxNameBytes + 64
	// maxErrorBytes bounds the error message of a status.
	maxErrorBytes = 1024
)

// clip returns s cut to at most max bytes, on a UTF-8 boundary, and marked
// as cut with how long it was.
func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("…[cut from %d bytes]", len(s))
}

// heldReason returns the reason of an error wrapping ErrHeld.
func heldReason(err error) string {
	msg := err.Error()
	if r, ok := strings.CutPrefix(msg, ErrHeld.Error()+": "); ok {
		return r
	}
	return msg
}

// describe turns an import failure into the message of its status.
func describe(err error, rejected, max int64, stopped bool) string {
	switch {
	case errors.Is(err, csv.ErrTooManyRejected) && stopped:
		return fmt.Sprintf("at least %s rejected, more than max_rejected=%d (reading stopped once %d errors were known); nothing was imported", rowCount(rejected), max, rejected)
	case errors.Is(err, csv.ErrTooManyRejected):
		return fmt.Sprintf("%s rejected, more than max_rejected=%d; nothing was imported", rowCount(rejected), max)
	case errors.Is(err, ErrNoRows) && rejected > 0:
		return fmt.Sprintf("all %s rejected; nothing was imported", rowCount(rejected))
	case errors.Is(err, ErrNoRows):
		return "the file has no rows; nothing was imported"
	case errors.Is(err, ErrCancelled):
		return "the import was cancelled (DELETE /imports/{id}); nothing was imported"
	case errors.Is(err, context.Canceled):
		return "the import was cancelled by a shutdown; nothing was imported"
	}
	return err.Error() + "; nothing was imported"
}

func rowCount(n int64) string {
	if n == 1 {
		return "1 row"
	}
	return fmt.Sprintf("%d rows", n)
}
