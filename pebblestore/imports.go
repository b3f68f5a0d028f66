package pebblestore

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// SaveImport stores doc, the status of import id (the import service's
// JSON), replacing an earlier one of the same id, and removes all but the
// keep imports with the highest ids, in one synced write. The statuses
// are metadata: they never touch a dataset version.
func (s *Store) SaveImport(id int64, doc []byte, keep int) error {
	if id < 1 || keep < 1 {
		return fmt.Errorf("pebblestore: SaveImport(%d, keep %d): id and keep must be positive", id, keep)
	}
	return s.useDB(func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		ids, err := s.importIDs()
		if err != nil {
			return err
		}
		if _, found := slices.BinarySearch(ids, id); !found {
			ids = append(ids, id)
			slices.Sort(ids)
		}
		b := s.db.NewBatch()
		defer b.Close()
		if err := b.Set(importKey(id), doc, nil); err != nil {
			return err
		}
		for _, old := range ids[:max(0, len(ids)-keep)] {
			if err := b.Delete(importKey(old), nil); err != nil {
				return err
			}
		}
		if err := b.Commit(syncWrite); err != nil {
			return fmt.Errorf("cannot record import %d: %w", id, err)
		}
		return nil
	})
}

// Imports returns the stored import statuses, oldest first. The caller
// owns them.
func (s *Store) Imports() ([][]byte, error) {
	var out [][]byte
	err := s.useDB(func() error {
		it, err := s.db.NewIter(importBounds())
		if err != nil {
			return err
		}
		for it.First(); it.Valid(); it.Next() {
			out = append(out, slices.Clone(it.Value()))
		}
		if err := it.Error(); err != nil {
			it.Close()
			return err
		}
		return it.Close()
	})
	if err != nil {
		return nil, fmt.Errorf("cannot read the import history: %w", err)
	}
	return out, nil
}

// importIDs returns the ids of the stored statuses, in order.
func (s *Store) importIDs() ([]int64, error) {
	it, err := s.db.NewIter(importBounds())
	if err != nil {
		return nil, err
	}
	var ids []int64
	for it.First(); it.Valid(); it.Next() {
		if k := it.Key(); len(k) == len(metaImports)+8 {
			ids = append(ids, int64(binary.BigEndian.Uint64(k[len(metaImports):])))
		}
	}
	if err := it.Error(); err != nil {
		it.Close()
		return nil, err
	}
	return ids, it.Close()
}

func importBounds() *pebble.IterOptions {
	upper := slices.Clone(metaImports)
	upper[len(upper)-1]++
	return &pebble.IterOptions{LowerBound: metaImports, UpperBound: upper}
}
