package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseWrkRate(t *testing.T) {
	out, err := os.ReadFile(filepath.Join("testdata", "wrk.txt"))
	if err != nil {
		t.Fatal(err)
	}
	f := func(out string, want float64, wantErr string) {
		t.Helper()
		got, err := parseWrkRate([]byte(out))
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("got %v, %v; want an error containing %q", got, err, wantErr)
			}
			return
		}
		if err != nil || got != want {
			t.Fatalf("got %v, %v; want %v", got, err, want)
		}
	}
	f(string(out), 101063.94, "")
	f("Requests/sec:   12.5\n", 12.5, "")
	f("unable to connect to 127.0.0.1:1 Connection refused\n", 0, "no rate")
	f("Requests/sec: lots\n", 0, "not a number")
}
