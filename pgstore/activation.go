package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file is which version the cluster serves: table activation (one
// row) holds the serving version and its epoch, raised by every
// activation, and an operator's requested activation (the target) until
// read nodes have prepared it everywhere.

// Errors of RequestActivation.
var (
	// ErrUnknownVersion: the version was never committed, or retention
	// dropped it.
	ErrUnknownVersion = errors.New("pgstore: no such dataset version is kept")
	// ErrNotActivatable: the version exists but cannot serve (still
	// building).
	ErrNotActivatable = errors.New("pgstore: the dataset version cannot be activated")
	// ErrHeld is returned, wrapped with the reason, by Commit for a version
	// the activation guard held (Config.MinRowsRatio): it is committed and
	// announced, but read nodes do not activate it on their own.
	ErrHeld = errors.New("pgstore: dataset version held by the activation guard")
)

// Activation is the cluster's activation state.
type Activation struct {
	// Epoch counts activations; Version serves since the latest, at
	// ActivatedAt (0 before the first).
	Epoch       uint64     `json:"epoch"`
	Version     uint64     `json:"version"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
	// Target is a version an operator asked to activate, which read nodes
	// are preparing (0: none), since RequestedAt.
	Target      uint64     `json:"target,omitempty"`
	RequestedAt *time.Time `json:"requested_at,omitempty"`
	// ServedEpoch is the latest epoch that a read node saw served by a
	// replica of every slot.
	ServedEpoch uint64 `json:"served_epoch"`
}

const activationColumns = "epoch, version, activated_at, coalesce(target, 0), requested_at, served_epoch"

func scanActivation(row pgx.Row) (Activation, error) {
	var a Activation
	err := row.Scan(&a.Epoch, &a.Version, &a.ActivatedAt, &a.Target, &a.RequestedAt, &a.ServedEpoch)
	return a, err
}

// Activation returns the cluster's activation state.
func (s *Store) Activation(ctx context.Context) (Activation, error) {
	a, err := scanActivation(s.pool.QueryRow(ctx, "SELECT "+activationColumns+" FROM activation"))
	return a, unavailable(err)
}

// Active returns the version the cluster serves, with the epoch of its
// activation, and false when the cluster has activated none.
func (s *Store) Active(ctx context.Context) (Version, bool, error) {
	v, err := scanVersion(s.pool.QueryRow(ctx, "SELECT "+versionColumns+
		" FROM datasets WHERE state = 'committed' AND version = (SELECT version FROM activation)"))
	if errors.Is(err, pgx.ErrNoRows) {
		return Version{}, false, nil
	}
	if err != nil {
		return Version{}, false, unavailable(err)
	}
	return v, true, nil
}

// Pending returns the version read nodes should activate next, given
// the activation state a and the newest committed version latest (ok
// false: none): the operator's target, or else latest when it has never
// been activated and the activation guard did not hold it. It reports
// false when there is none.
func (s *Store) Pending(ctx context.Context, a Activation, latest Version, hasLatest bool) (Version, bool, error) {
	if a.Target != 0 {
		v, err := s.Version(ctx, a.Target)
		if errors.Is(err, pgx.ErrNoRows) {
			return Version{}, false, nil
		}
		if err != nil {
			return Version{}, false, err
		}
		return v, v.State == "committed", nil
	}
	if hasLatest && latest.Version != a.Version && latest.ActivatedAt == nil && latest.HeldReason == "" {
		return latest, true, nil
	}
	return Version{}, false, nil
}

// Activate makes version v the one the cluster serves, at the next epoch,
// if it is still the one to activate: the operator's target, or, with no
// target, a committed version never activated and not held. Read nodes
// call it once every slot of v is prepared on a replica; several may race,
// and all but one change nothing.
func (s *Store) Activate(ctx context.Context, v uint64) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		a, err := scanActivation(tx.QueryRow(ctx, "SELECT "+activationColumns+" FROM activation FOR UPDATE"))
		if err != nil {
			return err
		}
		var state string
		var held, activated bool
		err = tx.QueryRow(ctx, "SELECT state, held_reason IS NOT NULL, activated_at IS NOT NULL FROM datasets WHERE version = $1", v).
			Scan(&state, &held, &activated)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		due := a.Target == v || (a.Target == 0 && !held && !activated && a.Version != v)
		if state != "committed" || !due {
			return nil
		}
		epoch := a.Epoch + 1
		if _, err := tx.Exec(ctx, `UPDATE activation SET epoch = $1, version = $2, activated_at = now(), target = NULL, requested_at = NULL`,
			epoch, v); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE datasets SET activated_at = now(), epoch = $2 WHERE version = $1", v, epoch)
		if err == nil {
			s.log.Info("activated a dataset version for the cluster", "version", v, "epoch", epoch, "requested", a.Target == v)
		}
		return err
	})
	return unavailable(err)
}

// RequestActivation asks the cluster to serve version v, a committed
// version still kept (an operator's rollback, or a held version served on
// purpose): read nodes prepare it where they lack it and activate it, at
// a new epoch, once every slot is prepared. Asking for the version that
// serves withdraws a pending request. It fails with ErrUnknownVersion or
// ErrNotActivatable.
func (s *Store) RequestActivation(ctx context.Context, v uint64) (Activation, error) {
	var out Activation
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		a, err := scanActivation(tx.QueryRow(ctx, "SELECT "+activationColumns+" FROM activation FOR UPDATE"))
		if err != nil {
			return err
		}
		var state string
		err = tx.QueryRow(ctx, "SELECT state FROM datasets WHERE version = $1", v).Scan(&state)
		switch {
		case errors.Is(err, pgx.ErrNoRows), err == nil && state == "dropped":
			return fmt.Errorf("%w: %d", ErrUnknownVersion, v)
		case err != nil:
			return err
		case state != "committed":
			return fmt.Errorf("%w: version %d is %s", ErrNotActivatable, v, state)
		}
		if a.Version == v {
			_, err = tx.Exec(ctx, "UPDATE activation SET target = NULL, requested_at = NULL")
		} else {
			_, err = tx.Exec(ctx, "UPDATE activation SET target = $1, requested_at = now()", v)
		}
		if err != nil {
			return err
		}
		out, err = scanActivation(tx.QueryRow(ctx, "SELECT "+activationColumns+" FROM activation"))
		return err
	})
	if errors.Is(err, ErrUnknownVersion) || errors.Is(err, ErrNotActivatable) {
		return Activation{}, err
	}
	if err == nil {
		s.log.Info("activation requested", "version", v, "serving", out.Version, "epoch", out.Epoch)
	}
	return out, unavailable(err)
}

// MarkServed records that every slot is served at epoch (a read node
// checked the reports of ReportServing against the ring).
func (s *Store) MarkServed(ctx context.Context, epoch uint64) error {
	_, err := s.pool.Exec(ctx, "UPDATE activation SET served_epoch = $1 WHERE epoch = $1 AND served_epoch < $1", epoch)
	return unavailable(err)
}

// ReportServing records that node serves version v at epoch, refreshing
// the time of the report.
func (s *Store) ReportServing(ctx context.Context, node string, v, epoch uint64) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO node_versions (node, version, state, epoch, updated_at) VALUES ($1, $2, 'serving', $3, now())
		ON CONFLICT (node, version) DO UPDATE SET state = 'serving', epoch = EXCLUDED.epoch, updated_at = now()`, node, v, epoch)
	return unavailable(err)
}

// ServingAt returns the nodes that reported serving version v at epoch.
func (s *Store) ServingAt(ctx context.Context, v, epoch uint64) ([]string, error) {
	rows, err := s.pool.Query(ctx, "SELECT node FROM node_versions WHERE version = $1 AND state = 'serving' AND epoch = $2", v, epoch)
	if err != nil {
		return nil, unavailable(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return out, unavailable(err)
}

// guard returns why version v of rows rows is held by the activation
// guard, inside the transaction that commits it, or "".
func (s *Store) guard(ctx context.Context, tx pgx.Tx, v uint64, rows int64) (string, error) {
	if s.cfg.MinRowsRatio <= 0 {
		return "", nil
	}
	var serving uint64
	var servingRows int64
	err := tx.QueryRow(ctx, "SELECT d.version, d.rows FROM activation a JOIN datasets d ON d.version = a.version").Scan(&serving, &servingRows)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil // nothing serves: the first version is never held
	}
	if err != nil {
		return "", err
	}
	if float64(rows) >= s.cfg.MinRowsRatio*float64(servingRows) {
		return "", nil
	}
	return fmt.Sprintf("version %d has %d rows, fewer than %g x the %d rows of the serving version %d (min_rows_ratio); it is kept but not activated: POST /datasets/%d/activate serves it",
		v, rows, s.cfg.MinRowsRatio, servingRows, serving, v), nil
}
