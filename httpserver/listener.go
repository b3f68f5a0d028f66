package httpserver

import (
	"context"
	"fmt"
	"net"

	"github.com/valyala/fasthttp"
)

// Listener is a service's listening socket and the server serving it.
type Listener struct {
	ln     net.Listener
	served chan error
}

// Listen opens addr.
func Listen(addr string) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	return &Listener{ln: ln, served: make(chan error, 1)}, nil
}

// Serve serves srv on the listener in the background.
func (l *Listener) Serve(srv *fasthttp.Server) {
	go func() { l.served <- srv.Serve(l.ln) }()
}

// Addr returns the address listened on, with the port chosen for ":0".
func (l *Listener) Addr() string { return l.ln.Addr().String() }

// Wait blocks until ctx is done (nil) or the server fails (its error).
func (l *Listener) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-l.served:
		return err
	}
}
