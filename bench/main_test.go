package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

// testChildVar names the role in which TestMain runs this test binary as a
// child process of a test.
const testChildVar = "PROMO_BENCH_TEST_CHILD"

// TestMain lets tests run this test binary as a child process: as the bare
// server (what promo bench bare-server runs), as a parent of one, or as a
// program that fails before listening.
func TestMain(m *testing.M) {
	switch os.Getenv(testChildVar) {
	case "bare-server":
		fs := flag.NewFlagSet("bare-server", flag.ExitOnError)
		addr := fs.String("addr", "", "listen address")
		fs.Parse(os.Args[1:])
		if err := RunBareServer(context.Background(), BareServerConfig{Addr: *addr, Announce: os.Stderr}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case "parent":
		b, err := StartBareChild(context.Background(), testBareChild("bare-server"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%d %s\n", b.PID(), b.URL())
		select {} // until the test kills this process
	case "fail":
		fmt.Fprintln(os.Stderr, "cannot serve today")
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// testBareChild runs this test binary in role.
func testBareChild(role string) BareChildConfig {
	env := []string{testChildVar + "=" + role}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, testChildVar+"=") {
			env = append(env, kv)
		}
	}
	return BareChildConfig{Path: os.Args[0], Env: env}
}
