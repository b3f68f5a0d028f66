package httpserver

import (
	"encoding/json"

	"github.com/valyala/fasthttp"
)

// Healthz returns the liveness probe of a service: it answers 200 with
// {"status":"ok","version":version} and the key and value pairs of fields
// (such as "node", name), a body built once.
func Healthz(version string, fields ...string) fasthttp.RequestHandler {
	info := map[string]any{"status": "ok", "version": version}
	for i := 0; i+1 < len(fields); i += 2 {
		info[fields[i]] = fields[i+1]
	}
	body, err := json.Marshal(info)
	if err != nil {
		panic("httpserver: cannot encode the health body: " + err.Error()) // strings always encode
	}
	body = append(body, '\n')
	return func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
		ctx.SetBody(body)
	}
}
