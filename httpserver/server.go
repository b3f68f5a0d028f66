package httpserver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// ServerConfig holds the limits and timeouts of a service's HTTP server.
type ServerConfig struct {
	// Name is sent in the Server header.
	Name string
	// ReadTimeout bounds reading a request's headers (and a small body).
	// Streamed uploads are bounded by the idle timeout of their reader
	// instead.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections that send nothing.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int
	// MaxBodyBytes bounds request bodies read whole; uploads of CSV files
	// are streamed and have their own limit.
	MaxBodyBytes int
	// Concurrency bounds the connections served at once.
	Concurrency int
	// StreamRequestBody hands bodies to handlers as streams.
	StreamRequestBody bool
	// Logger receives server errors.
	Logger *slog.Logger
}

// DefaultServerConfig returns the limits every service starts from.
func DefaultServerConfig(name string) ServerConfig {
	return ServerConfig{
		Name:           name,
		ReadTimeout:    30 * time.Second,
		WriteTimeout:   30 * time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
		MaxBodyBytes:   1 << 20,
		Concurrency:    64 << 10,
		Logger:         slog.Default(),
	}
}

// Validate reports the first invalid field of c.
func (c *ServerConfig) Validate() error {
	switch {
	case c.ReadTimeout <= 0:
		return fmt.Errorf("httpserver: ReadTimeout must be positive, got %v", c.ReadTimeout)
	case c.WriteTimeout <= 0:
		return fmt.Errorf("httpserver: WriteTimeout must be positive, got %v", c.WriteTimeout)
	case c.IdleTimeout <= 0:
		return fmt.Errorf("httpserver: IdleTimeout must be positive, got %v", c.IdleTimeout)
	case c.MaxHeaderBytes < 1024:
		return fmt.Errorf("httpserver: MaxHeaderBytes must be at least 1024, got %d", c.MaxHeaderBytes)
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("httpserver: MaxBodyBytes must be at least 1024, got %d", c.MaxBodyBytes)
	case c.Concurrency < 1:
		return fmt.Errorf("httpserver: Concurrency must be positive, got %d", c.Concurrency)
	}
	return nil
}

// NewServer returns a fasthttp server for h with the limits of c.
func NewServer(c ServerConfig, h fasthttp.RequestHandler) *fasthttp.Server {
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	return &fasthttp.Server{
		Handler:                      h,
		Name:                         c.Name,
		ReadTimeout:                  c.ReadTimeout,
		WriteTimeout:                 c.WriteTimeout,
		IdleTimeout:                  c.IdleTimeout,
		ReadBufferSize:               c.MaxHeaderBytes,
		MaxRequestBodySize:           c.MaxBodyBytes,
		Concurrency:                  c.Concurrency,
		StreamRequestBody:            c.StreamRequestBody,
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{log},
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			status := fasthttp.StatusBadRequest
			var small *fasthttp.ErrSmallBuffer
			switch {
			case errors.Is(err, fasthttp.ErrBodyTooLarge):
				status = fasthttp.StatusRequestEntityTooLarge
			case errors.As(err, &small):
				status = fasthttp.StatusRequestHeaderFieldsTooLarge
			}
			ctx.SetConnectionClose()
			Error(ctx, status, "cannot read request: "+err.Error())
		},
	}
}

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "source", "fasthttp")
}

// Bounds of what CloseLingering reads after a response.
const (
	lingerBytes = 64 << 20
	lingerTime  = 5 * time.Second
)

// CloseLingering makes the connection close after the response to ctx, as
// SetConnectionClose does, but without resetting it: once the response is
// written, the server stops sending (a TCP half-close) and reads and
// discards what the client still sends, until the client closes, or for
// at most lingerTime and lingerBytes. A client refused while it is still
// sending a large body (401, 409, 413) then reads the answer: closing with
// unread data resets the connection, and the reset can destroy the answer
// before the client reads it. Call it once the response is complete; the
// handler must not change the response afterwards.
func CloseLingering(ctx *fasthttp.RequestCtx) {
	ctx.SetConnectionClose()
	if cl := ctx.Request.Header.ContentLength(); cl == 0 || cl == -2 || ctx.Request.Header.IsHead() {
		return // nothing the client could still be sending
	}
	resp := fasthttp.AcquireResponse()
	ctx.Response.CopyTo(resp)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer fasthttp.ReleaseResponse(resp)
		deadline := time.Now().Add(lingerTime)
		if err := c.SetDeadline(deadline); err != nil {
			return
		}
		bw := bufio.NewWriter(c)
		if err := resp.Write(bw); err != nil || bw.Flush() != nil {
			return
		}
		raw := c
		if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
			raw = u.UnsafeConn()
		}
		if cw, ok := raw.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_, _ = io.CopyN(io.Discard, c, lingerBytes)
	})
}
