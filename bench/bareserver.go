package bench

import (
	"context"
	_ "embed"
	"net"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/httpserver"
)

// ConstantBody returns a lookup-like JSON body of the size of a real
// answer, for the bare-server baseline.
func ConstantBody() []byte {
	return []byte(`{"id":"d018ef0b-dbd9-48f1-ac1a-eb4d90e57118","price":60.68,"expiration_date":"2018-08-04T03:32:31Z"}`)
}

// ServeConstant is the lookup baseline: a fasthttp server with the same
// settings as the product's that answers every request with body and the
// same headers, doing nothing else. It serves ln until ctx is done.
func ServeConstant(ctx context.Context, ln net.Listener, body []byte) error {
	version := []byte("1")
	h := func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.SetCanonical([]byte("X-Dataset-Version"), version)
		ctx.Response.Header.SetContentTypeBytes([]byte("application/json"))
		ctx.SetBody(body)
	}
	cfg := httpserver.DefaultServerConfig("promo")
	cfg.StreamRequestBody = true
	srv := httpserver.NewServer(cfg, h)
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown()
	}()
	return srv.Serve(ln)
}

// WrkScript is bench/wrk/random_ids.lua: a wrk script that sends
// GET /promotions/{id} with ids drawn at random from the file named by the
// IDS environment variable.
//
//go:embed wrk/random_ids.lua
var WrkScript string
