package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/promotion-service/promo/ingest"
	"github.com/promotion-service/promo/pebblestore"
	"github.com/promotion-service/promo/standalone"
)

// importResult is what one in-process import of a file measured.
type importResult struct {
	Rows    int64
	Bytes   int64
	Elapsed time.Duration // from the start of the import to queryable
}

// importInProcess imports the CSV at path into a fresh store in dataDir, in
// process, and returns once the new version is queryable.
func importInProcess(ctx context.Context, path, dataDir string, sc pebblestore.Config) (importResult, error) {
	sc.Dir = dataDir
	if sc.Logger == nil {
		sc.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	st, err := pebblestore.Open(ctx, sc)
	if err != nil {
		return importResult{}, err
	}
	defer st.Close()
	svc, err := ingest.New(ingest.Config{APIConfig: ingest.APIConfig{ImportDir: filepath.Dir(path)}, Logger: sc.Logger}, standalone.Sink(st))
	if err != nil {
		return importResult{}, err
	}
	defer svc.Close(ctx)
	f, err := os.Open(path)
	if err != nil {
		return importResult{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return importResult{}, err
	}
	start := time.Now()
	job, err := svc.Start(ctx, ingest.Input{Source: path, Reader: f, Size: fi.Size(), Close: f.Close}, ingest.Options{})
	if err != nil {
		f.Close()
		return importResult{}, err
	}
	<-job.Done()
	el := time.Since(start)
	if err := job.Err(); err != nil {
		return importResult{}, fmt.Errorf("import failed: %w", err)
	}
	st2 := job.Status()
	return importResult{Rows: st2.Rows, Bytes: fi.Size(), Elapsed: el}, nil
}
