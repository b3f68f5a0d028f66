package ingestsvc

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/pgstore"
	"github.com/promotion-service/promo/ring"
)

// This file is the cluster's membership API: GET /cluster, and the
// changes POST /cluster/nodes and DELETE /cluster/nodes/{name}.

func (s *Server) clusterRoutes(r *httpserver.Router) {
	r.Read("/cluster", s.handleCluster)
	r.Write("/cluster/nodes", s.handleAddNode)
	r.Delete("/cluster/nodes/{name}", s.handleRemoveNode)
}

func (s *Server) handleCluster(ctx *fasthttp.RequestCtx) {
	pctx, cancel := s.pgContext(ctx)
	defer cancel()
	m, err := s.pg.Membership(pctx)
	if err != nil {
		s.changeError(ctx, err)
		return
	}
	httpserver.WriteJSON(ctx, fasthttp.StatusOK, m.Cluster())
}

func (s *Server) handleAddNode(ctx *fasthttp.RequestCtx) {
	var req struct {
		Name string `json:"name"`
		URL  string `json:"url"`
	}
	body := ctx.PostBody()
	if stream := ctx.RequestBodyStream(); stream != nil {
		// The ingest server streams request bodies (uploads): read this
		// small one whole, bounded.
		var err error
		if body, err = io.ReadAll(io.LimitReader(stream, 64<<10)); err != nil {
			httpserver.Error(ctx, fasthttp.StatusBadRequest, "cannot read the body: "+err.Error())
			return
		}
	}
	if err := json.Unmarshal(body, &req); err != nil {
		httpserver.Error(ctx, fasthttp.StatusBadRequest, "the body must be JSON {\"name\":..., \"url\":...}: "+err.Error())
		return
	}
	nodes, err := ring.ParseNodes(req.Name+"="+req.URL, true)
	if err != nil || len(nodes) != 1 || nodes[0].Name != req.Name {
		msg := "bad node name or URL"
		if err != nil {
			msg = err.Error()
		}
		httpserver.Error(ctx, fasthttp.StatusBadRequest, msg, "name", req.Name, "url", req.URL)
		return
	}
	pctx, cancel := s.pgContext(ctx)
	defer cancel()
	m, err := s.pg.AddNode(pctx, nodes[0])
	s.answerChange(ctx, m, err)
}

func (s *Server) handleRemoveNode(ctx *fasthttp.RequestCtx) {
	name, _ := ctx.UserValue("name").(string)
	pctx, cancel := s.pgContext(ctx)
	defer cancel()
	m, err := s.pg.RemoveNode(pctx, name)
	s.answerChange(ctx, m, err)
}

func (s *Server) answerChange(ctx *fasthttp.RequestCtx, m ring.Membership, err error) {
	if err != nil {
		s.changeError(ctx, err)
		return
	}
	s.ringChanged()
	httpserver.WriteJSON(ctx, fasthttp.StatusAccepted, m.Cluster())
}

func (s *Server) changeError(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, pgstore.ErrChangeRunning), errors.Is(err, pgstore.ErrTooFewNodes):
		httpserver.Error(ctx, fasthttp.StatusConflict, err.Error())
	case errors.Is(err, pgstore.ErrBadMember):
		httpserver.Error(ctx, fasthttp.StatusBadRequest, err.Error())
	case errors.Is(err, pgstore.ErrUnknownMember):
		httpserver.Error(ctx, fasthttp.StatusNotFound, err.Error())
	case errors.Is(err, pgstore.ErrNoRing):
		ctx.Response.Header.Set("Retry-After", "5")
		httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, "the cluster has no ring yet: read nodes started with --nodes seed it")
	default:
		storeError(ctx, err)
	}
}

// ringChanged wakes the loop that refreshes the ring gauges.
func (s *Server) ringChanged() {
	select {
	case s.ringKick <- struct{}{}:
	default:
	}
}

// watchRing refreshes the ring gauges every second and after each change,
// each read bounded by PostgresTimeout; while PostgreSQL does not answer,
// the last values stay.
func (s *Server) watchRing(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.PostgresTimeout)
		m, err := s.pg.Membership(cctx)
		cancel()
		if err == nil {
			toMove, moved := m.Progress()
			s.ring.version.Store(m.Serving.Version)
			s.ring.rebalancing.Store(m.Pending != nil)
			s.ring.toMove.Store(int64(toMove))
			s.ring.moved.Store(int64(moved))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.ringKick:
		}
	}
}

func (s *Server) registerRingMetrics() {
	s.metrics.NewGauge("promo_ring_version", func() float64 { return float64(s.ring.version.Load()) })
	s.metrics.NewGauge("promo_ring_rebalancing", func() float64 {
		if s.ring.rebalancing.Load() {
			return 1
		}
		return 0
	})
	s.metrics.NewGauge("promo_ring_slots_to_move", func() float64 { return float64(s.ring.toMove.Load()) })
	s.metrics.NewGauge("promo_ring_slots_moved", func() float64 { return float64(s.ring.moved.Load()) })
}
