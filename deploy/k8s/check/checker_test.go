package check

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// good is a small valid base: a ConfigMap, a headless Service and a
// StatefulSet running `promo readnode`, a PodDisruptionBudget.
const good = `
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {PROMO_POSTGRES_URL: "postgres://x"}
---
apiVersion: v1
kind: Service
metadata: {name: rn}
spec:
  clusterIP: None
  selector: {app: rn}
  ports: [{name: http, port: 8090, targetPort: http}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: rn}
spec:
  serviceName: rn
  selector: {matchLabels: {app: rn}}
  template:
    metadata:
      labels: {app: rn}
      annotations: {prometheus.io/scrape: "true", prometheus.io/port: "8090", prometheus.io/path: /metrics}
    spec:
      containers:
        - name: rn
          image: promo
          args: [readnode, --addr=:8090, --name, $(POD_NAME), --join]
          env:
            - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: PROMO_POSTGRES_URL, valueFrom: {configMapKeyRef: {name: cfg, key: PROMO_POSTGRES_URL}}}
          ports: [{name: http, containerPort: 8090}]
          livenessProbe: {httpGet: {path: /healthz, port: http}}
          readinessProbe: {httpGet: {path: /readyz, port: 8090}}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {cpu: "1", memory: 128Mi}
          volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
    - metadata: {name: data}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: rn}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: rn}}
`

var fakeCommands = map[string]Command{
	"readnode": {
		Flags:  map[string]bool{"addr": true, "name": true, "join": false, "postgres-url": true, "data-dir": true},
		Routes: map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true},
	},
}

// TestCheckerFindsEachMistake proves that each check can fail: every case
// changes one thing in a valid base and expects an error naming it.
func TestCheckerFindsEachMistake(t *testing.T) {
	objs, err := Decode([]byte(good), "good")
	if err != nil {
		t.Fatal(err)
	}
	if errs := Check(objs, fakeCommands); len(errs) > 0 {
		t.Fatalf("the valid base fails: %v", errs)
	}

	f := func(name, from, to, want string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(good, from) {
				t.Fatalf("the base has no %q", from)
			}
			y := strings.Replace(good, from, to, 1)
			objs, err := Decode([]byte(y), name)
			var got []string
			if err != nil {
				got = append(got, err.Error())
			} else {
				for _, e := range Check(objs, fakeCommands) {
					got = append(got, e.Error())
				}
			}
			for _, g := range got {
				if strings.Contains(g, want) {
					return
				}
			}
			t.Errorf("want an error containing %q, got %q", want, got)
		})
	}
	f("unknown field", "serviceName: rn", "serviceName: rn\n  servicename: rn", `unknown field "spec.servicename"`)
	f("duplicate field", "serviceName: rn", "serviceName: rn\n  serviceName: rn", `key "serviceName" already set`)
	f("bad quantity", "memory: 64Mi", "memory: 64 megs", "quantities must match")
	f("wrong type", "maxUnavailable: 1", "maxUnavailable: [1]", "PodDisruptionBudget")
	f("unregistered kind", "kind: PodDisruptionBudget", "kind: PodDisruptionBudgets", "no kind")
	f("unknown flag", "--join]", "--joins]", "--joins is not a flag of `promo readnode`")
	f("flag without value", "--name, $(POD_NAME), --join", "--join, --name", "--name needs a value")
	f("positional argument", "--join]", "--join, extra]", `unexpected argument "extra"`)
	f("unknown command", "args: [readnode", "args: [reader", `"reader" is not a promo server command`)
	f("command in command", "image: promo", "image: promo\n          command: [promo]", "sets command")
	f("unknown env", "name: PROMO_POSTGRES_URL, valueFrom", "name: PROMO_POSTGRES_URI, valueFrom", "env PROMO_POSTGRES_URI is not read by `promo readnode`: no flag --postgres-uri")
	f("flag in args and env", "--join]", "--join, --postgres-url=x]", "--postgres-url is set both in args and as PROMO_POSTGRES_URL")
	f("undefined reference", "$(POD_NAME)", "$(POD)", "refers to $(POD)")
	f("missing config map key", "key: PROMO_POSTGRES_URL}", "key: PROMO_PG}", "has no such key")
	f("missing config map", "configMapKeyRef: {name: cfg", "configMapKeyRef: {name: config", "ConfigMap config, which the base does not define")
	f("no addr", "--addr=:8090, ", "", "no --addr")
	f("loopback addr", "--addr=:8090", "--addr=127.0.0.1:8090", "listens on loopback")
	f("port not addr", "--addr=:8090", "--addr=:8091", "no containerPort 8091")
	f("probe path not served", "path: /healthz", "path: /health", "the liveness probe asks /health, want /healthz")
	f("probe path not a route", "path: /readyz", "path: /ready", "which `promo readnode` does not serve")
	f("probe port", "port: 8090}}", "port: 8091}}", "the readiness probe's port 8091 is not a port of the container")
	f("no liveness probe", "livenessProbe: {httpGet: {path: /healthz, port: http}}", "", "no liveness probe")
	f("scrape port", `prometheus.io/port: "8090"`, `prometheus.io/port: "9090"`, "annotation prometheus.io/port")
	f("scrape path", "prometheus.io/path: /metrics", "prometheus.io/path: /metric", "annotation prometheus.io/path")
	f("no memory limit", `limits: {cpu: "1", memory: 128Mi}`, `limits: {cpu: "1"}`, "no memory limit")
	f("request above limit", "cpu: 100m", "cpu: 2", "cpu request 2 is above its limit 1")
	f("mount without volume", "volumeMounts: [{name: data", "volumeMounts: [{name: cache", "volumeMount cache names no volume")
	f("selector misses template", "selector: {matchLabels: {app: rn}}\n  template", "selector: {matchLabels: {app: x}}\n  template", "does not match its pod template")
	f("service target port", "targetPort: http", "targetPort: web", "targets web, which no container")
	f("service not headless", "clusterIP: None", "clusterIP: 10.0.0.1", "is not headless")
	f("no governing service", "serviceName: rn", "serviceName: readnodes", `serviceName "readnodes"`)
	f("budget selects nothing", "maxUnavailable: 1\n  selector: {matchLabels: {app: rn}}", "maxUnavailable: 1\n  selector: {matchLabels: {app: ro}}", "matches no pod template")
}

func TestHelpFlagsParsesPrintDefaults(t *testing.T) {
	// A stand-in for promo: a script printing flag.PrintDefaults' format,
	// exiting 2 as -h does.
	script := filepath.Join(t.TempDir(), "promo")
	body := "#!/bin/sh\ncat >&2 <<'EOF'\nUsage: promo readnode [flags]\n\nFlags:\n  -addr string\n    \tlisten address (default \"127.0.0.1:8090\")\n  -join\n    \tadd this node to the ring\n  -cache-size value\n    \tPebble block cache size\nEOF\nexit 2\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	flags, err := HelpFlags(ctx, script, "readnode")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"addr": true, "join": false, "cache-size": true}
	if len(flags) != len(want) {
		t.Errorf("flags = %v, want %v", flags, want)
	}
	for f, v := range want {
		if got, ok := flags[f]; !ok || got != v {
			t.Errorf("flag %s: takes a value = %v (listed %v), want %v", f, got, ok, v)
		}
	}
}

func TestRoutesOfTheReadNode(t *testing.T) {
	routes, err := Routes(filepath.Join(repo, "readnode"), filepath.Join(repo, "lookup"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"/healthz", "/readyz", "/metrics", "/cluster", "/datasets/current"} {
		if !routes[r] {
			t.Errorf("route %s not found among %v", r, sortedKeys(routes))
		}
	}
	if routes["/process-csv"] {
		t.Error("a read node does not serve /process-csv, yet it was found")
	}
}
