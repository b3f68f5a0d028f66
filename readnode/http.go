package readnode

import (
	"slices"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/lookup"
	"github.com/promotion-service/promo/pebblestore"
)

// ready reports whether the node serves the version the cluster activated,
// at its epoch (or a newer activation).
func (n *Node) ready() bool {
	a := n.Min()
	cur, ok := n.store.Current()
	return !a.IsZero() && ok && !(lookup.Stamp{Epoch: cur.Epoch, Version: cur.Version}).Less(a)
}

// handler serves the read node's part of the API: lookups of the slots it
// holds, its datasets, probes and metrics.
func (n *Node) handler() fasthttp.RequestHandler {
	r := httpserver.NewRouter(httpserver.NewMetrics(n.metrics), "")
	r.Read("/datasets", func(ctx *fasthttp.RequestCtx) {
		httpserver.WriteJSON(ctx, fasthttp.StatusOK, struct {
			Datasets []pebblestore.VersionInfo `json:"datasets"`
		}{n.store.Versions()})
	})
	r.Read("/datasets/current", func(ctx *fasthttp.RequestCtx) {
		vi, ok := n.store.Current()
		if !ok {
			httpserver.Error(ctx, fasthttp.StatusNotFound, "this node serves no dataset version yet")
			return
		}
		httpserver.WriteJSON(ctx, fasthttp.StatusOK, vi)
	})
	r.Read("/cluster", func(ctx *fasthttp.RequestCtx) {
		m := n.membership.Load()
		if m == nil {
			httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, "the cluster has no ring yet: a node started with --nodes seeds it")
			return
		}
		httpserver.WriteJSON(ctx, fasthttp.StatusOK, m.Cluster())
	})
	r.Probe("/healthz", httpserver.Healthz(n.cfg.Version, "node", n.cfg.Name))
	r.Probe("/readyz", func(ctx *fasthttp.RequestCtx) {
		cur, _ := n.store.Current()
		a := n.Min()
		active := a.Version
		body := map[string]any{"node": n.cfg.Name, "active_version": active, "active_epoch": a.Epoch,
			"serving_version": cur.Version, "serving_epoch": cur.Epoch}
		failures := n.retries.list(time.Now())
		if len(failures) > 0 {
			body["pull_failures"] = failures
		}
		if !n.ready() {
			body["status"] = "not ready: the node does not serve the active version of its slots yet"
			if slices.ContainsFunc(failures, func(f pullFailure) bool { return f.Version == active }) {
				body["status"] = "not ready: the pull of the active version fails (see pull_failures)"
			}
			httpserver.WriteJSON(ctx, fasthttp.StatusServiceUnavailable, body)
			return
		}
		body["status"] = "ready"
		httpserver.WriteJSON(ctx, fasthttp.StatusOK, body)
	})
	r.Probe("/metrics", func(ctx *fasthttp.RequestCtx) { httpserver.WriteMetrics(ctx, n.metrics) })
	return lookup.Routes(r, n.lookup.HandlePath, n.lookup.HandleBatch)
}
