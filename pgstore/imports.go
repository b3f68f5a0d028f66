package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SaveImport stores doc, the JSON status of import id, replacing an
// earlier one of the same id, and removes all but the keep imports with
// the highest ids, in one transaction.
func (s *Store) SaveImport(ctx context.Context, id int64, doc []byte, keep int) error {
	if id < 1 || keep < 1 {
		return fmt.Errorf("pgstore: SaveImport(%d, keep %d): id and keep must be positive", id, keep)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO imports (id, status) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()`, id, string(doc)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM imports WHERE id < (
			SELECT min(id) FROM (SELECT id FROM imports ORDER BY id DESC LIMIT $1) newest)`, keep)
		return err
	})
	if err != nil {
		return unavailable(fmt.Errorf("cannot record import %d: %w", id, err))
	}
	return nil
}

// Imports returns the stored import statuses, oldest first.
func (s *Store) Imports(ctx context.Context) ([][]byte, error) {
	rows, err := s.pool.Query(ctx, "SELECT status::text FROM imports ORDER BY id")
	if err != nil {
		return nil, unavailable(err)
	}
	docs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]byte, error) {
		var doc string
		err := r.Scan(&doc)
		return []byte(doc), err
	})
	if err != nil {
		return nil, unavailable(fmt.Errorf("cannot read the import history: %w", err))
	}
	return docs, nil
}
