package devcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/promotion-service/promo/promotion"
)

// TestBatchThroughProxy: batches through the proxy of a whole cluster come
// back complete, in request order, from one version: with every node up,
// with one node stopped, and while a new version is imported.
func TestBatchThroughProxy(t *testing.T) {
	c, dir := start(t)
	e := c.Endpoints()
	recs := version(t, filepath.Join(dir, "v1.csv"), 3000, 1)
	importFile(t, c, "v1.csv")
	waitActive(t, c, recs[0].ID, 1)
	rng := rand.New(rand.NewPCG(8, 8))
	// batch asks for n random ids, one in eight unknown, and checks the
	// answer; it returns the version answered.
	batch := func(n int) (int, error) {
		idx := make([]int, n)
		ids := make([]string, n)
		for i := range idx {
			idx[i] = rng.IntN(len(recs))
			ids[i] = recs[idx[i]].ID.String()
			if i%8 == 7 {
				idx[i] = -1
				ids[i] = promotion.ID{0xfe, byte(i), byte(i >> 8)}.String()
			}
		}
		body, _ := json.Marshal(map[string][]string{"ids": ids})
		resp, err := http.Post(e.Proxy+"/promotions/batch", "application/json", strings.NewReader(string(body)))
		if err != nil {
			return 0, err
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var a struct {
			Version     int               `json:"version"`
			Promotions  []json.RawMessage `json:"promotions"`
			Missing     []string          `json:"missing"`
			Misdirected []string          `json:"misdirected"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(got, &a) != nil {
			return 0, fmt.Errorf("%d %s", resp.StatusCode, got)
		}
		if h := resp.Header.Get("X-Dataset-Version"); h != fmt.Sprint(a.Version) {
			return 0, fmt.Errorf("X-Dataset-Version %s for an answer of version %d", h, a.Version)
		}
		var want struct{ promotions, missing []string }
		for i, j := range idx {
			if j < 0 {
				want.missing = append(want.missing, ids[i])
				continue
			}
			r := recs[j]
			r.PriceMicros = int64(a.Version)*1_000_000 + int64(j%100)*10_000
			want.promotions = append(want.promotions, string(promotion.AppendJSON(nil, &r)))
		}
		var promotions []string
		for _, p := range a.Promotions {
			promotions = append(promotions, string(p))
		}
		if fmt.Sprint(promotions) != fmt.Sprint(want.promotions) || fmt.Sprint(a.Missing) != fmt.Sprint(want.missing) || a.Misdirected != nil {
			return 0, fmt.Errorf("version %d answered %s", a.Version, got)
		}
		return a.Version, nil
	}
	for _, n := range []int{1, 100, 1000} {
		if v, err := batch(n); err != nil || v != 1 {
			t.Fatalf("%d ids: version %d, %v", n, v, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.StopNode(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if v, err := batch(300); err != nil || v != 1 {
			t.Fatalf("with a node stopped: version %d, %v", v, err)
		}
	}
	// A new version while batches run: each answer whole from one version,
	// never going back.
	version(t, filepath.Join(dir, "v2.csv"), 3000, 2)
	imported := make(chan error, 1)
	go func() {
		resp, err := http.PostForm(e.Ingest+"/process-csv?wait=true", url.Values{"filename": {"v2.csv"}})
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("import v2.csv: %d %s", resp.StatusCode, b)
			}
		}
		imported <- err
	}()
	last, batches := 0, 0
	deadline := time.Now().Add(60 * time.Second)
	for last < 2 {
		v, err := batch(200)
		if err != nil {
			t.Fatalf("during the switch, after %d batches: %v", batches, err)
		}
		if v < last {
			t.Fatalf("version went back from %d to %d", last, v)
		}
		last = v
		batches++
		if time.Now().After(deadline) {
			t.Fatal("version 2 never answered")
		}
	}
	if err := <-imported; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d batches during the switch", batches)
}
