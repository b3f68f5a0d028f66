package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/ingest/csv"
	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/localsvc/localsvctest"
	"github.com/promotion-service/promo/promotion"
)

func TestOlderAnswers(t *testing.T) {
	// a(sent, got, version)
	a := func(sent, got int64, v uint64) answerAt { return answerAt{sent: sent, got: got, version: v} }
	f := func(name string, prior uint64, answers []answerAt, wantOlder, wantNewest uint64) {
		t.Helper()
		older, newest := olderAnswers(answers, prior)
		if older != wantOlder || newest != wantNewest {
			t.Errorf("%s: older %d, newest %d; want %d, %d", name, older, newest, wantOlder, wantNewest)
		}
	}
	f("none", 3, nil, 0, 3)
	f("steady", 0, []answerAt{a(0, 5, 1), a(1, 6, 1), a(7, 9, 1)}, 0, 1)
	f("swap", 0, []answerAt{a(0, 5, 1), a(6, 8, 2), a(9, 10, 2)}, 0, 2)
	// Sent before the newer answer arrived: in flight, not older.
	f("overlap", 0, []answerAt{a(0, 5, 2), a(4, 9, 1)}, 0, 2)
	// Sent after a newer answer arrived.
	f("back", 0, []answerAt{a(0, 5, 2), a(6, 9, 1), a(7, 8, 2)}, 1, 2)
	// Older than what an earlier drill saw answered.
	f("prior", 3, []answerAt{a(0, 5, 2), a(1, 2, 3)}, 1, 3)
}

func TestGenerationOf(t *testing.T) {
	f := func(source string, want int) {
		t.Helper()
		if got := generationOf(source); got != want {
			t.Errorf("generationOf(%q) = %d, want %d", source, got, want)
		}
	}
	f("file:"+genFile(3), 3)
	f("upload:"+genFile(12), 12)
	f("upload", -1)
	f("file:promotions.csv", -1)
	f("file:faults-gen-x.csv", -1)
}

// The files a fault run imports hold the rows the checks expect, and
// every generation changes every row.
func TestFaultDataRoundTrip(t *testing.T) {
	d := newFaultData(500, 1)
	path := filepath.Join(t.TempDir(), genFile(4))
	if err := d.write(path, 4); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	i := 0
	for ; sc.Scan(); i++ {
		got, err := csv.ParseRow(sc.Bytes())
		if err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if want := faultRecord(d.ids[i], 4); got != want {
			t.Fatalf("line %d parses to %+v, want %+v", i+1, got, want)
		}
		if bytes.Equal(expectedBody(nil, d.ids[i], 4), expectedBody(nil, d.ids[i], 5)) {
			t.Fatalf("id %s has the same body in generations 4 and 5", d.ids[i])
		}
		if d.text[i] != d.ids[i].String() {
			t.Fatalf("id %d: text %s, id %s", i, d.text[i], d.ids[i])
		}
	}
	if i != len(d.ids) {
		t.Fatalf("%d lines, want %d", i, len(d.ids))
	}
}

func TestFaultsConfigValidate(t *testing.T) {
	f := func(name string, edit func(*FaultsConfig), wantErr string) {
		t.Helper()
		c := DefaultFaultsConfig()
		edit(&c)
		err := c.Validate()
		if (err == nil) != (wantErr == "") || (err != nil && !strings.Contains(err.Error(), wantErr)) {
			t.Errorf("%s: Validate() = %v, want %q", name, err, wantErr)
		}
	}
	f("defaults", func(*FaultsConfig) {}, "")
	f("few rows", func(c *FaultsConfig) { c.Rows = 10 }, "Rows")
	f("no rate", func(c *FaultsConfig) { c.Rate = 0 }, "Rate")
	f("long hold", func(c *FaultsConfig) { c.Hold = time.Hour }, "Hold")
	f("unknown drill", func(c *FaultsConfig) { c.Drills = []string{"version-swap", "meteor"} }, `"meteor"`)
	f("known drills", func(c *FaultsConfig) { c.Drills = QuickDrills() }, "")

	c := FaultsConfig{Quick: true}
	var quick []string
	for _, d := range c.selected() {
		quick = append(quick, d.name)
	}
	if fmt.Sprint(quick) != fmt.Sprint(QuickDrills()) || len(quick) == 0 {
		t.Errorf("Quick selects %v, want %v", quick, QuickDrills())
	}
	c = FaultsConfig{Drills: []string{"redis-down", "version-swap"}}
	if got := c.selected(); len(got) != 2 || got[0].name != "version-swap" {
		t.Errorf("Drills selects %v, want version-swap then redis-down", got)
	}
}

func TestWriteFaultsMarkdown(t *testing.T) {
	rep := FaultsReport{Rows: 1000, Rate: 10, Hold: "1s", Nodes: 3, Replicas: 2, Drills: []DrillReport{
		{Name: "version-swap", Title: "a swap", Fault: "imports", Recovery: "until served", Rate: 10, Seconds: 10, Requests: 100,
			Statuses: map[string]uint64{"200": 100}, RecoverSeconds: 1.5,
			Expectations: []Expectation{{Text: "0 failed requests", Pass: true, Got: "0 of 100"}}},
		{Name: "redis-down", Title: "Redis down", Rate: 10, Requests: 100, Failed: 3, RowsLost: 0, RecoverSeconds: -1,
			Statuses:     map[string]uint64{"200": 97, "503": 3},
			Expectations: []Expectation{{Text: "0 failed requests", Pass: false, Got: "3 of 100"}},
			Examples:     []string{"503 no replica"}},
		{Name: "disk-full-pull", Skipped: "needs root"},
	}}
	var b strings.Builder
	if err := WriteFaultsMarkdown(&b, rep, "promo bench faults --rate 10"); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"`promo bench faults --rate 10`",
		"| [version-swap](#version-swap) | 10/s × 10.0 s | 100 | 0 | 0 | 0 | 0 | 1.50 s | PASS (1 expectations) |",
		"| [redis-down](#redis-down) | 10/s × 0.0 s | 100 | 3 | 0 | 0 | 0 | did not | FAIL (1 of 1 expectations) |",
		"skipped: needs root",
		"1 of 2 expectations pass",
		"- redis-down: 0 failed requests: got 3 of 100",
		"| 0 failed requests | **FAIL** | 3 of 100 |",
		"(200: 97, 503: 3)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}
	if got := rep.Failures(); len(got) != 1 {
		t.Errorf("Failures() = %v, want one", got)
	}
}

// buildPromo builds the promo command for the drills' child processes.
func buildPromo(t *testing.T) string {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Fatalf("cannot build promo without the go command: %v", err)
		}
	}
	out := filepath.Join(t.TempDir(), "promo")
	cmd := exec.Command(goBin, "build", "-o", out, "github.com/promotion-service/promo/cmd/promo")
	localsvc.DieWithParent(cmd)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build promo: %v\n%s", err, b)
	}
	return out
}

// progressWriter sends progress lines to the test's log.
type progressWriter struct{ t *testing.T }

func (w progressWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// The drills that fit CI, against real servers and promo processes: while
// a replica of every slot survives, no lookup fails or is wrong, and no
// row is lost.
func TestFaultsQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole cluster and runs drills under load for about a minute")
	}
	if _, err := localsvc.FindPostgres(); err != nil {
		localsvctest.Unavailable(t, err)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		localsvctest.Unavailable(t, fmt.Errorf("%w: redis-server", localsvc.ErrNotInstalled))
	}
	c := DefaultFaultsConfig()
	c.Quick, c.Binary = true, buildPromo(t)
	c.Rows, c.Rate, c.Hold, c.Warm = 20_000, 500, 2*time.Second, time.Second
	c.Progress = progressWriter{t}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	rep, err := RunFaults(ctx, c)
	if err != nil && !errors.Is(err, ErrExpectations) {
		t.Fatal(err)
	}
	t.Logf("%d drills in %v", len(rep.Drills), time.Since(start).Round(time.Second))
	if len(rep.Drills) != len(QuickDrills()) {
		t.Fatalf("%d drills ran, want %v", len(rep.Drills), QuickDrills())
	}
	for _, d := range rep.Drills {
		if d.Error != "" {
			t.Errorf("%s did not complete: %s", d.Name, d.Error)
			continue
		}
		if d.Requests < uint64(c.Rate) {
			t.Errorf("%s: %d requests, want a load of %d/s for seconds", d.Name, d.Requests, c.Rate)
		}
		if d.Failed != 0 || d.Wrong != 0 || d.Older != 0 || d.RowsLost != 0 {
			t.Errorf("%s: %d failed, %d wrong, %d older of %d requests, %d rows lost; want none: %v",
				d.Name, d.Failed, d.Wrong, d.Older, d.Requests, d.RowsLost, d.Examples)
		}
		for _, e := range d.Expectations {
			// Where the fault landed decides what the drill tested;
			// recovery times are the report's, not a test's.
			if !e.Pass && (strings.Contains(e.Text, "lands") || strings.HasPrefix(e.Text, "no committed version")) {
				t.Errorf("%s: %s: got %s", d.Name, e.Text, e.Got)
			} else if !e.Pass {
				t.Logf("%s: %s: got %s (not asserted here)", d.Name, e.Text, e.Got)
			}
		}
	}
}

// A lookup's expected body is what the node writes for the record.
func TestExpectedBody(t *testing.T) {
	id, _ := promotion.ParseID([]byte("d018ef0b-dbd9-48f1-ac1a-eb4d90e57118"))
	r := faultRecord(id, 1)
	if got, want := string(expectedBody(nil, id, 1)), string(promotion.AppendJSON(nil, &r)); got != want {
		t.Fatalf("body %s, want %s", got, want)
	}
	if !strings.HasPrefix(string(expectedBody(nil, id, 1)), `{"id":"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118"`) {
		t.Fatalf("body %s does not start with the id", expectedBody(nil, id, 1))
	}
}
