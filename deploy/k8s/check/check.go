package check

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// workload is a pod template and what owns it.
type workload struct {
	obj      Object
	selector *metav1.LabelSelector
	template *corev1.PodTemplateSpec
	claims   []string // volumeClaimTemplates of a StatefulSet
}

// Check checks the objects against each other and against the promo
// commands, and returns every problem found.
func Check(objs []Object, cmds map[string]Command) []error {
	c := &checker{cmds: cmds, configMaps: map[string]map[string]string{}, services: map[string]*corev1.Service{}}
	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *appsv1.Deployment:
			c.workloads = append(c.workloads, workload{obj: o, selector: v.Spec.Selector, template: &v.Spec.Template})
		case *appsv1.StatefulSet:
			w := workload{obj: o, selector: v.Spec.Selector, template: &v.Spec.Template}
			for _, t := range v.Spec.VolumeClaimTemplates {
				w.claims = append(w.claims, t.Name)
			}
			c.workloads = append(c.workloads, w)
		case *corev1.ConfigMap:
			c.configMaps[v.Name] = v.Data
		case *corev1.Service:
			c.services[v.Name] = v
		}
	}
	if len(c.workloads) == 0 {
		c.errorf("no Deployment or StatefulSet found")
	}
	for _, w := range c.workloads {
		c.checkWorkload(w)
	}
	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *appsv1.StatefulSet:
			c.checkStatefulSet(o, v)
		case *corev1.Service:
			c.checkService(o, v)
		case *policyv1.PodDisruptionBudget:
			c.checkPDB(o, v)
		case *autoscalingv2.HorizontalPodAutoscaler:
			c.checkHPA(o, v)
		}
	}
	return c.errs
}

type checker struct {
	cmds       map[string]Command
	workloads  []workload
	configMaps map[string]map[string]string
	services   map[string]*corev1.Service
	errs       []error
}

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func (c *checker) checkWorkload(w workload) {
	id := w.obj.ID()
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil || sel.Empty() {
		c.errorf("%s: invalid or empty selector: %v", id, err)
	} else if !sel.Matches(labels.Set(w.template.Labels)) {
		c.errorf("%s: selector %s does not match its pod template's labels %v", id, sel, w.template.Labels)
	}
	volumes := slices.Clone(w.claims)
	for _, v := range w.template.Spec.Volumes {
		volumes = append(volumes, v.Name)
	}
	if len(w.template.Spec.Containers) == 0 {
		c.errorf("%s: no container", id)
	}
	for i := range w.template.Spec.Containers {
		c.checkContainer(w, &w.template.Spec.Containers[i], volumes)
	}
}

// varRef matches a $(VAR) reference that Kubernetes expands in args and
// env values.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func (c *checker) checkContainer(w workload, ctr *corev1.Container, volumes []string) {
	where := fmt.Sprintf("%s, container %s", w.obj.ID(), ctr.Name)
	if len(ctr.Command) > 0 {
		c.errorf("%s: sets command %v; the image's entrypoint is promo, give the subcommand in args", where, ctr.Command)
	}
	if len(ctr.Args) == 0 {
		c.errorf("%s: no args: the first must be a promo command", where)
		return
	}
	name := ctr.Args[0]
	cmd, ok := c.cmds[name]
	if !ok {
		c.errorf("%s: %q is not a promo server command (want one of %v)", where, name, sortedKeys(c.cmds))
		return
	}

	// Environment: every PROMO_* variable is a flag of the command, every
	// reference resolves to a variable defined before it.
	envFlags := map[string]string{} // flag name -> env value
	defined := map[string]bool{}
	byEnv := map[string]string{}
	for f := range cmd.Flags {
		byEnv[EnvName(f)] = f
	}
	for _, e := range ctr.Env {
		if defined[e.Name] {
			c.errorf("%s: env %s is set twice", where, e.Name)
		}
		for _, m := range varRef.FindAllStringSubmatch(e.Value, -1) {
			if !defined[m[1]] {
				c.errorf("%s: env %s refers to $(%s), which no earlier env entry defines", where, e.Name, m[1])
			}
		}
		defined[e.Name] = true
		if strings.HasPrefix(e.Name, "PROMO_") {
			f, ok := byEnv[e.Name]
			if !ok {
				c.errorf("%s: env %s is not read by `promo %s`: no flag --%s", where, e.Name, name, flagOfEnv(e.Name))
			} else {
				envFlags[f] = e.Value
			}
		}
		c.checkEnvSource(where, e)
	}
	if len(ctr.EnvFrom) > 0 {
		c.errorf("%s: envFrom hides which PROMO_* variables reach the binary; list them in env", where)
	}

	// Args: every --flag exists; a flag set in args and env is ambiguous.
	argFlags := map[string]string{}
	for _, a := range ctr.Args {
		for _, m := range varRef.FindAllStringSubmatch(a, -1) {
			if !defined[m[1]] {
				c.errorf("%s: arg %q refers to $(%s), which no env entry defines", where, a, m[1])
			}
		}
	}
	for i := 1; i < len(ctr.Args); i++ {
		a := ctr.Args[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			c.errorf("%s: unexpected argument %q: `promo %s` takes flags only", where, a, name)
			continue
		}
		f, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		takesValue, ok := cmd.Flags[f]
		if !ok {
			c.errorf("%s: --%s is not a flag of `promo %s`", where, f, name)
			continue
		}
		if takesValue && !hasValue {
			if i+1 >= len(ctr.Args) {
				c.errorf("%s: --%s needs a value", where, f)
				continue
			}
			i++
			value = ctr.Args[i]
		}
		if _, dup := argFlags[f]; dup {
			c.errorf("%s: --%s is given twice", where, f)
		}
		if _, dup := envFlags[f]; dup {
			c.errorf("%s: --%s is set both in args and as %s", where, f, EnvName(f))
		}
		argFlags[f] = value
	}

	// Ports: --addr's port is the container port that probes, Services
	// and the scrape annotation use.
	addr, ok := argFlags["addr"]
	if !ok {
		addr, ok = envFlags["addr"]
	}
	var port int32
	if !ok {
		c.errorf("%s: no --addr: the binary's default listens on loopback only, unreachable from other pods", where)
	} else if host, p, err := net.SplitHostPort(addr); err != nil {
		c.errorf("%s: --addr %q: %v", where, addr, err)
	} else if n, err := strconv.ParseUint(p, 10, 16); err != nil {
		c.errorf("%s: --addr %q has no numeric port", where, addr)
	} else {
		port = int32(n)
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			c.errorf("%s: --addr %q listens on loopback, unreachable from other pods and probes", where, addr)
		}
	}
	if port != 0 && !slices.ContainsFunc(ctr.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == port }) {
		c.errorf("%s: no containerPort %d, the port of --addr %s", where, port, addr)
	}
	for _, p := range ctr.Ports {
		if p.ContainerPort != port {
			c.errorf("%s: containerPort %d (%s) is not --addr's port %d: nothing listens there", where, p.ContainerPort, p.Name, port)
		}
	}

	// Probes: liveness on /healthz, readiness on /readyz, each a route
	// the command serves, on --addr's port.
	c.checkProbe(where, "liveness", ctr.LivenessProbe, "/healthz", ctr, port, cmd)
	c.checkProbe(where, "readiness", ctr.ReadinessProbe, "/readyz", ctr, port, cmd)
	if ctr.StartupProbe != nil {
		c.checkProbe(where, "startup", ctr.StartupProbe, "", ctr, port, cmd)
	}

	// Scrape annotations.
	ann := w.template.Annotations
	if ann["prometheus.io/scrape"] != "true" {
		c.errorf("%s: pod template lacks the annotation prometheus.io/scrape: \"true\"", w.obj.ID())
	}
	if p := ann["prometheus.io/port"]; p != strconv.Itoa(int(port)) {
		c.errorf("%s: annotation prometheus.io/port is %q, want --addr's port %d", w.obj.ID(), p, port)
	}
	if p := ann["prometheus.io/path"]; !cmd.Routes[p] {
		c.errorf("%s: annotation prometheus.io/path %q is not a route of `promo %s` (routes: %v)", w.obj.ID(), p, name, sortedKeys(cmd.Routes))
	}

	// Resources: requests and limits of CPU and memory.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := ctr.Resources.Requests[r]
		lim, hasLim := ctr.Resources.Limits[r]
		switch {
		case !hasReq || req.IsZero():
			c.errorf("%s: no %s request", where, r)
		case !hasLim || lim.IsZero():
			c.errorf("%s: no %s limit", where, r)
		case req.Cmp(lim) > 0:
			c.errorf("%s: %s request %s is above its limit %s", where, r, req.String(), lim.String())
		}
	}

	for _, m := range ctr.VolumeMounts {
		if !slices.Contains(volumes, m.Name) {
			c.errorf("%s: volumeMount %s names no volume or volumeClaimTemplate", where, m.Name)
		}
	}
}

func (c *checker) checkEnvSource(where string, e corev1.EnvVar) {
	if e.ValueFrom == nil {
		return
	}
	if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil {
		data, ok := c.configMaps[ref.Name]
		optional := ref.Optional != nil && *ref.Optional
		switch {
		case !ok && !optional:
			c.errorf("%s: env %s comes from ConfigMap %s, which the base does not define", where, e.Name, ref.Name)
		case ok && !optional:
			if _, ok := data[ref.Key]; !ok {
				c.errorf("%s: env %s comes from key %s of ConfigMap %s, which has no such key", where, e.Name, ref.Key, ref.Name)
			}
		}
	}
}

func (c *checker) checkProbe(where, kind string, p *corev1.Probe, wantPath string, ctr *corev1.Container, port int32, cmd Command) {
	if p == nil {
		c.errorf("%s: no %s probe", where, kind)
		return
	}
	if p.HTTPGet == nil {
		c.errorf("%s: the %s probe is not an HTTP GET", where, kind)
		return
	}
	path := p.HTTPGet.Path
	if wantPath != "" && path != wantPath {
		c.errorf("%s: the %s probe asks %s, want %s", where, kind, path, wantPath)
	}
	if !cmd.Routes[path] {
		c.errorf("%s: the %s probe asks %s, which `promo %s` does not serve (routes: %v)", where, kind, path, ctr.Args[0], sortedKeys(cmd.Routes))
	}
	if got, ok := resolvePort(p.HTTPGet.Port, ctr); !ok {
		c.errorf("%s: the %s probe's port %s is not a port of the container", where, kind, p.HTTPGet.Port.String())
	} else if got != port {
		c.errorf("%s: the %s probe asks port %d, but --addr listens on %d", where, kind, got, port)
	}
}

// resolvePort returns the number of a container port given by name or
// number.
func resolvePort(p intstr.IntOrString, ctr *corev1.Container) (int32, bool) {
	for _, cp := range ctr.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// selected returns the workloads whose pod labels sel matches.
func (c *checker) selected(sel labels.Selector) []workload {
	var out []workload
	for _, w := range c.workloads {
		if sel.Matches(labels.Set(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func (c *checker) checkService(o Object, s *corev1.Service) {
	if len(s.Spec.Selector) == 0 {
		c.errorf("%s: no selector", o.ID())
		return
	}
	ws := c.selected(labels.SelectorFromSet(s.Spec.Selector))
	if len(ws) == 0 {
		c.errorf("%s: selector %v matches no pod template", o.ID(), s.Spec.Selector)
	}
	for _, w := range ws {
		for _, sp := range s.Spec.Ports {
			target := sp.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(sp.Port)
			}
			if !slices.ContainsFunc(w.template.Spec.Containers, func(ctr corev1.Container) bool {
				_, ok := resolvePort(target, &ctr)
				return ok
			}) {
				c.errorf("%s: port %s targets %s, which no container of %s exposes", o.ID(), sp.Name, target.String(), w.obj.ID())
			}
		}
	}
}

func (c *checker) checkStatefulSet(o Object, s *appsv1.StatefulSet) {
	svc, ok := c.services[s.Spec.ServiceName]
	switch {
	case !ok:
		c.errorf("%s: serviceName %q is not a Service of the base: pods get no stable DNS names", o.ID(), s.Spec.ServiceName)
	case svc.Spec.ClusterIP != corev1.ClusterIPNone:
		c.errorf("%s: Service %s is not headless (clusterIP: None): pods get no stable DNS names", o.ID(), svc.Name)
	case !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(s.Spec.Template.Labels)):
		c.errorf("%s: Service %s does not select its pods", o.ID(), svc.Name)
	}
}

func (c *checker) checkPDB(o Object, p *policyv1.PodDisruptionBudget) {
	sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
	if err != nil || sel.Empty() {
		c.errorf("%s: invalid or empty selector: %v", o.ID(), err)
		return
	}
	if len(c.selected(sel)) == 0 {
		c.errorf("%s: selector %s matches no pod template", o.ID(), sel)
	}
	if p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil {
		c.errorf("%s: neither minAvailable nor maxUnavailable", o.ID())
	}
}

func (c *checker) checkHPA(o Object, h *autoscalingv2.HorizontalPodAutoscaler) {
	ref := h.Spec.ScaleTargetRef
	if !slices.ContainsFunc(c.workloads, func(w workload) bool { return w.obj.Kind == ref.Kind && w.obj.Name == ref.Name }) {
		c.errorf("%s: scaleTargetRef %s/%s is not a workload of the base", o.ID(), ref.Kind, ref.Name)
	}
	if h.Spec.MinReplicas != nil && *h.Spec.MinReplicas > h.Spec.MaxReplicas {
		c.errorf("%s: minReplicas %d above maxReplicas %d", o.ID(), *h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
}

// flagOfEnv is the flag an environment variable would set:
// PROMO_DATA_DIR is data-dir.
func flagOfEnv(env string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(env, "PROMO_"), "_", "-"))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
