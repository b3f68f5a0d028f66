package standalone

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A file with 30% of the serving rows is committed but held: the import
// ends held with the reason (409 with ?wait=true, and in GET /imports/{id}),
// the version is listed held, the previous one keeps serving, and
// activating the held version serves it at a new epoch.
func TestGuardHoldsASmallFile(t *testing.T) {
	s := startServer(t, func(c *Config) { c.KeepVersions = 3 })
	full, fullRecs := rows(100, 1)
	if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(full)); r.status != 200 {
		t.Fatalf("first import: %d %s", r.status, r.body)
	}
	r := s.get(t, "/promotions/"+fullRecs[0].ID.String())
	if r.header.Get("X-Dataset-Epoch") != "1" {
		t.Fatalf("X-Dataset-Epoch %q after the first import, want 1", r.header.Get("X-Dataset-Epoch"))
	}
	small, smallRecs := rows(30, 2)
	r = do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(small))
	st := r.json(t)
	if r.status != http.StatusConflict || st["state"] != "held" || st["dataset_version"] != float64(2) || st["rows"] != float64(30) ||
		!strings.Contains(st["error"].(string), "fewer than 0.5 x the 100 rows") {
		t.Fatalf("held import: %d %s, want 409 held naming the ratio", r.status, r.body)
	}
	polled := s.get(t, st["status_url"].(string)).json(t)
	if polled["state"] != "held" || polled["error"] != st["error"] {
		t.Fatalf("GET %s: %v, want held with the reason", st["status_url"], polled)
	}
	checkLookup(t, s, fullRecs[7], 1)
	var ds struct {
		Datasets []map[string]any `json:"datasets"`
	}
	if err := json.Unmarshal(s.get(t, "/datasets").body, &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Datasets) != 2 || ds.Datasets[0]["state"] != "held" || ds.Datasets[0]["held_reason"] == nil || ds.Datasets[1]["state"] != "active" {
		t.Fatalf("datasets %v, want version 2 held above 1 active", ds.Datasets)
	}
	if got := counter(t, s, `promo_imports_total{result="held"}`); got != 1 {
		t.Fatalf(`promo_imports_total{result="held"} = %v, want 1`, got)
	}
	before := counter(t, s, "promo_dataset_activated_timestamp_seconds")
	if before < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("promo_dataset_activated_timestamp_seconds = %v, want about now", before)
	}

	r = do(t, http.MethodPost, s.url+"/datasets/2/activate", "", nil)
	if r.status != 200 || r.json(t)["state"] != "active" || r.json(t)["epoch"] != float64(2) {
		t.Fatalf("activate 2: %d %s", r.status, r.body)
	}
	checkLookup(t, s, smallRecs[3], 2)
	r = s.get(t, "/promotions/"+smallRecs[3].ID.String())
	if r.header.Get("X-Dataset-Epoch") != "2" {
		t.Fatalf("X-Dataset-Epoch %q after activating the held version, want 2", r.header.Get("X-Dataset-Epoch"))
	}
	if after := counter(t, s, "promo_dataset_activated_timestamp_seconds"); after < before {
		t.Fatalf("activated timestamp went from %v to %v", before, after)
	}
	// The guard compares with what serves now: 30 rows.
	tiny, _ := rows(20, 3)
	if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(tiny)); r.status != 200 {
		t.Fatalf("20 rows over 30: %d %s, want 200", r.status, r.body)
	}
}

func TestGuardOffImportsAnySize(t *testing.T) {
	s := startServer(t, func(c *Config) { c.MinRowsRatio = 0 })
	for _, n := range []int{100, 5} {
		csv, recs := rows(n, n)
		if r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", strings.NewReader(csv)); r.status != 200 {
			t.Fatalf("import of %d rows: %d %s", n, r.status, r.body)
		}
		checkLookup(t, s, recs[1], map[int]int{100: 1, 5: 2}[n])
	}
}

// counter reads a metric of the server's /metrics.
func counter(t *testing.T, s *testServer, name string) float64 {
	t.Helper()
	body := string(s.get(t, "/metrics").body)
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}
