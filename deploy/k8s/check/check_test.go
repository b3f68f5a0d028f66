package check

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// repo is the repository root, base the kustomize base.
const (
	repo = "../../.."
	base = ".."
)

// promoBinary returns the promo binary to check against: $PROMO_BIN (make
// k8s-check passes bin/promo), or one built from the repository.
func promoBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("PROMO_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	bin := filepath.Join(t.TempDir(), "promo")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/promo")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cannot build promo: %v\n%s", err, out)
	}
	return bin
}

func renderBase(t *testing.T) []Object {
	t.Helper()
	out, err := Render(base)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(out, "kustomize build deploy/k8s")
	if err != nil {
		t.Fatalf("the rendering does not decode strictly:\n%v", err)
	}
	return objs
}

// TestManifestFilesDecodeStrictly decodes each manifest file on its own, as
// written: the rendering goes through kustomize's YAML model, which could
// hide a duplicate key.
func TestManifestFilesDecodeStrictly(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(base, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := Decode(b, f)
		if err != nil {
			t.Errorf("%v", err)
		}
		n += len(objs)
	}
	if n == 0 {
		t.Fatal("no manifest decoded")
	}
}

// TestBase checks the rendered base against the promo binary: flags, env,
// ports, probes, annotations, resources, and the references between
// objects.
func TestBase(t *testing.T) {
	objs := renderBase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmds, err := Commands(ctx, promoBinary(t), repo)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range Check(objs, cmds) {
		t.Error(err)
	}
}

// TestBaseShape checks what the deployment promises beyond consistency:
// one ingest writer, read nodes with stable names, volumes and --join, an
// autoscaled proxy, disruption budgets and the token from a Secret.
func TestBaseShape(t *testing.T) {
	objs := renderBase(t)
	byID := map[string]Object{}
	for _, o := range objs {
		byID[o.ID()] = o
	}
	need := func(id string) Object {
		t.Helper()
		o, ok := byID[id]
		if !ok {
			t.Fatalf("the base has no %s (it has %v)", id, sortedKeys(byID))
		}
		return o
	}

	ingest := need("Deployment/promo-ingest").Obj.(*appsv1.Deployment)
	if r := ingest.Spec.Replicas; r == nil || *r != 1 {
		t.Errorf("ingest replicas = %v, want 1 (one writer)", r)
	}
	if s := ingest.Spec.Strategy.Type; s != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("ingest strategy = %q, want Recreate (never two writers during an update)", s)
	}
	if !hasSecretEnv(ingest.Spec.Template.Spec.Containers[0], "PROMO_INGEST_TOKEN") {
		t.Error("ingest: PROMO_INGEST_TOKEN does not come from a secretKeyRef")
	}

	rn := need("StatefulSet/promo-readnode").Obj.(*appsv1.StatefulSet)
	if len(rn.Spec.VolumeClaimTemplates) == 0 {
		t.Error("read nodes: no volumeClaimTemplates for Pebble")
	}
	args := strings.Join(rn.Spec.Template.Spec.Containers[0].Args, " ")
	for _, want := range []string{"--join", "--url=http://$(POD_NAME).promo-readnode.$(POD_NAMESPACE).svc:8090", "--name=$(POD_NAME)"} {
		if !strings.Contains(args, want) {
			t.Errorf("read node args %q lack %s", args, want)
		}
	}
	if rn.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("read nodes: podManagementPolicy %q: no node is ready before the first import, so OrderedReady never starts the second", rn.Spec.PodManagementPolicy)
	}
	if svc := need("Service/promo-readnode").Obj.(*corev1.Service); !svc.Spec.PublishNotReadyAddresses {
		t.Error("Service/promo-readnode: a joining node must be reachable by its DNS name before it is ready")
	}
	pdb := need("PodDisruptionBudget/promo-readnode").Obj
	if mu := pdbMaxUnavailable(pdb); mu != "1" {
		t.Errorf("read node PodDisruptionBudget maxUnavailable = %q, want 1 (R-1 replicas of every slot stay up with R=2)", mu)
	}
	need("HorizontalPodAutoscaler/promo-proxy")
	need("PodDisruptionBudget/promo-proxy")
	if proxy := need("Deployment/promo-proxy").Obj.(*appsv1.Deployment); proxy.Spec.Replicas != nil {
		t.Error("Deployment/promo-proxy sets replicas: an apply would reset what the HorizontalPodAutoscaler chose")
	}
	need("ConfigMap/promo-config")
}

func hasSecretEnv(ctr corev1.Container, name string) bool {
	for _, e := range ctr.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			return true
		}
	}
	return false
}

func pdbMaxUnavailable(o any) string {
	p := o.(*policyv1.PodDisruptionBudget)
	if p.Spec.MaxUnavailable == nil {
		return ""
	}
	return p.Spec.MaxUnavailable.String()
}
