package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/promotion-service/promo/cache"
	"github.com/promotion-service/promo/devcluster"
	"github.com/promotion-service/promo/localsvc"
)

const (
	faultNodes    = 3
	faultReplicas = 2
	// childNode is the index of n3, the read node run as a promo process.
	childNode = 2
	// nodeStoreSize is the size of the tmpfs that holds n3's store when
	// this process is root: room for a few versions, and little to fill.
	nodeStoreSize = 64 << 20
)

func numCPU() int { return runtime.NumCPU() }

// harness is the cluster of a fault run: a devcluster whose ingest service
// and read node n3 are promo processes it starts, kills and restarts, and
// whose PostgreSQL, Redis and broker it stops, freezes and restarts.
type harness struct {
	cfg       FaultsConfig
	dir       string
	ownDir    bool
	importDir string
	dc        *devcluster.Cluster
	e         devcluster.Endpoints
	data      *faultData
	client    *http.Client // probes and small requests, 10 s at most

	ingest    *child
	ingestURL string
	node      *child // n3
	nodeStore string
	mounts    []string

	// What drills left down, for heal.
	pgStopped, pgPaused, redisStopped, redisPaused, kafkaStopped bool

	mu       sync.Mutex
	versions map[uint64]int // committed version -> generation
	gen      int            // generations written so far
	seen     uint64         // newest version the proxy has answered
}

// startHarness starts the cluster and imports a first version.
func startHarness(ctx context.Context, c FaultsConfig) (_ *harness, err error) {
	if c.Binary == "" {
		if c.Binary, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("bench: cannot find this program to run its children: %w", err)
		}
	}
	h := &harness{cfg: c, dir: c.Dir, versions: map[uint64]int{}, client: &http.Client{Timeout: 10 * time.Second}}
	if h.dir == "" {
		if h.dir, err = os.MkdirTemp("", "promo-faults-"); err != nil {
			return nil, err
		}
		h.ownDir = true
	}
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	// PostgreSQL runs as user postgres when this process is root.
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return nil, err
	}
	_ = os.Chmod(h.dir, 0o755)
	h.importDir = filepath.Join(h.dir, "import")
	h.nodeStore = filepath.Join(h.dir, "n3-store")
	for _, d := range []string{h.importDir, h.nodeStore} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if isRoot() {
		if err := mountTmpfs(h.nodeStore, nodeStoreSize); err != nil {
			return nil, fmt.Errorf("bench: cannot mount a tmpfs for n3's store: %w", err)
		}
		h.mounts = append(h.mounts, h.nodeStore)
	}
	h.progressf("generating %d ids", c.Rows)
	h.data = newFaultData(c.Rows, 7)
	h.progressf("starting the cluster in %s", h.dir)
	h.dc, err = devcluster.Start(ctx, devcluster.Config{Dir: filepath.Join(h.dir, "cluster"), ImportDir: h.importDir,
		Nodes: faultNodes, Replicas: faultReplicas, Cache: cache.ModeRedis, NodePrefix: "n",
		NodesStopped: true, NoIngest: true, Ephemeral: true, Logger: c.Logger})
	if err != nil {
		return nil, err
	}
	h.e = h.dc.Endpoints()
	if err := h.startIngest(ctx); err != nil {
		return nil, err
	}
	for i := range faultNodes {
		if i == childNode {
			err = h.startNode(ctx)
		} else {
			err = h.dc.StartNode(ctx, i)
		}
		if err != nil {
			return nil, err
		}
	}
	h.progressf("importing the first version")
	if _, out, err := h.importGen(ctx); err != nil || out.Code != http.StatusOK {
		return nil, fmt.Errorf("bench: first import: %v %s", err, out)
	}
	if _, err := h.converge(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *harness) progressf(format string, args ...any) {
	fmt.Fprintf(h.cfg.Progress, "faults: "+format+"\n", args...)
}

// close stops everything the harness started and removes what it made.
func (h *harness) close() {
	if h.dc != nil {
		// A frozen server would not stop.
		if h.pgPaused {
			_ = h.dc.Postgres().Resume()
		}
		if h.redisPaused {
			_ = h.dc.Redis().Resume()
		}
	}
	for _, c := range []*child{h.node, h.ingest} {
		if c != nil {
			c.stop(10 * time.Second)
		}
	}
	if h.dc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := h.dc.Close(ctx); err != nil {
			h.progressf("closing the cluster: %v", err)
		}
		cancel()
	}
	for i := len(h.mounts) - 1; i >= 0; i-- {
		if err := unmount(h.mounts[i]); err != nil {
			h.progressf("cannot unmount %s: %v", h.mounts[i], err)
		}
	}
	if h.ownDir {
		os.RemoveAll(h.dir)
	}
}

// startIngest starts promo ingest against the cluster's PostgreSQL and
// broker, on the same address at every start.
func (h *harness) startIngest(ctx context.Context) error {
	if h.ingestURL == "" {
		port, err := localsvc.FreePort()
		if err != nil {
			return err
		}
		h.ingestURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	}
	c, err := startChild("promo ingest", h.cfg.Binary, []string{"ingest", "--addr", strings.TrimPrefix(h.ingestURL, "http://"),
		"--postgres-url", h.e.Postgres, "--kafka-brokers", h.e.Kafka, "--import-dir", h.importDir, "--log-level", "info"},
		filepath.Join(h.dir, "ingest.log"))
	if err != nil {
		return err
	}
	h.ingest = c
	return h.waitChild(ctx, c, h.ingestURL+"/healthz")
}

// startNode starts read node n3 as promo readnode, on its store.
func (h *harness) startNode(ctx context.Context) error {
	var members []string
	for _, n := range h.e.Nodes {
		members = append(members, n.Name+"="+n.URL)
	}
	self := h.e.Nodes[childNode]
	c, err := startChild("promo readnode "+self.Name, h.cfg.Binary, []string{"readnode", "--name", self.Name,
		"--addr", strings.TrimPrefix(self.URL, "http://"), "--data-dir", h.nodeStore,
		"--postgres-url", h.e.Postgres, "--kafka-brokers", h.e.Kafka,
		"--nodes", strings.Join(members, ","), "--replicas", fmt.Sprint(faultReplicas),
		"--cache", cache.ModeRedis, "--redis-url", h.e.Redis, "--log-level", "info"},
		filepath.Join(h.dir, self.Name+".log"))
	if err != nil {
		return err
	}
	h.node = c
	return h.waitChild(ctx, c, self.URL+"/healthz")
}

// waitChild waits until c answers 200 on probe.
func (h *harness) waitChild(ctx context.Context, c *child, probe string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		if !c.alive() {
			return fmt.Errorf("bench: %s exited at start: %s", c.name, c.logTail(2000))
		}
		if code, _, err := h.get(ctx, probe); err == nil && code == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s does not answer %s after a minute: %s", c.name, probe, c.logTail(2000))
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// get fetches u and returns its status and body.
func (h *harness) get(ctx context.Context, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, b, err
}

// getJSON fetches u into v; a status other than 200 is an error.
func (h *harness) getJSON(ctx context.Context, u string, v any) error {
	code, b, err := h.get(ctx, u)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", u, code, strings.TrimSpace(tail(string(b), 300)))
	}
	return json.Unmarshal(b, v)
}

// readyz is a read node's GET /readyz.
type readyz struct {
	Ready   bool
	Active  uint64 `json:"active_version"`
	Serving uint64 `json:"serving_version"`
}

func (h *harness) nodeReadyz(ctx context.Context, i int) (readyz, error) {
	code, b, err := h.get(ctx, h.e.Nodes[i].URL+"/readyz")
	if err != nil {
		return readyz{}, err
	}
	var r readyz
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s /readyz: %d %s", h.e.Nodes[i].Name, code, b)
	}
	r.Ready = code == http.StatusOK
	return r, nil
}

// waitServing waits until every node of nodes is ready and serves version
// v or a newer one, at most d, and returns how long it took.
func (h *harness) waitServing(ctx context.Context, v uint64, nodes []int, d time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(d)
	for {
		var behind []string
		for _, i := range nodes {
			r, err := h.nodeReadyz(ctx, i)
			if err != nil || !r.Ready || r.Serving < v {
				behind = append(behind, fmt.Sprintf("%s (serving %d, ready %v, %v)", h.e.Nodes[i].Name, r.Serving, r.Ready, err))
			}
		}
		if len(behind) == 0 {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return time.Since(start), fmt.Errorf("not serving version %d after %v: %s", v, d, strings.Join(behind, ", "))
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return time.Since(start), err
		}
	}
}

// allNodes returns the indexes of every read node.
func allNodes() []int {
	n := make([]int, faultNodes)
	for i := range n {
		n[i] = i
	}
	return n
}

// survivors returns the indexes of the read nodes other than n3.
func survivors() []int {
	var n []int
	for i := range faultNodes {
		if i != childNode {
			n = append(n, i)
		}
	}
	return n
}

// waitProxyUp waits until the proxy sees every read node up, at most d.
func (h *harness) waitProxyUp(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		var ready struct {
			Nodes map[string]bool `json:"nodes"`
		}
		code, b, err := h.get(ctx, h.e.Proxy+"/readyz")
		if err == nil {
			err = json.Unmarshal(b, &ready)
		}
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		for _, n := range h.e.Nodes {
			if err == nil && !ready.Nodes[n.Name] {
				err = fmt.Errorf("the proxy has %s down", n.Name)
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the proxy is not ready after %v: %w", d, err)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// converge waits until every read node serves the newest committed
// version and the proxy sees them all, and returns that version.
func (h *harness) converge(ctx context.Context, d time.Duration) (uint64, error) {
	deadline := time.Now().Add(d)
	var v uint64
	for {
		var err error
		if v, err = h.latestCommitted(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return 0, err
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
	}
	if _, err := h.waitServing(ctx, v, allNodes(), time.Until(deadline)); err != nil {
		return v, err
	}
	return v, h.waitProxyUp(ctx, max(time.Until(deadline), 5*time.Second))
}

// heal brings back what a drill left down or dead, then waits for the
// cluster to settle.
func (h *harness) heal(ctx context.Context) error {
	var errs []error
	if h.pgPaused {
		errs = append(errs, h.resumePostgres())
	}
	if h.pgStopped {
		errs = append(errs, h.restartPostgres(ctx))
	}
	if h.redisPaused {
		errs = append(errs, h.resumeRedis())
	}
	if h.redisStopped {
		errs = append(errs, h.restartRedis(ctx))
	}
	if h.kafkaStopped {
		errs = append(errs, h.restartKafka())
	}
	if !h.ingest.alive() {
		errs = append(errs, h.startIngest(ctx))
	}
	if !h.node.alive() {
		errs = append(errs, h.startNode(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	_, err := h.converge(ctx, time.Minute)
	return err
}

func (h *harness) stopPostgres() error {
	h.pgStopped = true
	return h.dc.Postgres().Stop()
}

func (h *harness) restartPostgres(ctx context.Context) error {
	if err := h.dc.Postgres().Restart(ctx); err != nil {
		return err
	}
	h.pgStopped = false
	return nil
}

func (h *harness) pausePostgres() error {
	h.pgPaused = true
	return h.dc.Postgres().Pause()
}

func (h *harness) resumePostgres() error {
	if err := h.dc.Postgres().Resume(); err != nil {
		return err
	}
	h.pgPaused = false
	return nil
}

func (h *harness) stopRedis() error {
	h.redisStopped = true
	return h.dc.Redis().Stop()
}

func (h *harness) restartRedis(ctx context.Context) error {
	if err := h.dc.Redis().Restart(ctx); err != nil {
		return err
	}
	h.redisStopped = false
	return nil
}

func (h *harness) pauseRedis() error {
	h.redisPaused = true
	return h.dc.Redis().Pause()
}

func (h *harness) resumeRedis() error {
	if err := h.dc.Redis().Resume(); err != nil {
		return err
	}
	h.redisPaused = false
	return nil
}

func (h *harness) stopKafka() {
	h.kafkaStopped = true
	h.dc.Kafka().Stop()
}

func (h *harness) restartKafka() error {
	if err := h.dc.Kafka().Restart(); err != nil {
		return err
	}
	h.kafkaStopped = false
	return nil
}

// waitMidPull waits until one of nodes lists a version newer than after
// as building (it is pulling it), polling fast, at most d, and returns
// the node and the version.
func (h *harness) waitMidPull(ctx context.Context, nodes []int, after uint64, d time.Duration) (int, uint64, error) {
	deadline := time.Now().Add(d)
	for {
		for _, i := range nodes {
			var out struct {
				Datasets []struct {
					Version uint64 `json:"version"`
					State   string `json:"state"`
				} `json:"datasets"`
			}
			if err := h.getJSON(ctx, h.e.Nodes[i].URL+"/datasets", &out); err != nil {
				continue
			}
			for _, v := range out.Datasets {
				if v.Version > after && v.State == "building" {
					return i, v.Version, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return -1, 0, fmt.Errorf("no read node was seen pulling a version after %d within %v", after, d)
		}
		if err := sleep(ctx, 2*time.Millisecond); err != nil {
			return -1, 0, err
		}
	}
}

// scrapeSum returns the sum of the series of base's metrics whose line
// starts with prefix (a name and "{" for every series of a labelled
// metric), or 0.
func scrapeSum(ctx context.Context, base, prefix string) float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		var f float64
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			fmt.Sscan(line[i+1:], &f)
		}
		sum += f
	}
	return sum
}
