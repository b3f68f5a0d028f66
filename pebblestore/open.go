package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// This file opens Pebble so that a store that cannot open says so.
// Pebble replays its write-ahead log inside Open and flushes it to a
// table; when that flush fails, Pebble retries at once and forever
// (cockroachdb/pebble#6139), reporting every failure. On a full disk its
// Open never returned, spun a core and logged thousands of lines a
// second. Open therefore checks the free space first (checkFreeSpace),
// runs Pebble's Open so that it can be given up (openPebble), and rate
// limits what Pebble logs (pebbleLogger).

// openHeadroom is the space Pebble needs to open beyond the log it
// replays: a new MANIFEST and OPTIONS file, and room for the writes of
// one memtable (the store's metadata) before the next flush.
const openHeadroom = 4 << 20

// checkFreeSpace fails with ErrDiskFull when the file system of dir has
// too little free space for Pebble to open the database in dir/pebble:
// the log it replays plus openHeadroom.
func checkFreeSpace(dir string) error {
	usage, err := vfs.Default.GetDiskUsage(dir)
	if errors.Is(err, vfs.ErrUnsupported) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read the free space of %s: %w", dir, err)
	}
	logs, err := filepath.Glob(filepath.Join(dir, "pebble", "*.log"))
	if err != nil {
		return err
	}
	need := uint64(openHeadroom)
	for _, name := range logs {
		if fi, err := os.Stat(name); err == nil {
			need += uint64(fi.Size())
		}
	}
	if usage.AvailBytes < need {
		return fmt.Errorf("%w: %s has %s available, opening the store needs %s (its log to replay and room for new writes); free some space and start again",
			ErrDiskFull, dir, formatMiB(usage.AvailBytes), formatMiB(need))
	}
	return nil
}

func formatMiB(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// maxOpenFailures is how many background errors during Open mean that
// Pebble is retrying something that will not succeed. ENOSPC gives up at
// once.
const maxOpenFailures = 3

// openPebble opens the Pebble database in dir. It returns early with
// ctx's error when ctx ends, and with the error (ErrDiskFull for ENOSPC)
// when Pebble reports background failures that mean its Open cannot
// finish.
//
// Pebble gives no way to abandon an Open. One given up because ctx ended
// finishes in the background and its database is closed. One given up
// because it cannot finish is parked: the goroutine that retries blocks
// for good in the error callback, holding the database's lock, so it
// costs a goroutine and no CPU; the directory stays locked by this
// process until it exits, which is what a caller that cannot open its
// store does next.
func openPebble(ctx context.Context, dir string, opts *pebble.Options) (*pebble.DB, error) {
	o := &opening{stuck: make(chan error, 1)}
	if opts.EventListener == nil {
		opts.EventListener = &pebble.EventListener{}
	}
	report := opts.EventListener.BackgroundError
	opts.EventListener.BackgroundError = func(err error) {
		if o.giveUp(err) {
			select {} // park the retry loop, see above
		}
		if report != nil {
			report(err)
		}
	}
	type result struct {
		db  *pebble.DB
		err error
	}
	done := make(chan result, 1)
	if opts.Cache != nil {
		// The caller may drop its reference as soon as this returns,
		// before Pebble has taken its own.
		opts.Cache.Ref()
	}
	go func() {
		db, err := pebble.Open(dir, opts)
		if opts.Cache != nil {
			opts.Cache.Unref()
		}
		if o.finish() {
			done <- result{db, err}
			return
		}
		// Given up. After a cancel nothing is parked and the database
		// can be closed; after giving up on failures Close would wait
		// for the parked goroutine, so the database is left as it is.
		if db != nil && o.cancelled() {
			_ = db.Close()
		}
	}()
	select {
	case r := <-done:
		return r.db, r.err
	case err := <-o.stuck:
		return nil, err
	case <-ctx.Done():
		if o.cancel() {
			return nil, fmt.Errorf("interrupted: %w", context.Cause(ctx))
		}
		// Open ended meanwhile, one way or the other.
		select {
		case r := <-done:
			return r.db, r.err
		case err := <-o.stuck:
			return nil, err
		}
	}
}

// opening is the state of one openPebble, shared by the caller, the
// goroutine running Pebble's Open and Pebble's background goroutines.
type opening struct {
	mu       sync.Mutex
	state    openState
	failures int
	stuck    chan error // receives the error that gave up, once
}

type openState int

const (
	stateOpening   openState = iota
	stateOpened              // Pebble's Open returned to the caller
	stateCancelled           // the caller's ctx ended first
	stateStuck               // given up on failures; a goroutine is parked
)

// giveUp counts err, a background error, and reports whether the Open is
// given up because of it: the caller parks the reporting goroutine. After
// Open has returned, no error gives up.
func (o *opening) giveUp(err error) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state != stateOpening && o.state != stateCancelled {
		return false
	}
	o.failures++
	full := errors.Is(err, syscall.ENOSPC)
	if !full && o.failures < maxOpenFailures {
		return false
	}
	if o.state == stateOpening {
		if full {
			err = fmt.Errorf("%w: %w", ErrDiskFull, err)
		} else {
			err = fmt.Errorf("pebble keeps failing: %w", err)
		}
		o.stuck <- err
	}
	o.state = stateStuck
	return true
}

// finish records that Pebble's Open returned and reports whether the
// caller still waits for it.
func (o *opening) finish() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state == stateOpening {
		o.state = stateOpened
		return true
	}
	return false
}

// cancel records that the caller stopped waiting and reports whether
// Open was still running.
func (o *opening) cancel() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state == stateOpening {
		o.state = stateCancelled
		return true
	}
	return false
}

func (o *opening) cancelled() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.state == stateCancelled
}

// pebbleLogger sends Pebble's messages to slog, its errors at most
// errorsPerSecond a second: Pebble reports every failure of an operation
// it retries without pause. The next error logged says how many were
// left out.
type pebbleLogger struct {
	log *slog.Logger

	mu         sync.Mutex
	window     time.Time // start of the current second
	logged     int       // errors logged in it
	suppressed int       // errors left out since the last one logged
}

const errorsPerSecond = 10

func newPebbleLogger(log *slog.Logger) *pebbleLogger { return &pebbleLogger{log: log} }

func (l *pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "source", "pebble")
}

func (l *pebbleLogger) Errorf(format string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.window) >= time.Second {
		l.window, l.logged = now, 0
	}
	if l.logged >= errorsPerSecond {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.logged++
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	if suppressed > 0 {
		l.log.Error(fmt.Sprintf(format, args...), "source", "pebble", "suppressed", suppressed)
		return
	}
	l.log.Error(fmt.Sprintf(format, args...), "source", "pebble")
}

// Fatalf logs and exits, as Pebble requires: it calls Fatalf for states it
// cannot continue from.
func (l *pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "source", "pebble")
	os.Exit(1)
}
