package httpserver

import (
	"errors"
	"fmt"
	"log/slog"
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
