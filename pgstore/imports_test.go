package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/promotion-service/promo/localsvc/localsvctest"
)

// TestImportHistoryIsKeptAndBounded: statuses survive a reopen, a save
// replaces the status of its id, and only the newest keep remain.
func TestImportHistoryIsKeptAndBounded(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(localsvctest.Database(t))
	s := mustOpen(t, cfg)
	for id := int64(1); id <= 5; id++ {
		if err := s.SaveImport(ctx, id, fmt.Appendf(nil, `{"import_id":%d,"state":"running","source":"upload:a \"b\""}`, id), 3); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveImport(ctx, 5, []byte(`{"import_id":5,"state":"succeeded"}`), 3); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = mustOpen(t, cfg)
	docs, err := s.Imports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	for _, d := range docs {
		var m map[string]any
		if err := json.Unmarshal(d, &m); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		got = append(got, m)
	}
	if len(got) != 3 || got[0]["import_id"] != float64(3) || got[1]["source"] != `upload:a "b"` || got[2]["state"] != "succeeded" {
		t.Fatalf("history after reopen: %v", got)
	}
}
