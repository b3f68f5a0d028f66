package pebblestore

import (
	"fmt"
	"testing"
)

// TestImportHistoryIsKeptAndBounded: statuses survive a reopen, a save
// replaces the status of its id, and only the newest keep remain.
func TestImportHistoryIsKeptAndBounded(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s := mustOpen(t, cfg)
	for id := int64(1); id <= 5; id++ {
		if err := s.SaveImport(id, fmt.Appendf(nil, `{"import_id":%d,"state":"running"}`, id), 3); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveImport(5, []byte(`{"import_id":5,"state":"succeeded"}`), 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	docs, err := s.Imports()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`{"import_id":3,"state":"running"}`, `{"import_id":4,"state":"running"}`, `{"import_id":5,"state":"succeeded"}`}
	if len(docs) != len(want) {
		t.Fatalf("history after reopen: %q, want %q", docs, want)
	}
	for i := range want {
		if string(docs[i]) != want[i] {
			t.Fatalf("history after reopen: %q, want %q", docs, want)
		}
	}
	if _, ok := s.Current(); ok {
		t.Fatal("the import history made a dataset version current")
	}
}
