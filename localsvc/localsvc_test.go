package localsvc_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/promotion-service/promo/localsvc"
	"github.com/promotion-service/promo/localsvc/localsvctest"
)

// childEnv makes the test binary, run again as a child, start PostgreSQL
// and redis-server under the directory it names, print their PIDs and wait
// to be killed.
const childEnv = "LOCALSVC_TEST_SERVERS_IN"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	os.Exit(m.Run())
}

func runChild(dir string) int {
	ctx := context.Background()
	pg, err := localsvc.StartPostgres(ctx, localsvc.PostgresConfig{Dir: filepath.Join(dir, "pg")})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	r, err := localsvc.StartRedis(ctx, localsvc.RedisConfig{Dir: dir})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("pids", postmasterPID(pg.Dir()), r.PID())
	select {}
}

// postmasterPID reads the PID of the server of data directory dir.
func postmasterPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	return pid
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// waitGone fails t unless pid exits within d.
func waitGone(t *testing.T, pid int, d time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still runs %v after its parent died", what, pid, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reachableTempDir returns a new directory that user postgres can reach
// (t.TempDir's parent is mode 0700), removed when the test ends.
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "promo-localsvc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func requireServers(t *testing.T) {
	t.Helper()
	if _, err := localsvc.FindPostgres(); err != nil {
		localsvctest.Unavailable(t, err)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		localsvctest.Unavailable(t, fmt.Errorf("%w: redis-server", localsvc.ErrNotInstalled))
	}
}

// A process killed with SIGKILL takes its servers with it, and the next
// start on the same directory works (no "postmaster.pid already exists").
func TestServersDieWithTheirParent(t *testing.T) {
	requireServers(t)
	dir := reachableTempDir(t)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+dir)
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child said nothing: %v", err)
	}
	var pgPID, redisPID int
	if _, err := fmt.Sscanf(line, "pids %d %d", &pgPID, &redisPID); err != nil || !alive(pgPID) || !alive(redisPID) {
		t.Fatalf("child: %q (%v); want two live PIDs", line, err)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	waitGone(t, pgPID, 30*time.Second, "postgres")
	waitGone(t, redisPID, 10*time.Second, "redis-server")

	pg, err := localsvc.StartPostgres(context.Background(), localsvc.PostgresConfig{Dir: filepath.Join(dir, "pg")})
	if err != nil {
		t.Fatalf("restart on the same directory: %v", err)
	}
	stopAtEnd(t, pg)
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
}

// A server orphaned by a process that died before it could take the
// server along is recognised by the next start on its directory and
// stopped, and the new server serves.
func TestStartStopsOrphanedPostgres(t *testing.T) {
	requireServers(t)
	dir := reachableTempDir(t)
	ctx := context.Background()
	pg, err := localsvc.StartPostgres(ctx, localsvc.PostgresConfig{Dir: filepath.Join(dir, "pg")})
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, pg)
	data, port := pg.Dir(), pg.Port()
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}

	// The orphan: started in the background by a shell that exits at once,
	// as the old devcluster's servers were left by its SIGKILL. Its owner
	// record names the shell, which is dead.
	bin, _ := localsvc.FindPostgres()
	sh := exec.Command("sh", "-c", `"$0" -D "$1" -p "$2" -k "$1" -c listen_addresses=127.0.0.1 >/dev/null 2>&1 &`,
		filepath.Join(bin, "postgres"), data, strconv.Itoa(port))
	sh.SysProcAttr = &syscall.SysProcAttr{Credential: postgresCredential(t), Setsid: true}
	if err := sh.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "promo.owner"), fmt.Appendf(nil, "0 %d\n", sh.Process.Pid), 0o644); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	orphan := waitPostgres(t, url, data)
	t.Cleanup(func() { _ = syscall.Kill(orphan, syscall.SIGKILL) })

	pg, err = localsvc.StartPostgres(ctx, localsvc.PostgresConfig{Dir: filepath.Join(dir, "pg")})
	if err != nil {
		t.Fatalf("start over an orphan: %v", err)
	}
	stopAtEnd(t, pg)
	defer pg.Stop()
	if alive(orphan) {
		t.Fatalf("the orphaned postgres (pid %d) still runs", orphan)
	}
	if got := postmasterPID(pg.Dir()); got == orphan || !alive(got) {
		t.Fatalf("postmaster.pid names %d, want the new server's live PID (orphan was %d)", got, orphan)
	}
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
}

// A server that a live process owns is left alone: a second start on its
// directory is refused and the first keeps serving.
func TestStartRefusesADirectoryInUse(t *testing.T) {
	requireServers(t)
	dir := filepath.Join(t.TempDir(), "pg")
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pg, err := localsvc.StartPostgres(ctx, localsvc.PostgresConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, pg)
	defer pg.Stop()
	if _, err := localsvc.StartPostgres(ctx, localsvc.PostgresConfig{Dir: dir}); !errors.Is(err, localsvc.ErrInUse) {
		t.Fatalf("second start on a directory in use: %v, want ErrInUse", err)
	}
	r, err := localsvc.StartRedis(ctx, localsvc.RedisConfig{Dir: filepath.Dir(dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	if _, err := localsvc.StartRedis(ctx, localsvc.RedisConfig{Dir: filepath.Dir(dir)}); !errors.Is(err, localsvc.ErrInUse) {
		t.Fatalf("second redis-server on a directory in use: %v, want ErrInUse", err)
	}
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatalf("the first server stopped serving: %v", err)
	}
	conn.Close(ctx)
}

// As root, PostgreSQL runs as user postgres; a directory below one that
// only root may enter still works, its data kept where postgres can reach
// it and found again at the next start.
func TestPostgresUnderADirectoryOnlyRootEnters(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs PostgreSQL as another user")
	}
	requireServers(t)
	private, err := os.MkdirTemp("", "promo-private-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(private) })
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(private, "cluster", "postgres")
	ctx := context.Background()
	pg, err := localsvc.StartPostgres(ctx, localsvc.PostgresConfig{Dir: dir})
	if err != nil {
		t.Fatalf("start below a 0700 directory: %v", err)
	}
	stopAtEnd(t, pg)
	data := pg.Dir()
	t.Cleanup(func() { os.RemoveAll(data) })
	if strings.HasPrefix(data, private) {
		t.Fatalf("data in %s, below the directory postgres cannot enter", data)
	}
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (x int)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(dir); err != nil || target != data {
		t.Fatalf("%s links to %q (%v), want %s", dir, target, err, data)
	}
	pg, err = localsvc.StartPostgres(ctx, localsvc.PostgresConfig{Dir: dir})
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	stopAtEnd(t, pg)
	conn, err = pgx.Connect(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT * FROM kept"); err != nil {
		t.Fatalf("the second start did not find the first one's data: %v", err)
	}
	conn.Close(ctx)
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}

	// Once the directory asked for is gone, nothing finds the relocated
	// data: the next relocation removes it.
	if err := os.RemoveAll(private); err != nil {
		t.Fatal(err)
	}
	other, err := os.MkdirTemp("", "promo-private-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	if err := os.Chmod(other, 0o700); err != nil {
		t.Fatal(err)
	}
	pg, err = localsvc.StartPostgres(ctx, localsvc.PostgresConfig{Dir: filepath.Join(other, "postgres")})
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, pg)
	t.Cleanup(func() { os.RemoveAll(pg.Dir()) })
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("the data of a deleted directory is still in %s (%v)", data, err)
	}
}

func postgresCredential(t *testing.T) *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// waitPostgres waits until the server of data directory dir accepts
// connections at url and returns its PID.
func waitPostgres(t *testing.T, url, dir string) int {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			conn.Close(ctx)
			if pid := postmasterPID(dir); alive(pid) {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the orphan did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A port for a server to bind later comes from below the kernel's
// ephemeral range, where no client socket takes it meanwhile, and is free.
func TestFreePortIsOutsideTheEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skip("no /proc/sys/net/ipv4/ip_local_port_range on this system")
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		p, err := localsvc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if p >= lo && lo > 20001 {
			t.Fatalf("port %d is in the ephemeral range %d-%d", p, lo, hi)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		ln.Close()
	}
}

// stopAtEnd stops pg when the test ends, however it ends (a test that
// stops it itself leaves nothing to do: Stop of a stopped server is a
// no-op).
func stopAtEnd(t *testing.T, pg *localsvc.Postgres) {
	t.Helper()
	t.Cleanup(func() { _ = pg.Stop() })
}
