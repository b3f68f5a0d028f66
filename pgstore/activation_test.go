package pgstore

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/promotion-service/promo/localsvc/localsvctest"
)

// commitRows commits a version of n random rows and returns its number
// and Commit's error.
func commitRows(t *testing.T, s *Store, rng *rand.Rand, n int) (uint64, error) {
	t.Helper()
	b, err := s.Begin(context.Background(), "x", 1)
	if err != nil {
		t.Fatal(err)
	}
	addAll(t, b, randomRecords(rng, n), 1)
	_, _, err = b.Commit(context.Background())
	return b.Version(), err
}

func mustActivation(t *testing.T, s *Store) Activation {
	t.Helper()
	a, err := s.Activation(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func versionState(t *testing.T, s *Store, v uint64) string {
	t.Helper()
	vs, err := s.Versions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range vs {
		if x.Version == v {
			return x.State
		}
	}
	return "gone"
}

// Every activation raises the epoch; an import's version activates only
// once and only when not held; an operator's request activates any kept
// committed version, a held one included, and the rolled-back-from
// version is not activated again on its own.
func TestActivationEpochsAndGuard(t *testing.T) {
	cfg := testConfig(localsvctest.Database(t))
	cfg.MinRowsRatio = 0.5
	cfg.KeepVersions = 5
	s := mustOpen(t, cfg)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(21, 22))
	if a := mustActivation(t, s); a.Epoch != 0 || a.Version != 0 {
		t.Fatalf("activation of an empty cluster: %+v", a)
	}
	if _, err := commitRows(t, s, rng, 1000); err != nil {
		t.Fatal(err) // the first version is never held
	}
	latest, _, _ := s.Latest(ctx)
	p, ok, err := s.Pending(ctx, mustActivation(t, s), latest, true)
	if err != nil || !ok || p.Version != 1 {
		t.Fatalf("pending before the first activation: %+v %v %v", p, ok, err)
	}
	if err := s.Activate(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(ctx, 1); err != nil { // a second node racing: no-op
		t.Fatal(err)
	}
	if a := mustActivation(t, s); a.Epoch != 1 || a.Version != 1 || a.ActivatedAt == nil {
		t.Fatalf("after activating 1: %+v", a)
	}

	v2, err := commitRows(t, s, rng, 300)
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "300 rows") {
		t.Fatalf("commit of 30%%: %v, want ErrHeld", err)
	}
	if st := versionState(t, s, v2); st != "held" {
		t.Fatalf("version 2 is %q, want held", st)
	}
	latest, _, _ = s.Latest(ctx)
	if latest.Version != v2 || latest.HeldReason == "" {
		t.Fatalf("latest %+v, want the held version 2 with its reason", latest)
	}
	if _, ok, _ := s.Pending(ctx, mustActivation(t, s), latest, true); ok {
		t.Fatal("a held version is pending without a request")
	}
	if err := s.Activate(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if a := mustActivation(t, s); a.Version != 1 || a.Epoch != 1 {
		t.Fatalf("a node activated the held version on its own: %+v", a)
	}

	// The operator serves it on purpose.
	a, err := s.RequestActivation(ctx, v2)
	if err != nil || a.Target != v2 || a.Version != 1 {
		t.Fatalf("request: %+v %v", a, err)
	}
	p, ok, _ = s.Pending(ctx, a, latest, true)
	if !ok || p.Version != v2 {
		t.Fatalf("pending after the request: %+v %v", p, ok)
	}
	if err := s.Activate(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if a := mustActivation(t, s); a.Version != v2 || a.Epoch != 2 || a.Target != 0 {
		t.Fatalf("after activating the held version: %+v", a)
	}
	if st := versionState(t, s, v2); st != "committed" {
		t.Fatalf("version 2 is %q once activated, want committed", st)
	}

	// Roll back to 1: a new epoch, and 2 stays rolled back from.
	if _, err := s.RequestActivation(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(ctx, 1); err != nil {
		t.Fatal(err)
	}
	a = mustActivation(t, s)
	if a.Version != 1 || a.Epoch != 3 {
		t.Fatalf("after the rollback: %+v, want version 1 at epoch 3", a)
	}
	if _, ok, _ := s.Pending(ctx, a, latest, true); ok {
		t.Fatal("the version rolled back from is pending again")
	}
	// The next import activates as usual.
	v3, err := commitRows(t, s, rng, 1000)
	if err != nil {
		t.Fatal(err)
	}
	latest, _, _ = s.Latest(ctx)
	if p, ok, _ := s.Pending(ctx, a, latest, true); !ok || p.Version != v3 {
		t.Fatalf("pending after a new import: %+v %v, want %d", p, ok, v3)
	}

	// Served: a node records that every slot serves the epoch.
	if err := s.ReportServing(ctx, "n1", 1, 3); err != nil {
		t.Fatal(err)
	}
	if nodes, err := s.ServingAt(ctx, 1, 3); err != nil || len(nodes) != 1 || nodes[0] != "n1" {
		t.Fatalf("ServingAt: %v %v", nodes, err)
	}
	if nodes, _ := s.ServingAt(ctx, 1, 2); len(nodes) != 0 {
		t.Fatalf("ServingAt an older epoch: %v", nodes)
	}
	if err := s.MarkServed(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if a := mustActivation(t, s); a.ServedEpoch != 3 {
		t.Fatalf("served epoch %d, want 3", a.ServedEpoch)
	}

	// Unknown and unfinished versions.
	if _, err := s.RequestActivation(ctx, 99); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("request of 99: %v, want ErrUnknownVersion", err)
	}
	b, err := s.Begin(ctx, "x", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RequestActivation(ctx, b.Version()); !errors.Is(err, ErrNotActivatable) {
		t.Fatalf("request of a building version: %v, want ErrNotActivatable", err)
	}
	b.Abort()
}

// Retention never drops the version that serves nor the one an operator
// asked to activate, even beyond KeepVersions.
func TestRetentionKeepsActiveAndTarget(t *testing.T) {
	cfg := testConfig(localsvctest.Database(t))
	cfg.KeepVersions = 2
	s := mustOpen(t, cfg)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(23, 24))
	for range 2 {
		if _, err := commitRows(t, s, rng, 100); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Activate(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RequestActivation(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// 3 and 4 would leave 1 beyond the two kept: it is being activated.
	for range 2 {
		if _, err := commitRows(t, s, rng, 100); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if st := versionState(t, s, 1); st != "committed" {
		t.Fatalf("the requested version 1 is %q after retention, want committed", st)
	}
	if st := versionState(t, s, 2); st != "committed" {
		t.Fatalf("the serving version 2 is %q after retention, want committed", st)
	}
	if err := s.Activate(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	// 1 serves; of the others, 4 and 3 are the newest two.
	for v, want := range map[uint64]string{1: "committed", 2: "gone", 3: "committed", 4: "committed"} {
		if st := versionState(t, s, v); st != want {
			t.Fatalf("version %d is %q, want %s", v, st, want)
		}
	}
	var n int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'promo_v1_%'").Scan(&n); err != nil || n == 0 {
		t.Fatalf("the tables of the serving version 1: %d %v", n, err)
	}
}
