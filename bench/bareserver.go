package bench

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"net"
	"strings"

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

// BareServerConfig describes promo bench bare-server: ServeConstant with
// ConstantBody on its own listener.
type BareServerConfig struct {
	// Addr is the listen address; port 0 picks a free one.
	Addr string
	// Announce, if set, receives one line naming the bound address once
	// the server listens. StartBareChild reads that line from a child's
	// standard error to learn where the child listens.
	Announce io.Writer
}

// DefaultBareServerConfig returns the defaults of promo bench bare-server.
func DefaultBareServerConfig() BareServerConfig {
	return BareServerConfig{Addr: "127.0.0.1:8099"}
}

// announceFormat is the line RunBareServer writes to Announce and
// parseAnnounce reads back.
const announceFormat = "bare fasthttp server answering a constant %d-byte body on %s\n"

// RunBareServer listens on c.Addr and serves ConstantBody until ctx is
// done.
func RunBareServer(ctx context.Context, c BareServerConfig) error {
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return err
	}
	body := ConstantBody()
	if c.Announce != nil {
		fmt.Fprintf(c.Announce, announceFormat, len(body), ln.Addr())
	}
	return ServeConstant(ctx, ln, body)
}

// parseAnnounce returns the address in a line RunBareServer announced.
func parseAnnounce(line string) (addr string, ok bool) {
	var size int
	n, _ := fmt.Sscanf(line, strings.TrimSuffix(announceFormat, "\n"), &size, &addr)
	return addr, n == 2
}

// WrkScript is bench/wrk/random_ids.lua: a wrk script that sends
// GET /promotions/{id} with ids drawn at random from the file named by the
// IDS environment variable.
//
//go:embed wrk/random_ids.lua
var WrkScript string
