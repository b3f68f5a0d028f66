package localsvc_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/promotion-service/promo/localsvc/localsvctest"
)

// pingPostgres connects to url and runs a query within d.
func pingPostgres(url string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// A paused server answers nothing until resumed; a stopped one starts
// again on the same port and data.
func TestPostgresPauseResumeRestart(t *testing.T) {
	pg := localsvctest.NewPostgres(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	if err := pg.Pause(); err != nil {
		t.Fatal(err)
	}
	// Both a new connection and one opened before (its backend a process
	// of its own) get no answer.
	err = pingPostgres(pg.URL, 300*time.Millisecond)
	qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	var v int
	qerr := conn.QueryRow(qctx, "SELECT v FROM kept").Scan(&v)
	cancel()
	if rerr := pg.Resume(); rerr != nil {
		t.Fatal(rerr)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("new connection to a paused server: %v, want a timeout", err)
	}
	if qerr == nil {
		t.Fatal("a connection opened before Pause was answered while paused")
	}
	if err := pingPostgres(pg.URL, 10*time.Second); err != nil {
		t.Fatalf("after Resume: %v", err)
	}
	conn.Close(ctx)

	pid, url := pg.PID(), pg.URL
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := pingPostgres(url, time.Second); err == nil {
		t.Fatal("a stopped server answered")
	}
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if pg.URL != url || pg.PID() == pid {
		t.Fatalf("after Restart: URL %s (was %s), PID %d (was %d); want the same URL and a new process", pg.URL, url, pg.PID(), pid)
	}
	conn, err = pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 42 {
		t.Fatalf("data after Restart: %d, %v; want 42", v, err)
	}
}

// A paused redis-server accepts connections but answers nothing; a
// stopped one starts again, empty, on the same port.
func TestRedisPauseResumeRestart(t *testing.T) {
	r := localsvctest.Redis(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port()))
	ping := func(d time.Duration) error {
		c, err := net.DialTimeout("tcp", addr, d)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(d))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		buf := make([]byte, 7)
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) != "+PONG\r\n" {
			err = errors.New("unexpected answer " + string(buf[:n]))
		}
		return err
	}
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	err := ping(200 * time.Millisecond)
	if rerr := r.Resume(); rerr != nil {
		t.Fatal(rerr)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("PING to a paused server: %v, want a timeout", err)
	}
	if err := ping(5 * time.Second); err != nil {
		t.Fatalf("after Resume: %v", err)
	}
	url := r.URL
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := ping(200 * time.Millisecond); err == nil {
		t.Fatal("a stopped server answered")
	}
	if err := r.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r.URL != url {
		t.Fatalf("URL after Restart %s, want %s", r.URL, url)
	}
	if err := ping(5 * time.Second); err != nil {
		t.Fatalf("after Restart: %v", err)
	}
}
