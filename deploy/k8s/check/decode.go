package check

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Object is one decoded Kubernetes object and where it came from.
type Object struct {
	// Source names the file or rendering and the document's index in it.
	Source string
	// Kind and Name identify the object, as "StatefulSet/promo-readnode".
	Kind, Name string
	// Obj is the typed object: *appsv1.StatefulSet, *corev1.Service, ...
	Obj runtime.Object
}

// ID is the object's Kind/Name.
func (o Object) ID() string { return o.Kind + "/" + o.Name }

// scheme knows the API groups the base uses; an object of any other kind
// fails to decode.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, autoscalingv2.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic("check: cannot build the scheme: " + err.Error())
		}
	}
	return s
}()

// strict decodes YAML into the registered types and fails on unknown or
// duplicate fields.
var strict = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})

// Render builds the kustomization in dir with kustomize's Go API and
// returns the resulting YAML stream.
func Render(dir string) ([]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("cannot render the kustomization in %s: %w", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("cannot write the rendering of %s as YAML: %w", dir, err)
	}
	return out, nil
}

// Decode decodes every document of a YAML stream strictly. source names the
// stream in errors. It returns every error found, not only the first.
func Decode(stream []byte, source string) ([]Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var objs []Object
	var errs []error
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: cannot split the YAML documents: %w", source, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		where := fmt.Sprintf("%s[%d]", source, i)
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		m, ok := obj.(interface{ GetName() string })
		if !ok || m.GetName() == "" {
			errs = append(errs, fmt.Errorf("%s: %s has no metadata.name", where, gvk.Kind))
			continue
		}
		objs = append(objs, Object{Source: where, Kind: gvk.Kind, Name: m.GetName(), Obj: obj})
	}
	return objs, errors.Join(errs...)
}

// stripComments drops the comment lines of a YAML document, so that a
// document of comments only counts as empty.
func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}
