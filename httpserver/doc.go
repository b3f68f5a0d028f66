// Package httpserver holds the pieces of the HTTP API that every promo service
// shares: JSON bodies and errors, bearer-token checks, per-route request
// metrics, the liveness probe and the fasthttp server with its limits and
// timeouts.
//
// Every error a service answers is JSON: {"error": "<message>", ...}.
package httpserver
