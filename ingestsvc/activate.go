package ingestsvc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
	"github.com/promotion-service/promo/pgstore"
)

// Activation states of POST /datasets/{version}/activate.
const (
	// activating: read nodes are preparing the version (pulling it
	// where they dropped it); the previous one serves.
	activating = "activating"
	// active: the cluster activated it; not every slot is known to serve
	// it yet.
	active = "active"
	// serving: every slot serves it.
	serving = "serving"
)

// activationStatus is the answer of POST /datasets/{version}/activate.
type activationStatus struct {
	Version    uint64             `json:"version"`
	State      string             `json:"state"`
	Epoch      uint64             `json:"epoch,omitempty"`
	Activation pgstore.Activation `json:"activation"`
}

func statusOf(v uint64, a pgstore.Activation) activationStatus {
	st := activationStatus{Version: v, State: activating, Activation: a}
	if a.Version == v {
		st.State, st.Epoch = active, a.Epoch
		if a.ServedEpoch >= a.Epoch {
			st.State = serving
		}
	}
	return st
}

// activatePoll is how often ?wait=true reads the activation.
const activatePoll = 50 * time.Millisecond

// handleActivate serves POST /datasets/{version}/activate: the cluster
// switches to a committed version still kept (a rollback, or a version the
// activation guard held), at a new epoch, once every slot of it is
// prepared on a replica. It answers 202 with the state at once, or with
// ?wait=true 200 once every slot serves it; 504 with the state when that
// takes longer than ActivateTimeout, 409 when another activation
// supersedes it meanwhile or the version cannot serve, 404 for a version
// not kept.
func (s *Server) handleActivate(ctx *fasthttp.RequestCtx) {
	raw, _ := ctx.UserValue("version").(string)
	v, err := strconv.ParseUint(raw, 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		httpserver.Error(ctx, fasthttp.StatusNotFound, "no such dataset version is kept", "version", raw)
		return
	case err != nil || v == 0:
		httpserver.Error(ctx, fasthttp.StatusBadRequest, "version must be a positive integer", "version", raw)
		return
	}
	wait := false
	if w := ctx.QueryArgs().Peek("wait"); w != nil {
		b, err := strconv.ParseBool(string(w))
		if err != nil && len(w) > 0 {
			httpserver.Error(ctx, fasthttp.StatusBadRequest, "query parameter wait must be true or false")
			return
		}
		wait = b || len(w) == 0
	}
	pctx, cancel := s.pgContext(ctx)
	a, err := s.pg.RequestActivation(pctx, v)
	cancel()
	switch {
	case errors.Is(err, pgstore.ErrUnknownVersion):
		httpserver.Error(ctx, fasthttp.StatusNotFound, "no such dataset version is kept (never committed, failed, or dropped by retention)", "version", v)
		return
	case errors.Is(err, pgstore.ErrNotActivatable):
		httpserver.Error(ctx, fasthttp.StatusConflict, err.Error(), "version", v)
		return
	case err != nil:
		storeError(ctx, err)
		return
	}
	if !wait {
		ctx.Response.Header.Set("Location", "/datasets/current")
		httpserver.WriteJSON(ctx, fasthttp.StatusAccepted, statusOf(v, a))
		return
	}
	deadline := time.Now().Add(s.cfg.ActivateTimeout)
	for {
		st := statusOf(v, a)
		switch {
		case st.State == serving:
			httpserver.WriteJSON(ctx, fasthttp.StatusOK, st)
			return
		case a.Version != v && a.Target != v:
			httpserver.Error(ctx, fasthttp.StatusConflict, "another activation superseded this one", "version", v,
				"serving_version", a.Version, "epoch", a.Epoch, "target", a.Target)
			return
		case !time.Now().Before(deadline):
			httpserver.Error(ctx, fasthttp.StatusGatewayTimeout,
				fmt.Sprintf("version %d is not served by every slot after %v; read nodes keep trying (GET /datasets/current, the nodes' /readyz)", v, s.cfg.ActivateTimeout),
				"version", v, "state", st.State, "activation", a)
			return
		}
		select {
		case <-time.After(activatePoll):
		case <-s.closing:
			httpserver.Error(ctx, fasthttp.StatusServiceUnavailable, "the server is shutting down; the activation goes on", "version", v, "state", st.State)
			return
		}
		pctx, cancel := s.pgContext(ctx)
		next, err := s.pg.Activation(pctx)
		cancel()
		if err == nil {
			a = next
		} else if !errors.Is(err, pgstore.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			storeError(ctx, err)
			return
		}
	}
}
