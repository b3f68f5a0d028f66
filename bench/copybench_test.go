package bench

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/promotion-service/promo/localsvc"
)

func TestRunCopyBench(t *testing.T) {
	_, pgErr := localsvc.FindPostgres()
	if _, err := exec.LookPath("psql"); err != nil || pgErr != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("skipping: needs PostgreSQL and psql (%v, %v)", pgErr, err)
		}
		t.Fatal(pgErr, err)
	}
	rep, err := RunCopyBench(context.Background(), CopyBenchConfig{Rows: 5000, Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rows != 5000 || rep.CopySeconds <= 0 || rep.ImportSeconds <= 0 || rep.Speedup <= 0 || rep.PeakRSSBytes <= 0 {
		t.Fatalf("report %+v", rep)
	}
	if _, err := RunCopyBench(context.Background(), CopyBenchConfig{}); err == nil {
		t.Fatal("no error for zero rows")
	}
}
