package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestBareChildServesUntilClosed(t *testing.T) {
	b, err := StartBareChild(context.Background(), testBareChild("bare-server"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	resp, err := http.Get(b.URL() + "/promotions/d018ef0b-dbd9-48f1-ac1a-eb4d90e57118")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || string(body) != string(ConstantBody()) || resp.Header.Get("X-Dataset-Version") != "1" {
		t.Fatalf("the child answered %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(b.URL(), "http://"), time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Close", b.URL())
	}
	if err := b.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

func TestBareChildThatExitsEarly(t *testing.T) {
	start := time.Now()
	_, err := StartBareChild(context.Background(), testBareChild("fail"))
	if err == nil || !strings.Contains(err.Error(), "exited before listening") || !strings.Contains(err.Error(), "cannot serve today") {
		t.Fatalf("got %v, want the child's exit and its message", err)
	}
	if el := time.Since(start); el >= bareStartTimeout {
		t.Fatalf("the error took %v, the whole start timeout", el)
	}
}

func TestParseAnnounce(t *testing.T) {
	f := func(line, want string, wantOK bool) {
		t.Helper()
		if got, ok := parseAnnounce(line); got != want || ok != wantOK {
			t.Fatalf("parseAnnounce(%q) = %q, %v; want %q, %v", line, got, ok, want, wantOK)
		}
	}
	f(strings.TrimSuffix(fmt.Sprintf(announceFormat, 99, "127.0.0.1:41234"), "\n"), "127.0.0.1:41234", true)
	f(strings.TrimSuffix(fmt.Sprintf(announceFormat, 99, "[::1]:80"), "\n"), "[::1]:80", true)
	f("panic: something else", "", false)
}
