package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Close cancels a running import: the batch is aborted, never committed,
// the job fails saying it was cancelled by a shutdown, and afterwards
// Start fails with ErrClosed (503 over HTTP) instead of starting one.
func TestShutdownCancelsTheRunningImport(t *testing.T) {
	sink := newFakeSink()
	ts := startService(t, sink)
	pr, pw := io.Pipe()
	defer pw.Close()
	job, err := ts.Start(context.Background(), Input{Source: "upload", Reader: pr, Size: -1,
		Interrupt: func() { pr.CloseWithError(errors.New("interrupted")) }}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Rows reach the batch: the import is mid-way when the shutdown comes.
	// Writes end when the import stops reading (the pipe is closed).
	writeErr := make(chan error, 1)
	go func() {
		for {
			if _, err := io.WriteString(pw, csvRows(1000)); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	eventually(t, 10*time.Second, func() error {
		if b := sink.batch(0); b == nil || b.rows.Load() == 0 {
			return errors.New("no row reached the batch yet")
		}
		return nil
	})
	if st := job.Status(); st.State != StateRunning {
		t.Fatalf("import before the shutdown: %+v", st)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.Close(ctx); err != nil {
		t.Fatalf("Close with an import running: %v", err)
	}
	select {
	case <-job.Done():
	default:
		t.Fatal("Close returned before the import ended")
	}
	b := sink.batch(0)
	if !b.aborted.Load() || b.committed.Load() {
		t.Fatalf("batch after the shutdown: aborted %v, committed %v; want aborted only", b.aborted.Load(), b.committed.Load())
	}
	st := job.Status()
	if job.Err() == nil || st.State != StateFailed || !strings.Contains(st.Error, "shutdown") {
		t.Fatalf("job after the shutdown: err %v, status %+v", job.Err(), st)
	}
	select {
	case <-writeErr:
	case <-time.After(10 * time.Second):
		t.Fatal("the import still reads its input after the shutdown")
	}

	// Start after Close.
	if _, err := ts.Start(context.Background(), Input{Source: "late", Reader: strings.NewReader(csvRows(1)), Size: -1}, Options{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v, want ErrClosed", err)
	}
	if sink.batch(1) != nil {
		t.Fatal("Start after Close began a batch")
	}
	ts.writeFile(t, "p.csv", csvRows(10))
	ct, body := form("p.csv")
	r := mustCall(t, http.MethodPost, ts.url+"/process-csv", ct, body)
	if r.status != http.StatusServiceUnavailable || !strings.Contains(fmt.Sprint(r.json(t)["error"]), "shutting down") {
		t.Fatalf("POST /process-csv after Close: %d %s, want 503", r.status, r.body)
	}
}
