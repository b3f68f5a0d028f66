package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/promotion-service/promo/promotion"
	"github.com/promotion-service/promo/ring"
)

// fake starts a listener whose connections are handled by serve.
func fake(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return "http://" + ln.Addr().String()
}

// good is a read node that holds every id: 200 with version 7.
func good(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/readyz" {
			ctx.SetBodyString(`{"status":"ready"}`)
			return
		}
		ctx.Response.Header.Set("X-Dataset-Version", "7")
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"from":"good","path":"` + string(ctx.Path()) + `"}`)
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

func startProxy(t *testing.T, nodes []ring.Node) *Proxy {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Nodes = nodes
	cfg.Replicas = 2
	cfg.TryTimeout = 200 * time.Millisecond
	cfg.HealthInterval = time.Hour // only passive failures in this test
	cfg.Logger = slog.New(slog.DiscardHandler)
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	for _, b := range p.backends {
		b.up.Store(true) // as if their health checks had passed
	}
	return p
}

func TestFailoverFromHangingAndGarbageNodes(t *testing.T) {
	hang := fake(t, func(c net.Conn) { time.Sleep(5 * time.Second); c.Close() })
	garbage := fake(t, func(c net.Conn) {
		io.WriteString(c, "this is not HTTP\r\n\r\n")
		c.Close()
	})
	for name, bad := range map[string]string{"hanging": hang, "garbage": garbage} {
		t.Run(name, func(t *testing.T) {
			p := startProxy(t, []ring.Node{{Name: "bad", URL: bad}, {Name: "good", URL: good(t)}})
			client := &http.Client{Timeout: 5 * time.Second}
			for i := range 20 {
				id := promotion.ID{byte(i), byte(i * 7), 3}
				start := time.Now()
				resp, err := client.Get("http://" + p.Addr() + "/promotions/" + id.String())
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.Contains(string(body), `"from":"good"`) || resp.Header.Get("X-Dataset-Version") != "7" {
					t.Fatalf("lookup %d: %d %s", i, resp.StatusCode, body)
				}
				if d := time.Since(start); d > time.Second {
					t.Fatalf("lookup %d took %v: a bad node must cost at most one try timeout", i, d)
				}
			}
			if p.backends[p.ring.Index("bad")].errors.Get() == 0 {
				t.Fatal("no error counted for the bad node")
			}
			if p.backends[p.ring.Index("bad")].up.Load() {
				t.Fatal("the bad node is still marked up after failing requests")
			}
		})
	}
}

func TestNoReplicaAnswers(t *testing.T) {
	hang := fake(t, func(c net.Conn) { time.Sleep(5 * time.Second); c.Close() })
	p := startProxy(t, []ring.Node{{Name: "a", URL: hang}, {Name: "b", URL: hang}})
	start := time.Now()
	resp, err := http.Get("http://" + p.Addr() + "/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "no replica") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the client waited %v", d)
	}
	resp, _ = http.Get("http://" + p.Addr() + "/promotions/not-an-id")
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("malformed id: %d", resp.StatusCode)
	}
}

func TestConfigErrors(t *testing.T) {
	f := func(nodes string, replicas int, want string) {
		t.Helper()
		members, err := ring.ParseNodes(nodes, true)
		if err == nil {
			cfg := DefaultConfig()
			cfg.Addr = "127.0.0.1:0"
			cfg.Nodes, cfg.Replicas = members, replicas
			_, err = Start(context.Background(), cfg)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q R=%d: %v, want %q", nodes, replicas, err, want)
		}
	}
	f("a=http://127.0.0.1:1,a=http://127.0.0.1:2", 1, "twice")
	f("a=http://127.0.0.1:1", 2, "Replicas must be between 1 and the number of nodes")
	f("a=not-a-url", 1, "not an http(s) URL")
	f("", 1, "no nodes")
}
