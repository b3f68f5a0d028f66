package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/promotion-service/promo/ingest/csv"
)

// History keeps the statuses of imports across restarts. standalone keeps
// them in Pebble, the cluster in PostgreSQL.
type History interface {
	// SaveImport stores doc, the JSON status of import id, replacing an
	// earlier one of the same id, and forgets all but the keep imports
	// with the highest ids.
	SaveImport(ctx context.Context, id int64, doc []byte, keep int) error
	// LoadImports returns the stored statuses, in any order.
	LoadImports(ctx context.Context) ([][]byte, error)
}

// interrupted is the error of an import that a restart found unfinished.
const interrupted = "the server stopped before this import finished or before its outcome was recorded; " +
	"an unfinished import leaves nothing visible (GET /datasets shows what serves)"

// Restore loads the imports of earlier processes from Config.History, so
// that GET /imports lists them and ids continue after the highest one. An
// import that was still queued or running is shown as failed. Servers
// call it once, after New and before serving.
func (s *Service) Restore(ctx context.Context) error {
	if s.cfg.History == nil {
		return nil
	}
	docs, err := s.cfg.History.LoadImports(ctx)
	if err != nil {
		return fmt.Errorf("cannot load the import history: %w", err)
	}
	var restored []*Job
	for _, doc := range docs {
		var st Status
		if err := json.Unmarshal(doc, &st); err != nil || st.ImportID < 1 {
			s.log.Warn("skipping an unreadable import status in the history", "err", err)
			continue
		}
		if st.State != StateSucceeded && st.State != StateFailed && st.State != StateHeld {
			st.State = StateFailed
			st.Phase, st.PhaseDone, st.PhaseTotal = "", 0, 0
			st.Error = interrupted
		}
		if st.Errors == nil {
			st.Errors = []csv.RowError{}
		}
		done := make(chan struct{})
		close(done)
		restored = append(restored, &Job{id: st.ImportID, done: done, inputDone: done, restored: &st})
	}
	slices.SortFunc(restored, func(a, b *Job) int { return cmpInt64(a.id, b.id) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Running() != nil || len(s.jobs) > 0 {
		return fmt.Errorf("ingest: Restore after imports started")
	}
	if n := len(restored); n > s.cfg.KeepJobs {
		restored = restored[n-s.cfg.KeepJobs:]
	}
	s.jobs = restored
	if n := len(restored); n > 0 {
		s.nextID = restored[n-1].id + 1
	}
	return nil
}

// save records the current status of j in the history, if any.
func (s *Service) save(ctx context.Context, j *Job) error {
	if s.cfg.History == nil {
		return nil
	}
	doc, err := json.Marshal(j.Status())
	if err != nil {
		return err
	}
	if err := s.cfg.History.SaveImport(ctx, j.id, doc, s.cfg.KeepJobs); err != nil {
		return fmt.Errorf("cannot record import %d: %w", j.id, err)
	}
	j.saved = true
	return nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
