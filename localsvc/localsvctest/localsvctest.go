// Package localsvctest gives integration tests real PostgreSQL, Redis and a
// Kafka-protocol broker on loopback (see localsvc). A missing server
// binary skips the test with a message, or fails it when the CI
// environment variable is set: on CI, nothing is silently not tested.
//
// A package that uses the shared PostgreSQL server stops it in TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(localsvctest.Run(m)) }
package localsvctest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/promotion-service/promo/localsvc"
)

// Unavailable ends tb for err, a failure to start a service: a skip with
// a message when the service is not installed and CI is unset, else a
// failure.
func Unavailable(tb testing.TB, err error) {
	tb.Helper()
	if errors.Is(err, localsvc.ErrNotInstalled) && os.Getenv("CI") == "" {
		tb.Skipf("skipping: %v (set CI=1 to make this a failure)", err)
	}
	tb.Fatal(err)
}

var shared struct {
	once sync.Once
	pg   *localsvc.Postgres
	dir  string
	err  error
	dbs  atomic.Int64
}

// Run runs the tests of a package and then stops the servers they shared.
func Run(m *testing.M) int {
	code := m.Run()
	if shared.pg != nil {
		_ = shared.pg.Stop()
		os.RemoveAll(shared.dir)
	}
	return code
}

// Database returns the URL of a new, empty database on a PostgreSQL server
// shared by the tests of the package (started on first use). Tests that
// stop or kill the server use NewPostgres instead.
func Database(tb testing.TB) string {
	tb.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "promo-pg-")
		if shared.err != nil {
			return
		}
		shared.pg, shared.err = localsvc.StartPostgres(context.Background(), localsvc.PostgresConfig{Dir: shared.dir})
	})
	if shared.err != nil {
		Unavailable(tb, shared.err)
	}
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), shared.dbs.Add(1))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, shared.pg.URL)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		conn, err := pgx.Connect(ctx, shared.pg.URL)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", shared.pg.Port(), name)
}

// NewPostgres starts a PostgreSQL server of the test's own, stopped when
// the test ends.
func NewPostgres(tb testing.TB) *localsvc.Postgres {
	tb.Helper()
	dir, err := os.MkdirTemp("", "promo-pg-")
	if err != nil {
		tb.Fatal(err)
	}
	pg, err := localsvc.StartPostgres(context.Background(), localsvc.PostgresConfig{Dir: dir})
	if err != nil {
		os.RemoveAll(dir)
		Unavailable(tb, err)
	}
	tb.Cleanup(func() {
		_ = pg.Stop()
		os.RemoveAll(dir)
	})
	return pg
}

// Redis starts a redis-server for the test.
func Redis(tb testing.TB) *localsvc.Redis {
	tb.Helper()
	r, err := localsvc.StartRedis(context.Background(), localsvc.RedisConfig{Dir: tb.TempDir()})
	if err != nil {
		Unavailable(tb, err)
	}
	tb.Cleanup(func() { _ = r.Stop() })
	return r
}

// Kafka starts an in-process Kafka-protocol broker with topics.
func Kafka(tb testing.TB, topics ...string) *localsvc.Kafka {
	tb.Helper()
	k, err := localsvc.StartKafka(0, topics...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(k.Stop)
	return k
}

// SucceedsSoon runs check until it returns nil, and fails the test with
// its last error once d has passed: a wait on observable state, in place
// of a fixed sleep.
func SucceedsSoon(t testing.TB, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %v: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
