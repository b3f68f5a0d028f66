package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"
)

// FaultsConfig describes promo bench faults: drills that each inject one
// fault into a devcluster (read node n3 and ingest run as child promo
// processes) under a constant lookup load through the proxy, and check
// every answer against the row of the version it names.
type FaultsConfig struct {
	// Binary is the promo executable started as promo ingest and as read
	// node n3 (default: this program, os.Executable()).
	Binary string
	// Rows is the number of rows of every dataset version (default
	// 100,000). After each drill every one of them is looked up.
	Rows int64
	// Rate is the lookup load through the proxy, requests per second,
	// during each drill (default 2,000).
	Rate int
	// Hold is how long a fault lasts before it is removed (default 4s).
	Hold time.Duration
	// Warm is how long the load runs before the fault and after the
	// recovery (default 1.5s).
	Warm time.Duration
	// Quick selects the drills that fit a CI run (QuickDrills) when
	// Drills is empty.
	Quick bool
	// Drills names the drills to run, in the order of DrillNames (default
	// all of them, or QuickDrills with Quick).
	Drills []string
	// Dir holds the cluster's data; empty uses a temporary directory that
	// is removed afterwards.
	Dir string
	// Logger receives the in-process services' messages (default none).
	Logger *slog.Logger
	// Progress, if set, receives a line per step.
	Progress io.Writer
}

// DefaultFaultsConfig returns the defaults of promo bench faults.
func DefaultFaultsConfig() FaultsConfig {
	return FaultsConfig{Rows: 100_000, Rate: 2_000, Hold: 4 * time.Second, Warm: 1500 * time.Millisecond}
}

// Validate reports the first invalid field of c.
func (c *FaultsConfig) Validate() error {
	switch {
	case c.Rows < 1_000:
		return fmt.Errorf("bench: Rows must be at least 1,000, got %d", c.Rows)
	case c.Rate < 1 || c.Rate > 20_000:
		return fmt.Errorf("bench: Rate must be between 1 and 20,000 requests per second, got %d", c.Rate)
	case c.Hold < 100*time.Millisecond || c.Hold > time.Minute:
		return fmt.Errorf("bench: Hold must be between 100ms and 1m, got %v", c.Hold)
	case c.Warm < 0 || c.Warm > time.Minute:
		return fmt.Errorf("bench: Warm must be between 0 and 1m, got %v", c.Warm)
	}
	for _, name := range c.Drills {
		if !slices.Contains(DrillNames(), name) {
			return fmt.Errorf("bench: unknown drill %q; the drills are %s", name, strings.Join(DrillNames(), ", "))
		}
	}
	return nil
}

// selected returns the drills c runs, in their order.
func (c *FaultsConfig) selected() []drill {
	var out []drill
	for _, d := range drills {
		switch {
		case len(c.Drills) > 0:
			if slices.Contains(c.Drills, d.name) {
				out = append(out, d)
			}
		case !c.Quick || d.quick:
			out = append(out, d)
		}
	}
	return out
}

// DrillNames returns the names of every drill, in the order they run.
func DrillNames() []string {
	names := make([]string, len(drills))
	for i, d := range drills {
		names[i] = d.name
	}
	return names
}

// QuickDrills returns the names of the drills that fit a CI run.
func QuickDrills() []string {
	var names []string
	for _, d := range drills {
		if d.quick {
			names = append(names, d.name)
		}
	}
	return names
}

// FaultsReport is what promo bench faults measured.
type FaultsReport struct {
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Rows     int64     `json:"rows"`
	Rate     int       `json:"rate"`
	Hold     string    `json:"hold"`
	Nodes    int       `json:"nodes"`
	Replicas int       `json:"replicas"`
	CPUs     int       `json:"cpus"`
	// Postgres is the server's version string.
	Postgres string `json:"postgres"`
	// LoadAverage is the machine's 1-minute load average at the start and
	// at the end (Linux; other processes share the CPUs).
	LoadAverage [2]float64    `json:"load_average"`
	Drills      []DrillReport `json:"drills"`
}

// DrillReport is the outcome of one drill.
type DrillReport struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	// Fault says what the drill does, and when.
	Fault string `json:"fault"`
	// Skipped, when set, says why the drill did not run.
	Skipped string `json:"skipped,omitempty"`
	// Error, when set, is why the drill could not run to its end; its
	// expectations are then not all checked, and the drill fails.
	Error string `json:"error,omitempty"`
	// Rate is the lookup load, requests per second, and Seconds how long
	// it ran (from before the fault to after the recovery).
	Rate    int     `json:"rate"`
	Seconds float64 `json:"seconds"`
	// Requests sent; Failed got no answer or a status other than 200 and
	// 404; Wrong got a 200 whose body is not the row of the version it
	// names (or a 404 for an id every version holds); Older got an answer
	// from a version older than one the proxy had already answered before
	// the request was sent.
	Requests uint64 `json:"requests"`
	Failed   uint64 `json:"failed"`
	Wrong    uint64 `json:"wrong"`
	Older    uint64 `json:"older"`
	// Statuses counts the answers by status ("error" for none).
	Statuses map[string]uint64 `json:"statuses"`
	// Examples are a few of the failed and wrong answers.
	Examples []string `json:"examples,omitempty"`
	P99MS    float64  `json:"p99_ms"`
	MaxMS    float64  `json:"max_ms"`
	// NodeRequestsPerLookup is how many requests the proxy sent to read
	// nodes per lookup, on average, over the drill.
	NodeRequestsPerLookup float64 `json:"node_requests_per_lookup"`
	// LastCommitted is the newest committed version after the drill, and
	// RowsLost how many of its rows the proxy did not answer, with the
	// right value and that version, once the cluster had settled (-1:
	// not checked).
	LastCommitted uint64 `json:"last_committed"`
	RowsLost      int64  `json:"rows_lost"`
	// RecoverSeconds is the time to recover as Recovery defines it (-1:
	// not within the drill's bound).
	RecoverSeconds float64       `json:"recover_seconds"`
	Recovery       string        `json:"recovery"`
	Expectations   []Expectation `json:"expectations"`
	Notes          []string      `json:"notes,omitempty"`
}

// Expectation is one checked claim of a drill.
type Expectation struct {
	Text string `json:"text"`
	Pass bool   `json:"pass"`
	// Got is what was measured.
	Got string `json:"got"`
}

// Passed reports whether the drill ran and met every expectation.
func (d *DrillReport) Passed() bool {
	if d.Skipped != "" {
		return true
	}
	if d.Error != "" {
		return false
	}
	for _, e := range d.Expectations {
		if !e.Pass {
			return false
		}
	}
	return true
}

// Failures lists the expectations that failed, and the drills that could
// not run to their end, one line each.
func (r *FaultsReport) Failures() []string {
	var out []string
	for _, d := range r.Drills {
		if d.Error != "" {
			out = append(out, fmt.Sprintf("%s: did not complete: %s", d.Name, d.Error))
		}
		for _, e := range d.Expectations {
			if !e.Pass {
				out = append(out, fmt.Sprintf("%s: %s: got %s", d.Name, e.Text, e.Got))
			}
		}
	}
	return out
}

// ErrExpectations is returned by RunFaults, with its report, when an
// expectation failed.
var ErrExpectations = errors.New("bench: fault drills: expectations failed")

// RunFaults starts the cluster, runs the selected drills one after the
// other and returns what they measured. It returns ErrExpectations (with
// the full report) when an expectation failed, and another error when the
// cluster could not be set up.
func RunFaults(ctx context.Context, c FaultsConfig) (FaultsReport, error) {
	c = c.withDefaults()
	rep := FaultsReport{Started: time.Now().UTC(), Rows: c.Rows, Rate: c.Rate, Hold: c.Hold.String(),
		Nodes: faultNodes, Replicas: faultReplicas, CPUs: numCPU()}
	if err := c.Validate(); err != nil {
		return rep, err
	}
	start := time.Now()
	h, err := startHarness(ctx, c)
	if err != nil {
		return rep, err
	}
	defer h.close()
	rep.Postgres = h.postgresVersion(ctx)
	rep.LoadAverage[0] = loadAverage()
	for _, d := range c.selected() {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		dr := h.runDrill(ctx, d)
		rep.Drills = append(rep.Drills, dr)
		h.progressf("%s: %s", d.name, verdict(&dr))
	}
	rep.Seconds = time.Since(start).Seconds()
	rep.LoadAverage[1] = loadAverage()
	if len(rep.Failures()) > 0 {
		return rep, ErrExpectations
	}
	return rep, nil
}

func (c FaultsConfig) withDefaults() FaultsConfig {
	d := DefaultFaultsConfig()
	if c.Rows == 0 {
		c.Rows = d.Rows
	}
	if c.Rate == 0 {
		c.Rate = d.Rate
	}
	if c.Hold == 0 {
		c.Hold = d.Hold
	}
	if c.Warm == 0 {
		c.Warm = d.Warm
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return c
}

// verdict is a drill's outcome in a word or three.
func verdict(d *DrillReport) string {
	switch {
	case d.Skipped != "":
		return "skipped (" + d.Skipped + ")"
	case d.Error != "":
		return "FAIL (did not complete: " + d.Error + ")"
	}
	failed := 0
	for _, e := range d.Expectations {
		if !e.Pass {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Sprintf("FAIL (%d of %d expectations)", failed, len(d.Expectations))
	}
	return fmt.Sprintf("PASS (%d expectations)", len(d.Expectations))
}

func isRoot() bool { return os.Geteuid() == 0 }

// loadAverage returns the 1-minute load average, or 0 where /proc has
// none.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var f float64
	fmt.Sscan(string(b), &f)
	return f
}
