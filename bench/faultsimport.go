package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/promotion-service/promo/ingest"
)

// importOutcome is the answer to an import request.
type importOutcome struct {
	Code   int
	Status ingest.Status
	Body   string
}

func (o importOutcome) String() string {
	if o.Status.State != "" {
		s := fmt.Sprintf("%d, state %s", o.Code, o.Status.State)
		if o.Status.DatasetVersion > 0 {
			s += fmt.Sprintf(", version %d", o.Status.DatasetVersion)
		}
		if o.Status.Error != "" {
			s += ": " + o.Status.Error
		}
		return s
	}
	return fmt.Sprintf("%d %s", o.Code, strings.TrimSpace(tail(o.Body, 300)))
}

// succeeded reports whether the import committed a version.
func (o importOutcome) succeeded() bool {
	return o.Code == http.StatusOK && o.Status.State == "succeeded" && o.Status.DatasetVersion > 0
}

// newGeneration writes the next generation's file to the import
// directory.
func (h *harness) newGeneration() (int, string, error) {
	h.mu.Lock()
	g := h.gen
	h.gen++
	h.mu.Unlock()
	path := filepath.Join(h.importDir, genFile(g))
	return g, path, h.data.write(path, g)
}

// importGen imports a new generation: POST filename=... ?wait=true.
func (h *harness) importGen(ctx context.Context) (int, importOutcome, error) {
	g, path, err := h.newGeneration()
	if err != nil {
		return g, importOutcome{}, err
	}
	defer os.Remove(path)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.ingestURL+"/process-csv?wait=true",
		strings.NewReader(url.Values{"filename": {genFile(g)}}.Encode()))
	if err != nil {
		return g, importOutcome{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	out, err := h.doImport(req)
	if err == nil && out.succeeded() {
		h.setVersion(out.Status.DatasetVersion, g)
	}
	return g, out, err
}

// doImport sends an import request and reads its answer.
func (h *harness) doImport(req *http.Request) (importOutcome, error) {
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return importOutcome{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	out := importOutcome{Code: resp.StatusCode, Body: string(b)}
	_ = json.Unmarshal(b, &out.Status)
	return out, nil
}

// upload is an import streamed at a set pace, as multipart field file
// named for its generation.
type upload struct {
	g     int
	size  int64
	paced *pacedReader
	done  chan struct{}
	out   importOutcome
	err   error
}

// unpace sends the rest of the file as fast as ingest takes it.
func (u *upload) unpace() { u.paced.fast.Store(true) }

// sent returns the share of the file sent so far.
func (u *upload) sent() float64 { return float64(u.paced.n.Load()) / float64(max(u.size, 1)) }

// startUpload streams a new generation to ingest so that it takes about
// d, and returns at once.
func (h *harness) startUpload(ctx context.Context, d time.Duration) (*upload, error) {
	g, path, err := h.newGeneration()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	var head bytes.Buffer
	mw := multipart.NewWriter(&head)
	if _, err := mw.CreateFormFile("file", genFile(g)); err != nil {
		f.Close()
		return nil, err
	}
	pre := bytes.Clone(head.Bytes())
	head.Reset()
	if err := mw.Close(); err != nil {
		f.Close()
		return nil, err
	}
	post := bytes.Clone(head.Bytes())
	paced := &pacedReader{r: f, rate: float64(fi.Size()) / d.Seconds()}
	body := io.MultiReader(bytes.NewReader(pre), paced, bytes.NewReader(post))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.ingestURL+"/process-csv?wait=true", body)
	if err != nil {
		f.Close()
		return nil, err
	}
	req.ContentLength = int64(len(pre)) + fi.Size() + int64(len(post))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	u := &upload{g: g, size: fi.Size(), paced: paced, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		defer os.Remove(path)
		defer f.Close()
		u.out, u.err = h.doImport(req)
		if u.err == nil && u.out.succeeded() {
			h.setVersion(u.out.Status.DatasetVersion, g)
		}
	}()
	return u, nil
}

// wait waits for the upload's answer, at most d.
func (u *upload) wait(ctx context.Context, d time.Duration) error {
	select {
	case <-u.done:
		return nil
	case <-time.After(d):
		return fmt.Errorf("the upload of generation %d had no answer after %v", u.g, d)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// importState returns the state of the newest import of generation g that
// ingest knows, and its error, from GET /imports.
func (h *harness) importState(ctx context.Context, g int) (ingest.Status, error) {
	var out struct {
		Imports []ingest.Status `json:"imports"`
	}
	if err := h.getJSON(ctx, h.ingestURL+"/imports", &out); err != nil {
		return ingest.Status{}, err
	}
	for _, st := range out.Imports {
		if generationOf(st.Source) == g {
			return st, nil
		}
	}
	return ingest.Status{}, fmt.Errorf("ingest lists no import of %s", genFile(g))
}

func (h *harness) setVersion(v uint64, g int) {
	h.mu.Lock()
	h.versions[v] = g
	h.mu.Unlock()
}

// generation returns the generation of version v, if known.
func (h *harness) generation(v uint64) (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g, ok := h.versions[v]
	return g, ok
}

// datasetVersion is a version as ingest's GET /datasets lists it.
type datasetVersion struct {
	Version uint64 `json:"version"`
	State   string `json:"state"`
	Rows    int64  `json:"rows"`
	Source  string `json:"source"`
}

// datasets lists ingest's versions and learns the generation of the
// committed ones.
func (h *harness) datasets(ctx context.Context) ([]datasetVersion, error) {
	var out struct {
		Datasets []datasetVersion `json:"datasets"`
	}
	if err := h.getJSON(ctx, h.ingestURL+"/datasets", &out); err != nil {
		return nil, err
	}
	for _, d := range out.Datasets {
		if g := generationOf(d.Source); g >= 0 && d.State == "committed" {
			h.setVersion(d.Version, g)
		}
	}
	return out.Datasets, nil
}

// latestCommitted returns the newest committed version.
func (h *harness) latestCommitted(ctx context.Context) (uint64, error) {
	ds, err := h.datasets(ctx)
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, d := range ds {
		if d.State == "committed" {
			v = max(v, d.Version)
		}
	}
	if v == 0 {
		return 0, errors.New("ingest lists no committed version")
	}
	return v, nil
}
