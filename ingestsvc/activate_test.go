package ingestsvc

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/localsvc/localsvctest"
)

// The activate route on its own, without read nodes: the token guards it,
// a held import is announced held, a request is recorded as the target
// (202), ?wait=true gives up with 504 and the state when no node serves
// the version, 409 when another request supersedes it, and 404 / 409 for
// versions that cannot serve.
func TestActivateRoute(t *testing.T) {
	k := localsvctest.Kafka(t, "promotions.datasets")
	e := start(t, localsvctest.Database(t), k, func(c *Config) {
		c.IngestToken = "secret"
		c.ActivateTimeout = 2 * time.Second
	})
	ctx := context.Background()
	do := func(method, path string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, e.url+path, nil)
		req.Header.Set("Authorization", "Bearer secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, decode(t, resp)
	}
	importFile := func(name string, rows int64) (int, map[string]any) {
		t.Helper()
		e.writeCSV(t, name, rows, uint64(rows))
		req, _ := http.NewRequest(http.MethodPost, e.url+"/process-csv?wait=true",
			strings.NewReader(url.Values{"filename": {name}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, decode(t, resp)
	}
	if status, st := importFile("a.csv", 1000); status != 200 {
		t.Fatalf("import 1: %d %v", status, st)
	}
	// No read node runs: activate it as one would once every slot is prepared.
	if err := e.srv.Store().Activate(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// /metrics shows the activation once its once-a-second read has run.
	deadline := time.Now().Add(10 * time.Second)
	for metricOf(t, e.url, "promo_dataset_epoch") != 1 || metricOf(t, e.url, "promo_dataset_activated_timestamp_seconds") < float64(time.Now().Add(-time.Minute).Unix()) {
		if time.Now().After(deadline) {
			t.Fatal("promo_dataset_epoch and promo_dataset_activated_timestamp_seconds do not show the activation")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status, st := importFile("b.csv", 1000); status != 200 {
		t.Fatalf("import 2: %d %v", status, st)
	}
	status, st := importFile("c.csv", 100)
	if status != 409 || st["state"] != "held" || !strings.Contains(st["error"].(string), "fewer than 0.5 x the 1000 rows of the serving version 1") {
		t.Fatalf("import of 10%%: %d %v, want 409 held", status, st)
	}
	r := reader(k, "activate-test")
	defer r.Close()
	held := false
	for range 3 {
		if ev := consume(t, r, 10*time.Second); ev.Version == 3 {
			held = ev.Held
		}
	}
	if !held {
		t.Fatal("the event of version 3 does not say held")
	}

	if resp, err := http.Post(e.url+"/datasets/3/activate", "", nil); err != nil || resp.StatusCode != 401 {
		t.Fatalf("activate without the token: %v %v, want 401", resp.StatusCode, err)
	}
	status, st = do(http.MethodPost, "/datasets/3/activate")
	act, _ := st["activation"].(map[string]any)
	if status != 202 || st["state"] != "activating" || act["target"] != float64(3) || act["version"] != float64(1) {
		t.Fatalf("activate 3: %d %v, want 202 activating", status, st)
	}
	status, st = do(http.MethodPost, "/datasets/3/activate?wait=true")
	if status != 504 || st["state"] != "activating" || !strings.Contains(st["error"].(string), "not served by every slot") {
		t.Fatalf("activate 3 with no read node: %d %v, want 504 activating", status, st)
	}
	// Another request supersedes a waiting one.
	if status, _ := do(http.MethodPost, "/datasets/2/activate"); status != 202 {
		t.Fatalf("activate 2: %d", status)
	}
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, e.url+"/datasets/3/activate?wait=true", nil)
		req.Header.Set("Authorization", "Bearer secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	deadline = time.Now().Add(10 * time.Second)
	for { // the waiting request has made 3 the target
		a, err := e.srv.Store().Activation(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a.Target == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the target stays %d", a.Target)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if status, _ := do(http.MethodPost, "/datasets/2/activate"); status != 202 {
		t.Fatalf("activate 2: %d", status)
	}
	if status := <-done; status != 409 {
		t.Fatalf("superseded activation: %d, want 409", status)
	}
	for path, want := range map[string]int{"/datasets/9/activate": 404, "/datasets/0/activate": 400, "/datasets/99999999999999999999/activate": 404} {
		if status, st := do(http.MethodPost, path); status != want {
			t.Fatalf("POST %s: %d %v, want %d", path, status, st, want)
		}
	}
	// Asking for what serves withdraws the request and answers at once.
	if err := e.srv.Store().MarkServed(ctx, 1); err != nil {
		t.Fatal(err)
	}
	status, st = do(http.MethodPost, "/datasets/1/activate?wait=true")
	if status != 200 || st["state"] != "serving" {
		t.Fatalf("activate what serves: %d %v, want 200 serving", status, st)
	}
	if a, _ := e.srv.Store().Activation(ctx); a.Target != 0 {
		t.Fatalf("the request was not withdrawn: %+v", a)
	}
}

func decode(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%d, not JSON: %s", resp.StatusCode, b)
	}
	return m
}

// metricOf reads a metric of the server's /metrics; 0 when absent.
func metricOf(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}
