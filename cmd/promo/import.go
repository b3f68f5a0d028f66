package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/promotion-service/promo/ingest"
	"github.com/promotion-service/promo/ingestclient"
)

const importSynopsis = "promo import FILE|- [--server URL] [--token T] [--max-rejected N]"

// stdin is what promo import - reads (a test replaces it).
var stdin io.Reader = os.Stdin

func runImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := ingestclient.DefaultConfig("http://127.0.0.1:8080")
	var opts ingest.Options
	fs := newFlagSet("import", importSynopsis, stderr)
	fs.StringVar(&cfg.Server, "server", cfg.Server, "base URL of the promo server (standalone or ingest)")
	fs.StringVar(&cfg.Token, "token", "", "the server's ingest token, sent as a bearer token (default $PROMO_INGEST_TOKEN)")
	fs.Int64Var(&opts.MaxRejected, "max-rejected", 0, "rejected rows tolerated; one more fails the import")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		fs.Usage()
		return fmt.Errorf("%w: expected one FILE, got %d arguments", errUsage, len(rest))
	}
	if opts.MaxRejected < 0 {
		return fmt.Errorf("%w: --max-rejected must not be negative", errUsage)
	}
	if cfg.Token == "" {
		// The server reads its token from the same variable.
		cfg.Token = os.Getenv("PROMO_INGEST_TOKEN")
	}
	client, err := ingestclient.New(cfg)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, withFlags(fs, err))
	}

	bar := newProgressBar(stderr, isTerminal(stderr))
	var st ingest.Status
	if rest[0] == "-" {
		st, err = client.ImportReader(ctx, "standard input", stdin, stdinSize(stdin), opts, bar.update)
	} else {
		st, err = client.Import(ctx, rest[0], opts, bar.update)
	}
	bar.finish()
	var failed *ingestclient.ImportError
	switch {
	case err == nil:
		printSucceeded(stdout, st)
	case errors.As(err, &failed):
		printFailed(stdout, failed.Status)
	}
	return err
}

// stdinSize returns the bytes left in r when it is a regular file (promo
// import - < file.csv), else -1: a pipe's length is unknown.
func stdinSize(r io.Reader) int64 {
	f, ok := r.(*os.File)
	if !ok {
		return -1
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return -1
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return -1
	}
	return fi.Size() - off
}

// printSucceeded writes the summary of a successful import.
func printSucceeded(w io.Writer, st ingest.Status) {
	fmt.Fprintf(w, "import %d succeeded\n", st.ImportID)
	fmt.Fprintf(w, "dataset version: %d\n", st.DatasetVersion)
	fmt.Fprintf(w, "rows:            %d\n", st.Rows)
	fmt.Fprintf(w, "duplicates:      %d\n", st.RowsDuplicate)
	fmt.Fprintf(w, "rejected:        %d\n", st.RowsRejected)
	fmt.Fprintf(w, "elapsed:         %s\n", seconds(st.ElapsedSeconds))
	fmt.Fprintf(w, "rows/s:          %.0f\n", st.RowsPerSecond)
}

// maxShownErrors is how many row errors the summary of a failure lists.
const maxShownErrors = 10

// printFailed writes the summary of a failed import: its reason and the
// first row errors.
func printFailed(w io.Writer, st ingest.Status) {
	fmt.Fprintf(w, "import %d failed: %s\n", st.ImportID, st.Error)
	fmt.Fprintf(w, "rows accepted: %d, rejected: %d, elapsed: %s\n", st.RowsAccepted, st.RowsRejected, seconds(st.ElapsedSeconds))
	if len(st.Errors) == 0 {
		return
	}
	fmt.Fprintln(w, "rejected rows:")
	for _, e := range st.Errors[:min(len(st.Errors), maxShownErrors)] {
		fmt.Fprintf(w, "  line %d: %s: %s", e.Line, e.Field, e.Reason)
		if e.Value != "" {
			fmt.Fprintf(w, " (%q)", e.Value)
		}
		fmt.Fprintln(w)
	}
	if more := st.RowsRejected - int64(min(len(st.Errors), maxShownErrors)); more > 0 {
		fmt.Fprintf(w, "  ... and %d more\n", more)
	}
}

func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

// isTerminal reports whether w is a terminal that can redraw a line.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// plainInterval is how often progress is printed when it cannot be redrawn.
const plainInterval = 2 * time.Second

// progressBar renders the progress of an import on one line: redrawn in
// place on a terminal, else printed every plainInterval.
type progressBar struct {
	w       io.Writer
	redraw  bool
	now     func() time.Time
	started time.Time
	printed time.Time     // of the last plain line
	width   int           // of the drawn line, to blank its rest
	upload  time.Duration // how long the upload took, once it has ended
	last    ingestclient.Progress
	seen    bool
}

func newProgressBar(w io.Writer, redraw bool) *progressBar {
	return &progressBar{w: w, redraw: redraw, now: time.Now, started: time.Now()}
}

func (b *progressBar) update(p ingestclient.Progress) {
	b.last, b.seen = p, true
	if b.upload == 0 && p.Phase != ingestclient.PhaseUploading && (p.BytesTotal < 0 || p.BytesSent == p.BytesTotal) {
		b.upload = p.Elapsed
	}
	if b.redraw {
		b.draw(p)
		return
	}
	if now := b.now(); now.Sub(b.started) >= plainInterval && now.Sub(b.printed) >= plainInterval {
		b.printed = now
		fmt.Fprintf(b.w, "import: %s\n", describeProgress(p, b.upload))
	}
}

// finish ends the redrawn line.
func (b *progressBar) finish() {
	if b.redraw && b.seen {
		fmt.Fprintln(b.w)
	}
}

const barWidth = 20

func (b *progressBar) draw(p ingestclient.Progress) {
	if p.BytesTotal < 0 {
		// A stream of unknown length: no bar, no percentage.
		b.drawLine(describeProgress(p, b.upload))
		return
	}
	frac := 1.0
	if p.BytesTotal > 0 {
		frac = min(float64(p.BytesSent)/float64(p.BytesTotal), 1)
	}
	filled := int(frac * barWidth)
	bar := strings.Repeat("=", filled)
	if filled < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-filled-1)
	}
	b.drawLine(fmt.Sprintf("[%s] %3.0f%% %s", bar, frac*100, describeProgress(p, b.upload)))
}

// drawLine redraws the terminal's line with line.
func (b *progressBar) drawLine(line string) {
	pad := max(b.width-len(line), 0)
	b.width = len(line)
	fmt.Fprintf(b.w, "\r%s%s", line, strings.Repeat(" ", pad))
}

// describeProgress returns the phase, bytes, rates and time left of p,
// short enough for the line of a terminal. uploaded is how long the upload
// took, or zero while it runs.
func describeProgress(p ingestclient.Progress, uploaded time.Duration) string {
	var s strings.Builder
	s.WriteString(p.Phase)
	s.WriteString(" ")
	s.WriteString(formatSizes(p.BytesSent, p.BytesTotal))
	secs := p.Elapsed.Seconds()
	if uploaded > 0 {
		// The rate of the upload, not diluted by the server's commit.
		secs = uploaded.Seconds()
	}
	if secs > 0 {
		fmt.Fprintf(&s, " %.1f MB/s", float64(p.BytesSent)/1e6/secs)
	}
	if p.Status.ImportID != 0 {
		fmt.Fprintf(&s, " %s rows/s", formatCount(p.Status.RowsPerSecond))
	}
	if p.Phase == ingestclient.PhaseUploading && secs > 0 && p.BytesSent > 0 && p.BytesSent < p.BytesTotal {
		rate := float64(p.BytesSent) / secs
		eta := time.Duration(float64(p.BytesTotal-p.BytesSent) / rate * float64(time.Second))
		fmt.Fprintf(&s, " ETA %s", eta.Round(time.Second))
	}
	return s.String()
}

// formatSizes returns "sent/total unit" in the decimal unit of total, as
// rates in MB/s are, or "sent unit" when total is unknown (negative).
func formatSizes(sent, total int64) string {
	if total < 0 {
		s := formatSizes(sent, sent)
		return s[strings.IndexByte(s, '/')+1:]
	}
	unit, div := "B", 1.0
	switch {
	case total >= 1e12:
		unit, div = "TB", 1e12
	case total >= 1e9:
		unit, div = "GB", 1e9
	case total >= 1e6:
		unit, div = "MB", 1e6
	case total >= 1e3:
		unit, div = "kB", 1e3
	}
	if div == 1 {
		return fmt.Sprintf("%d/%d B", sent, total)
	}
	return fmt.Sprintf("%.1f/%.1f %s", float64(sent)/div, float64(total)/div, unit)
}

// formatCount returns n with a k or M suffix: 1093000 is 1.09M.
func formatCount(n float64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", n/1e6)
	case n >= 1e4:
		return fmt.Sprintf("%.0fk", n/1e3)
	}
	return fmt.Sprintf("%.0f", n)
}
