package standalone

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/pebblestore/pebblestoretest"
)

// An import that the store's disk cannot hold fails early with 507 and a
// JSON error saying what it needs, and the serving version stays: a file
// whose size says so before a row is read, and a chunked upload (size
// unknown) at the spill that would not fit, long before the disk is full.
func TestImportThatWontFitFailsEarly(t *testing.T) {
	disk := pebblestoretest.SmallDisk(t, 64<<20)
	s := startServer(t, func(c *Config) {
		c.DataDir = filepath.Join(disk.Dir, "data")
		c.MemoryBudget = 8 << 20
		c.MinRowsRatio = 0
	})
	good, recs := rows(50, 1)
	s.writeFile(t, "good.csv", good)
	if r := s.postForm(t, "/process-csv?wait=true", "good.csv"); r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}

	// A sparse 4 GiB file: its size is known, its blocks take no space.
	big := filepath.Join(s.importDir, "big.csv")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	expectJSONError(t, s.postForm(t, "/process-csv?wait=true", "big.csv"), 507, "needs about")
	checkLookup(t, s, recs[7], 1)

	// 2,000,000 generated rows (~150 MB) streamed without a length.
	pr, pw := io.Pipe()
	go func() {
		_, err := gen.Generate(pw, gen.DefaultConfig(2_000_000))
		pw.CloseWithError(err)
	}()
	defer pr.Close()
	r := do(t, http.MethodPost, s.url+"/process-csv?wait=true", "text/csv", io.MultiReader(pr))
	if r.status != 507 {
		t.Fatalf("streamed import larger than the disk: %d %s", r.status, r.body)
	}
	m := r.json(t)
	if msg, _ := m["error"].(string); !strings.Contains(msg, "needs about") || !strings.Contains(msg, "serving version is unchanged") {
		t.Fatalf("streamed import error %q", msg)
	}
	checkLookup(t, s, recs[7], 1)
	if r := s.get(t, "/datasets/current"); r.json(t)["version"] != float64(1) {
		t.Fatalf("current after the failed imports: %s", r.body)
	}
}
