package check

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/localsvc/localsvctest"
)

func TestMain(m *testing.M) { os.Exit(localsvctest.Run(m)) }

// pod is one process the base would run: a replica of a workload.
type pod struct {
	name     string
	workload Object
	ctr      corev1.Container
	port     int
	mounts   map[string]string // mountPath -> a directory of the test
}

// TestLive runs the base's containers as processes on loopback, against a
// real PostgreSQL and an in-process Kafka-protocol broker: each pod's args
// and environment as the base gives them, with $(VAR) expanded from its
// env, ConfigMap and Secret references resolved to the local services, the
// listen address and the DNS names of other pods mapped to loopback ports,
// and mount paths to temporary directories. Every pod must start, answer
// its liveness and startup probes 200, its readiness probe from a route it
// serves (200, or 503 before the first import), and its scrape path with
// promo metrics. The read nodes start together, as the StatefulSet's
// Parallel policy starts them.
func TestLive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and every pod of the base")
	}
	objs := renderBase(t)
	bin := promoBinary(t)
	local := map[string]string{
		"PROMO_POSTGRES_URL":  localsvctest.Database(t),
		"PROMO_KAFKA_BROKERS": localsvctest.Kafka(t, "promotions.datasets").Addr(),
		// --cache=off in the base: the read nodes never dial it.
		"PROMO_REDIS_URL": "redis://127.0.0.1:1/0",
	}
	secrets := map[string]string{"ingest-token": "k8s-check-token"}

	var order [][]*pod // started stage by stage
	hosts := map[string]int{}
	for _, kind := range []string{"promo-ingest", "promo-readnode", "promo-proxy"} {
		var stage []*pod
		for _, o := range objs {
			if o.Name != kind {
				continue
			}
			var tmpl corev1.PodTemplateSpec
			replicas := int32(1)
			switch v := o.Obj.(type) {
			case *appsv1.Deployment:
				tmpl = v.Spec.Template
			case *appsv1.StatefulSet:
				tmpl = v.Spec.Template
				if v.Spec.Replicas != nil {
					replicas = *v.Spec.Replicas
				}
			default:
				continue
			}
			for i := range replicas {
				port, err := localsvc.FreePort()
				if err != nil {
					t.Fatal(err)
				}
				p := &pod{name: fmt.Sprintf("%s-%d", o.Name, i), workload: o, ctr: tmpl.Spec.Containers[0], port: port, mounts: map[string]string{}}
				for _, m := range p.ctr.VolumeMounts {
					p.mounts[m.MountPath] = t.TempDir()
				}
				hosts[p.name] = port
				stage = append(stage, p)
			}
		}
		if len(stage) == 0 {
			t.Fatalf("the base has no workload %s", kind)
		}
		order = append(order, stage)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	outs := map[*pod]*output{}
	for _, stage := range order {
		var wg sync.WaitGroup
		for _, p := range stage {
			args, env := p.commandLine(t, objs, local, secrets, hosts)
			t.Logf("%s: promo %s", p.name, strings.Join(args, " "))
			out := startPromo(t, bin, args, env)
			outs[p] = out
			wg.Go(func() { p.probe(ctx, t, out) })
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}

	// An import through ingest, with the token from the Secret, as the
	// README tells: then every read node and the proxy turn ready, and the
	// proxy answers a lookup.
	ingest, proxy := order[0][0], order[2][0]
	f, err := os.Open(filepath.Join(repo, "promotions.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/process-csv?wait=true", ingest.port), f)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("Authorization", "Bearer "+secrets["ingest-token"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /process-csv?wait=true: %d %s", resp.StatusCode, body)
	}
	var wg sync.WaitGroup
	for _, p := range append(slices.Clone(order[1]), proxy) {
		wg.Go(func() {
			path := p.ctr.ReadinessProbe.HTTPGet.Path
			code, body, err := waitFor(ctx, outs[p], fmt.Sprintf("http://127.0.0.1:%d%s", p.port, path), func(code int) bool { return code == http.StatusOK })
			if err != nil {
				t.Errorf("%s: GET %s after an import: %v (last %d: %s)", p.name, path, err, code, body)
			}
		})
	}
	wg.Wait()
	// Every id of the file, through the proxy: the ring it routes by
	// covers every slot.
	rows, err := os.ReadFile(filepath.Join(repo, "promotions.csv"))
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for line := range strings.Lines(string(rows)) {
		id, _, _ := strings.Cut(line, ",")
		code, got, err := get(ctx, fmt.Sprintf("http://127.0.0.1:%d/promotions/%s", proxy.port, id))
		if err != nil || code != http.StatusOK || !strings.Contains(got, id) {
			if failed++; failed <= 3 {
				t.Errorf("GET /promotions/%s through the proxy: %d %v %s", id, code, err, got)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d lookups through the proxy failed", failed)
	}
}

func get(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// commandLine returns the pod's args and environment for a run on
// loopback.
func (p *pod) commandLine(t *testing.T, objs []Object, local, secrets map[string]string, hosts map[string]int) (args, env []string) {
	t.Helper()
	vars := map[string]string{}
	expand := func(s string) string {
		return varRef.ReplaceAllStringFunc(s, func(ref string) string { return vars[ref[2:len(ref)-1]] })
	}
	for _, e := range p.ctr.Env {
		v, ok := expand(e.Value), true
		if src := e.ValueFrom; src != nil {
			switch {
			case src.FieldRef != nil && src.FieldRef.FieldPath == "metadata.name":
				v = p.name
			case src.FieldRef != nil && src.FieldRef.FieldPath == "metadata.namespace":
				v = "default"
			case src.ConfigMapKeyRef != nil:
				if v, ok = local[src.ConfigMapKeyRef.Key]; !ok {
					v, ok = configValue(objs, src.ConfigMapKeyRef.Name, src.ConfigMapKeyRef.Key)
				}
			case src.SecretKeyRef != nil:
				v, ok = secrets[src.SecretKeyRef.Key]
				if !ok && (src.SecretKeyRef.Optional == nil || !*src.SecretKeyRef.Optional) {
					t.Fatalf("%s: env %s needs key %s of Secret %s, which this test does not know", p.name, e.Name, src.SecretKeyRef.Key, src.SecretKeyRef.Name)
				}
			default:
				t.Fatalf("%s: env %s has a source this test does not resolve", p.name, e.Name)
			}
		}
		if ok {
			v = p.localize(v, hosts)
			vars[e.Name] = v
			env = append(env, e.Name+"="+v)
		}
	}
	for _, a := range p.ctr.Args {
		a = expand(a)
		if f, _, ok := strings.Cut(a, "="); ok && strings.TrimLeft(f, "-") == "addr" {
			a = fmt.Sprintf("%s=127.0.0.1:%d", f, p.port)
		}
		args = append(args, p.localize(a, hosts))
	}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--addr=") }) {
		t.Fatalf("%s: args %v give --addr in a form this test does not rewrite (want --addr=...)", p.name, args)
	}
	return args, env
}

// podURL matches a URL whose host is a pod's DNS name, <pod>.<service>...
var podURL = regexp.MustCompile(`http://([a-z0-9-]+)\.[a-z0-9.-]+:[0-9]+`)

// localize maps the DNS names of the base's pods to their loopback ports,
// and mount paths to the test's directories.
func (p *pod) localize(s string, hosts map[string]int) string {
	s = podURL.ReplaceAllStringFunc(s, func(u string) string {
		host := podURL.FindStringSubmatch(u)[1]
		if port, ok := hosts[host]; ok {
			return fmt.Sprintf("http://127.0.0.1:%d", port)
		}
		return u
	})
	for path, dir := range p.mounts {
		if s == path {
			return dir
		}
		if f, v, ok := strings.Cut(s, "="); ok && v == path {
			return f + "=" + dir
		}
	}
	return s
}

func configValue(objs []Object, name, key string) (string, bool) {
	for _, o := range objs {
		if cm, ok := o.Obj.(*corev1.ConfigMap); ok && cm.Name == name {
			v, ok := cm.Data[key]
			return v, ok
		}
	}
	return "", false
}

// output is a process's combined output and its exit, once it has ended.
type output struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
	err  error
}

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(b)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// startPromo starts bin with args and only env in its environment; it
// dies with the test binary and is stopped (SIGTERM, then SIGKILL) when
// the test ends.
func startPromo(t *testing.T, bin string, args, env []string) *output {
	t.Helper()
	out := &output{done: make(chan struct{})}
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { out.err = cmd.Wait(); close(out.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-out.done:
		case <-time.After(35 * time.Second):
			_ = cmd.Process.Kill()
			<-out.done
		}
		if t.Failed() {
			t.Logf("promo %s output:\n%s", strings.Join(args, " "), out.String())
		}
	})
	return out
}

// probe checks the pod's probes and scrape path against the running
// process. It reports through t.Error: it runs on its own goroutine.
func (p *pod) probe(ctx context.Context, t *testing.T, out *output) {
	base := fmt.Sprintf("http://127.0.0.1:%d", p.port)
	// Liveness (and startup) first: 200 once the process listens.
	for _, pr := range []*corev1.Probe{p.ctr.StartupProbe, p.ctr.LivenessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			continue
		}
		code, _, err := waitFor(ctx, out, base+pr.HTTPGet.Path, func(code int) bool { return code == http.StatusOK })
		if err != nil {
			t.Errorf("%s: GET %s: %v (last status %d)", p.name, pr.HTTPGet.Path, err, code)
			return
		}
	}
	if pr := p.ctr.ReadinessProbe; pr != nil && pr.HTTPGet != nil {
		// Before the first import a read node and the proxy are not ready:
		// 503, from the route. A 404 or 405 would mean no such route.
		code, body, err := waitFor(ctx, out, base+pr.HTTPGet.Path, func(code int) bool {
			return code == http.StatusOK || code == http.StatusServiceUnavailable
		})
		if err != nil {
			t.Errorf("%s: GET %s: %v (last status %d: %s)", p.name, pr.HTTPGet.Path, err, code, body)
		}
	}
	scrape := podAnnotations(p.workload)["prometheus.io/path"]
	code, body, err := waitFor(ctx, out, base+scrape, func(code int) bool { return code == http.StatusOK })
	if err != nil || !strings.Contains(body, "\npromo_") {
		t.Errorf("%s: GET %s: %d %v, want 200 with promo_ metrics:\n%.300s", p.name, scrape, code, err, body)
	}
}

func podAnnotations(o Object) map[string]string {
	switch v := o.Obj.(type) {
	case *appsv1.Deployment:
		return v.Spec.Template.Annotations
	case *appsv1.StatefulSet:
		return v.Spec.Template.Annotations
	}
	return nil
}

// waitFor polls url until ok accepts its status, the process exits, or ctx
// ends; it returns the last status and body.
func waitFor(ctx context.Context, out *output, url string, ok func(int) bool) (int, string, error) {
	backoff := 20 * time.Millisecond
	var code int
	var body string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, "", err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			resp.Body.Close()
			code, body = resp.StatusCode, b.String()
			if ok(code) {
				return code, body, nil
			}
			if code == http.StatusNotFound || code == http.StatusMethodNotAllowed {
				return code, body, fmt.Errorf("the process serves no GET %s", req.URL.Path)
			}
		}
		select {
		case <-out.done:
			return code, body, fmt.Errorf("the process exited: %v", out.err)
		case <-ctx.Done():
			return code, body, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}
