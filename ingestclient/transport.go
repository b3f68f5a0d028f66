package ingestclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// newTransport returns the default transport with larger buffers, which
// save system calls during an upload, and with connections that let the
// server's answer to an upload it refuses win over the write error.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.WriteBufferSize = 256 << 10
	t.ReadBufferSize = 64 << 10
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newAnswerFirstConn(conn, answerGrace), nil
	}
	return t
}

// answerGrace is how long a failed write waits for the server's answer.
const answerGrace = 2 * time.Second

// answerFirstConn holds back a failed write until the connection's reader
// has read what the server sent, or failed too.
//
// The server answers 401, 409 or 413 to an upload without reading its body
// and closes the connection, so the client's next write fails with
// "connection reset by peer". net/http returns that write error as soon as
// it happens, even when the answer that explains it is already in the
// socket buffer; delaying the write error lets the transport's reader
// deliver the answer first.
type answerFirstConn struct {
	net.Conn
	grace      time.Duration
	readFailed chan struct{}
	readOnce   sync.Once
	closed     chan struct{}
	closeOnce  sync.Once
}

func newAnswerFirstConn(c net.Conn, grace time.Duration) *answerFirstConn {
	return &answerFirstConn{Conn: c, grace: grace, readFailed: make(chan struct{}), closed: make(chan struct{})}
}

func (c *answerFirstConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.readOnce.Do(func() { close(c.readFailed) })
	}
	return n, err
}

func (c *answerFirstConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	var netErr net.Error
	if err != nil && !(errors.As(err, &netErr) && netErr.Timeout()) {
		t := time.NewTimer(c.grace)
		defer t.Stop()
		select {
		case <-c.readFailed:
		case <-c.closed:
		case <-t.C:
		}
	}
	return n, err
}

func (c *answerFirstConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
