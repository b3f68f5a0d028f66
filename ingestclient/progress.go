package ingestclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/promotion-service/promo/ingest"
)

// Phases a Client reports in Progress besides the server's own (such as
// "parsing", "sorting", "ingesting", "activating") and the final job
// states ingest.StateSucceeded, ingest.StateFailed and ingest.StateHeld.
const (
	// PhaseUploading is reported while the file is being sent.
	PhaseUploading = "uploading"
	// PhaseWaiting is reported once the file is sent while the server has
	// not said which phase it is in.
	PhaseWaiting = "waiting"
)

// Progress is a snapshot of an import run by Client.Import.
type Progress struct {
	// Phase is PhaseUploading while the file is sent, then the server's
	// phase of the import (or PhaseWaiting), and at last the job's final
	// state, ingest.StateSucceeded, ingest.StateFailed or ingest.StateHeld.
	Phase string
	// BytesSent is how much of the file has been handed to the network.
	BytesSent int64
	// BytesTotal is the size of the file, or -1 when unknown (a stream).
	BytesTotal int64
	// Elapsed is the time since the upload began.
	Elapsed time.Duration
	// Status is the latest status of the import known to the client. Its
	// ImportID is zero until the server's answer (or a poll of
	// GET /imports during the upload) has said which job is ours.
	Status ingest.Status
}

// report hands the progress of u, in phase, to the caller of Import.
func (u *upload) report(phase string) {
	u.progress(Progress{
		Phase:      phase,
		BytesSent:  u.sent.Load().Load(),
		BytesTotal: u.size,
		Elapsed:    time.Since(u.start),
		Status:     u.last,
	})
}

// watch polls the server until ctx ends, sending the latest status of our
// import to seen: GET /imports until the job shows up, then its own
// status, which is smaller.
func (u *upload) watch(ctx context.Context, seen chan ingest.Status) {
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
		var st ingest.Status
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
// size (or of no size, for a stream) started after the baseline. The server runs one import at a time,
// so another upload of the same size in that window would have made ours
// fail with 409. A failed request finds nothing.
func (u *upload) find(ctx context.Context) (ingest.Status, bool) {
	list, err := u.c.Imports(ctx)
	if err != nil {
		return ingest.Status{}, false
	}
	for _, st := range list {
		if st.ImportID > u.baseline && st.Source == "upload" && sameSize(st.BytesTotal, u.size) {
			return st, true
		}
	}
	return ingest.Status{}, false
}

// sameSize reports whether a job's bytes_total, nil when the upload had no
// length, is size (-1 for none).
func sameSize(total *int64, size int64) bool {
	if total == nil {
		return size < 0
	}
	return *total == size
}

// follow polls the status of the import of st until it has finished.
func (u *upload) follow(ctx context.Context, st ingest.Status) (ingest.Status, error) {
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
	if u.last.State == ingest.StateFailed || u.last.State == ingest.StateHeld {
		return u.last, &ImportError{Status: u.last}
	}
	return u.last, nil
}

// finished reports whether a job in state will change no more.
func finished(state string) bool {
	return state == ingest.StateSucceeded || state == ingest.StateFailed || state == ingest.StateHeld
}

// phaseOf returns the phase to report for a status of the server.
func phaseOf(st ingest.Status) string {
	switch {
	case finished(st.State):
		return st.State
	case st.Phase != "":
		return st.Phase
	}
	return PhaseWaiting
}
