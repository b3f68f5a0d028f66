package client

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// conns are the keep-alive connections of one node for single lookups
// (batches go through the node's fasthttp HostClient). A Get takes one,
// writes its request and reads the answer on its own goroutine, and gives
// it back: no handoff to another goroutine per request. Waiting for the
// first byte of the answer can end at the hedge delay without spoiling
// the connection, since a read deadline that passes before any byte came
// leaves nothing half-read; the wait then goes on elsewhere (get.go).
type conns struct {
	addr   string
	tls    *tls.Config // nil: plain TCP
	dial   func(addr string) (net.Conn, error)
	idle   chan *conn    // given back, at most max
	open   chan struct{} // a token per open connection, at most max
	closed atomic.Bool
}

// conn is one connection, owned by one request at a time.
type conn struct {
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	used   time.Time // given back at
	wdl    time.Time // write deadline set
	reused bool      // taken from idle, not dialed for this request
}

// idleMax is how long a connection may sit idle before it is closed
// rather than used: well below the servers' idle timeout (2 minutes), so
// that a request seldom meets a connection the server has just closed.
const idleMax = time.Minute

// maxAnswer bounds the body of one answer to a single lookup.
const maxAnswer = 1 << 20

// errNoConn is the error of a request that waited until its deadline for
// one of the node's MaxConnsPerNode connections.
var errNoConn = errors.New("client: no free connection to the node before the deadline")

// newConns returns the connections to addr (host:port), TLS to hostname
// when isTLS, at most max open at once; dial, if not nil, opens them.
func newConns(addr string, isTLS bool, hostname string, max int, dial func(string) (net.Conn, error)) *conns {
	p := &conns{addr: addr, dial: dial, idle: make(chan *conn, max), open: make(chan struct{}, max)}
	if isTLS {
		p.tls = &tls.Config{ServerName: hostname, ClientSessionCache: tls.NewLRUClientSessionCache(max)}
	}
	return p
}

// get returns an idle connection (unless fresh), or a new one, waiting
// until deadline for one when MaxConnsPerNode are open.
func (p *conns) get(now, deadline time.Time, fresh bool) (*conn, error) {
	for !fresh {
		select {
		case cn := <-p.idle:
			if now.Sub(cn.used) > idleMax {
				p.discard(cn)
				continue
			}
			cn.reused = true
			return cn, nil
		default:
		}
		break
	}
	select {
	case p.open <- struct{}{}:
		return p.connect(deadline)
	default:
	}
	t := time.NewTimer(time.Until(deadline)) // at the bound only
	defer t.Stop()
	select {
	case cn := <-p.idle:
		cn.reused = true
		return cn, nil
	case p.open <- struct{}{}:
		return p.connect(deadline)
	case <-t.C:
		return nil, errNoConn
	}
}

// connect dials a connection; the caller holds its token.
func (p *conns) connect(deadline time.Time) (*conn, error) {
	var nc net.Conn
	var err error
	if p.dial != nil {
		nc, err = p.dial(p.addr)
	} else {
		nc, err = fasthttp.DialTimeout(p.addr, time.Until(deadline))
	}
	if err == nil && p.tls != nil {
		tc := tls.Client(nc, p.tls)
		if err = tc.SetDeadline(deadline); err == nil {
			err = tc.Handshake()
		}
		if err != nil {
			tc.Close()
		}
		nc = tc
	}
	if err != nil {
		<-p.open
		return nil, err
	}
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, 4096), bw: bufio.NewWriterSize(nc, 1024)}, nil
}

// put gives cn back for another request, or closes it once the client is
// closed.
func (p *conns) put(cn *conn, now time.Time) {
	if p.closed.Load() {
		p.discard(cn)
		return
	}
	cn.used = now
	select {
	case p.idle <- cn:
		if p.closed.Load() { // closed meanwhile: close also what it missed
			p.closeIdle()
		}
	default:
		p.discard(cn)
	}
}

// discard closes cn and frees its token.
func (p *conns) discard(cn *conn) {
	cn.nc.Close()
	<-p.open
}

// closeIdle closes the idle connections.
func (p *conns) closeIdle() {
	for {
		select {
		case cn := <-p.idle:
			p.discard(cn)
		default:
			return
		}
	}
}

// close closes the idle connections, and the busy ones when given back.
func (p *conns) close() {
	p.closed.Store(true)
	p.closeIdle()
}

// send writes a GET of path to host, bounded by deadline.
func (cn *conn) send(path []byte, host string, start, deadline time.Time, timeout time.Duration) error {
	// Setting a deadline costs a runtime timer update: keep the one set
	// while it bounds the write by at least half the try's timeout.
	if cn.wdl.After(deadline) || cn.wdl.Before(start.Add(timeout/2)) {
		if err := cn.nc.SetWriteDeadline(deadline); err != nil {
			return err
		}
		cn.wdl = deadline
	}
	cn.bw.WriteString("GET ")
	cn.bw.Write(path)
	cn.bw.WriteString(" HTTP/1.1\r\nHost: ")
	cn.bw.WriteString(host)
	cn.bw.WriteString("\r\n\r\n")
	return cn.bw.Flush()
}

// begun waits until t for the first byte of the answer. It reports
// whether it came; err is nil when it came or t passed first.
func (cn *conn) begun(t time.Time) (bool, error) {
	if cn.br.Buffered() > 0 {
		return true, nil
	}
	if err := cn.nc.SetReadDeadline(t); err != nil {
		return false, err
	}
	if _, err := cn.br.Peek(1); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// stale reports whether err is how a connection the server closed while
// it was idle fails: the request can be sent again on a new one.
func stale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
