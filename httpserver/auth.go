package httpserver

import (
	"bytes"
	"crypto/subtle"
	"net"

	"github.com/valyala/fasthttp"
)

// RequireToken wraps h so that it runs only for requests that carry
// "Authorization: Bearer <token>". An empty token lets every request through.
func RequireToken(token string, h fasthttp.RequestHandler) fasthttp.RequestHandler {
	if token == "" {
		return h
	}
	return func(ctx *fasthttp.RequestCtx) {
		if !HasToken(ctx, token) {
			got := ctx.Request.Header.Peek("Authorization")
			ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="promo"`)
			msg := "missing bearer token: send Authorization: Bearer <ingest token>"
			if len(got) > 0 {
				msg = "invalid bearer token"
			}
			Error(ctx, fasthttp.StatusUnauthorized, msg)
			// The body, if any, is not read: do not keep the connection,
			// but let the client read the answer.
			CloseLingering(ctx)
			return
		}
		h(ctx)
	}
}

// HasToken reports whether the request carries "Authorization: Bearer
// <token>"; token must not be empty. Read routes use it to show what only
// the token's holders may see.
func HasToken(ctx *fasthttp.RequestCtx, token string) bool {
	got := ctx.Request.Header.Peek("Authorization")
	const prefix = "bearer "
	return token != "" && len(got) >= len(prefix) && bytes.EqualFold(got[:len(prefix)], []byte(prefix)) &&
		subtle.ConstantTimeCompare(bytes.TrimSpace(got[len(prefix):]), []byte(token)) == 1
}

// IsLoopback reports whether a listen address accepts connections only
// from this machine. ":8080" and "0.0.0.0:8080" are not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
