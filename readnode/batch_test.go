package readnode_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// TestBatchOnReadNodes: every node answers a batch of ids from all over
// the ring with the ids of the slots it holds, found or missing, and lists
// the others as misdirected, each list in request order.
func TestBatchOnReadNodes(t *testing.T) {
	c := newCluster(t, []string{"n1", "n2", "n3"}, 2, nil)
	recs := c.importVersion(3000, 1)
	c.waitServing(1)
	// Ids of every node's slots, unknown ones, and a duplicate.
	var ids []promotion.ID
	known := map[promotion.ID]promotion.Record{}
	for i := 0; i < len(recs); i += 11 {
		ids = append(ids, recs[i].ID)
		known[recs[i].ID] = recs[i]
		if i%7 == 0 {
			ids = append(ids, promotion.ID{byte(i), byte(i >> 8), 0xee})
		}
	}
	ids = append(ids, ids[0], ids[1])
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = id.String()
	}
	body, _ := json.Marshal(map[string][]string{"ids": strs})
	for _, n := range c.nodes {
		self := c.ring.Index(n.Name)
		var want struct {
			Version     int               `json:"version"`
			Promotions  []json.RawMessage `json:"promotions"`
			Missing     []string          `json:"missing"`
			Misdirected []string          `json:"misdirected"`
		}
		want.Version = 1
		want.Missing, want.Promotions = []string{}, []json.RawMessage{}
		for _, id := range ids {
			r, ok := known[id]
			switch {
			case !c.ring.Holds(self, ring.Slot(id, ring.DefaultSlots)):
				want.Misdirected = append(want.Misdirected, id.String())
			case ok:
				want.Promotions = append(want.Promotions, promotion.AppendJSON(nil, &r))
			default:
				want.Missing = append(want.Missing, id.String())
			}
		}
		if len(want.Misdirected) == 0 || len(want.Missing) == 0 || len(want.Promotions) == 0 {
			t.Fatalf("%s: the batch does not exercise every list: %d found, %d missing, %d misdirected", n.Name, len(want.Promotions), len(want.Missing), len(want.Misdirected))
		}
		resp, err := http.Post(n.URL+"/promotions/batch", "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantBody, _ := json.Marshal(want)
		if resp.StatusCode != 200 || resp.Header.Get("X-Dataset-Version") != "1" || string(got) != string(wantBody) {
			t.Fatalf("%s: %d (version %q)\n%s\nwant\n%s", n.Name, resp.StatusCode, resp.Header.Get("X-Dataset-Version"), got, wantBody)
		}
	}
	// Malformed batches are refused as on a standalone server.
	resp, err := http.Post(c.nodes[0].URL+"/promotions/batch", "application/json", strings.NewReader(`{"ids":["nope"]}`))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(got), `"id":"nope"`) {
		t.Fatalf("malformed id: %d %s", resp.StatusCode, got)
	}
}
