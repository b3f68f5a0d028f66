package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/promotion-service/promo/bench/gen"
	"github.com/promotion-service/promo/ingest"
	"github.com/promotion-service/promo/ingestclient"
	"github.com/promotion-service/promo/standalone"
)

// ImportBenchConfig describes promo bench import: generate a file, import
// it, and compare with a bare parse of the same file.
type ImportBenchConfig struct {
	// Rows is the size of the generated file.
	Rows int64
	// Target is the base URL of a server to import into; empty starts a
	// standalone server in this process on a temporary directory.
	Target string
	// Token is the target's ingest token, if any.
	Token string
	// Dir holds the generated file and, without Target, the store; empty
	// uses a temporary directory that is removed afterwards.
	Dir string
	// Seed of the generated file.
	Seed uint64
	// Logger receives the embedded server's messages (default: none).
	Logger *slog.Logger
	// CPUProfile, when set, receives a CPU profile of this process taken
	// during the import alone (not the generation nor the bare parse).
	CPUProfile io.Writer
}

// ImportReport is what promo bench import measured.
type ImportReport struct {
	Rows             int64   `json:"rows"`
	Bytes            int64   `json:"bytes"`
	Target           string  `json:"target"`
	SecondsQueryable float64 `json:"seconds_to_queryable"`
	RowsPerSecond    float64 `json:"rows_per_second"`
	MBPerSecond      float64 `json:"mb_per_second"`
	// PeakRSSBytes is the peak resident memory of the process that
	// imported: this one (embedded server, VmHWM) or the target's highest
	// process_resident_memory_bytes seen while it imported.
	PeakRSSBytes int64  `json:"peak_rss_bytes"`
	PeakRSSHow   string `json:"peak_rss_how"`
	// ParseSeconds is the bare single-goroutine parse of the same file;
	// ImportToParse is SecondsQueryable / ParseSeconds.
	ParseSeconds  float64 `json:"bare_parse_seconds"`
	ImportToParse float64 `json:"import_to_parse"`
}

// RunImportBench generates c.Rows rows, measures a bare parse of them and
// then their import, file to queryable.
func RunImportBench(ctx context.Context, c ImportBenchConfig) (ImportReport, error) {
	if c.Rows <= 0 {
		return ImportReport{}, fmt.Errorf("bench: rows must be positive, got %d", c.Rows)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	dir := c.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "promo-bench-import-")
		if err != nil {
			return ImportReport{}, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	path := filepath.Join(dir, "promotions.csv")
	gc := gen.DefaultConfig(c.Rows)
	gc.Seed = max(c.Seed, 1)
	size, err := generateFile(path, gc)
	if err != nil {
		return ImportReport{}, err
	}
	rep := ImportReport{Rows: c.Rows, Bytes: size}

	f, err := os.Open(path)
	if err != nil {
		return rep, err
	}
	start := time.Now()
	_, err = BareParse(f)
	f.Close()
	if err != nil {
		return rep, err
	}
	rep.ParseSeconds = time.Since(start).Seconds()

	if c.Target == "" {
		err = importEmbedded(ctx, c, dir, &rep)
	} else {
		err = importRemote(ctx, c, path, &rep)
	}
	if err != nil {
		return rep, err
	}
	rep.RowsPerSecond = float64(c.Rows) / rep.SecondsQueryable
	rep.MBPerSecond = float64(size) / 1e6 / rep.SecondsQueryable
	rep.ImportToParse = rep.SecondsQueryable / rep.ParseSeconds
	return rep, nil
}

func generateFile(path string, gc gen.Config) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n, err := gen.Generate(f, gc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// importEmbedded imports through a standalone server in this process:
// POST filename=... ?wait=true on its real listener.
func importEmbedded(ctx context.Context, c ImportBenchConfig, dir string, rep *ImportReport) error {
	cfg := standalone.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.ImportDir = dir
	cfg.Logger = c.Logger
	srv, err := standalone.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer srv.Close(context.Background())
	rep.Target = "embedded standalone"
	if c.CPUProfile != nil {
		if err := pprof.StartCPUProfile(c.CPUProfile); err != nil {
			return fmt.Errorf("cannot start the CPU profile: %w", err)
		}
	}
	start := time.Now()
	err = importFile(context.Background(), "http://"+srv.Addr(), "promotions.csv")
	rep.SecondsQueryable = time.Since(start).Seconds()
	if c.CPUProfile != nil {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return err
	}
	rep.PeakRSSBytes, rep.PeakRSSHow = peakRSS(), "VmHWM of this process (embedded server)"
	return nil
}

// importRemote streams the file to c.Target and samples its memory.
func importRemote(ctx context.Context, c ImportBenchConfig, path string, rep *ImportReport) error {
	cc := ingestclient.DefaultConfig(c.Target)
	cc.Token = c.Token
	client, err := ingestclient.New(cc)
	if err != nil {
		return err
	}
	rep.Target = c.Target
	sampler, cancel := context.WithCancel(ctx)
	peak := make(chan int64, 1)
	go func() { peak <- sampleRSS(sampler, c.Target) }()
	start := time.Now()
	st, err := client.Import(ctx, path, ingest.Options{}, nil)
	rep.SecondsQueryable = time.Since(start).Seconds()
	cancel()
	rep.PeakRSSBytes, rep.PeakRSSHow = <-peak, "highest process_resident_memory_bytes of the target, sampled every 100 ms"
	if err != nil {
		return err
	}
	if st.Rows != c.Rows {
		return fmt.Errorf("bench: target imported %d rows, want %d", st.Rows, c.Rows)
	}
	return nil
}

// peakRSS returns this process's peak resident set size (Linux), or 0.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// sampleRSS polls the target's /metrics until ctx ends and returns the
// highest resident memory it reported.
func sampleRSS(ctx context.Context, target string) int64 {
	var peak int64
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if v := scrapeRSS(target); v > peak {
			peak = v
		}
		select {
		case <-ctx.Done():
			return peak
		case <-tick.C:
		}
	}
}

func scrapeRSS(target string) int64 {
	resp, err := http.Get(strings.TrimSuffix(target, "/") + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_resident_memory_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int64(f)
		}
	}
	return 0
}

// importFile imports name, a file of the server's import directory, and
// returns once the version is committed: POST filename=... ?wait=true,
// given up when ctx ends.
func importFile(ctx context.Context, server, name string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, server+"/process-csv?wait=true",
		strings.NewReader(url.Values{"filename": {name}}.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: import of %s failed: %d %s", name, resp.StatusCode, body)
	}
	return nil
}
