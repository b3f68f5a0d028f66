// Package check validates the Kubernetes manifests of deploy/k8s offline,
// with no cluster: it renders the kustomize base with kustomize's Go API,
// decodes every object strictly into the Kubernetes API types (an unknown
// or duplicate field, a bad quantity or a wrong type is an error), and
// checks the objects against each other and against what the promo binary
// serves: every --flag in a container's args and every PROMO_* environment
// variable is a flag of that promo command (from `promo COMMAND -h`),
// container ports match --addr, probes and scrape annotations name routes
// that the command's packages register, and Services, the
// PodDisruptionBudget and the HorizontalPodAutoscaler select or target
// objects that exist.
//
// TestLive then runs the base's pods as promo processes on loopback,
// against a real PostgreSQL and an in-process Kafka-protocol broker (the
// main module's localsvc, through a replace directive): each pod's args and
// environment as the base gives them, with listen addresses, pod DNS names
// and mount paths mapped to this machine, must start and answer its
// probes and its scrape path; after an import through ingest every read
// node and the proxy must turn ready and the proxy answer every id.
//
// It is a module of its own so that the main module does not depend on
// the Kubernetes libraries. `make k8s-check` runs its tests.
package check
