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
	"github.com/promotion-service/promo/store"
)

// ImportResult is what one in-process import of a file measured.
type ImportResult struct {
	Rows    int64
	Bytes   int64
	Elapsed time.Duration // from the start of the import to queryable
}

// ImportFile imports the CSV at path into a fresh store in dataDir, in
// process, and returns once the new version is queryable.
func ImportFile(ctx context.Context, path, dataDir string, sc store.Config) (ImportResult, error) {
	sc.Dir = dataDir
	if sc.Logger == nil {
		sc.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	st, err := store.Open(ctx, sc)
	if err != nil {
		return ImportResult{}, err
	}
	defer st.Close()
	svc, err := ingest.New(ingest.Config{ImportDir: filepath.Dir(path), Logger: sc.Logger}, storeSink{st})
	if err != nil {
		return ImportResult{}, err
	}
	defer svc.Close(ctx)
	f, err := os.Open(path)
	if err != nil {
		return ImportResult{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return ImportResult{}, err
	}
	start := time.Now()
	job, err := svc.Start(ingest.Input{Source: path, Reader: f, Size: fi.Size(), Close: f.Close}, ingest.Options{})
	if err != nil {
		f.Close()
		return ImportResult{}, err
	}
	<-job.Done()
	el := time.Since(start)
	if err := job.Err(); err != nil {
		return ImportResult{}, fmt.Errorf("import failed: %w", err)
	}
	st2 := job.Status()
	return ImportResult{Rows: st2.Rows, Bytes: fi.Size(), Elapsed: el}, nil
}

type storeSink struct{ st *store.Store }

func (s storeSink) Begin(ctx context.Context, source string, workers int) (ingest.Batch, error) {
	b, err := s.st.Begin(ctx, source, workers)
	if err != nil {
		return nil, err
	}
	return b, nil
}
