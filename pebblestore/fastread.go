package pebblestore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// This file is the fast read path of a version. A version is immutable
// once built, so a lookup needs none of Pebble's generic machinery (the
// LSM levels, the block cache, iterators): the store keeps its own hard
// links to the SSTables it ingested for the version, in
// Dir/tables/v<N>/r<K>/, one directory per ingest (a "run": the tables of
// one ingest never overlap), maps them read-only, and looks a key up in
// each run (table.go). A version has one run when built, one more per
// BeginExtend.
//
// The links share the inodes Pebble ingested, so they cost no disk while
// Pebble keeps the same tables; once Pebble compacts a table of a version
// away (which only happens to an extended version, whose runs overlap),
// the link keeps the old copy until the version is dropped.
//
// Invariants:
//   - a version's keys change only by an ingest of new tables (Commit,
//     Prepare, an extension) and by the Excise of the whole version, so a
//     version's runs on disk are its whole data: a run is linked under
//     r<K>.tmp before the ingest and renamed r<K> after it; Open decides
//     a leftover r<K>.tmp by asking Pebble for the run's first key (an
//     ingest is atomic, and every key of a version is in one table);
//   - a version without a directory (built before this path existed, or
//     whose links could not be made) is read through Pebble, also after an
//     extension: an extension adds a run only to a version that has runs;
//   - a version whose tables cannot be opened is read through Pebble;
//   - mappings are released when the version is dropped, which is after
//     its last View is released, or at Close when no View is held.

// fastVersion is the fast read path of one version.
type fastVersion struct {
	dir string
	// runs is nil when lookups of the version must go through Pebble.
	runs atomic.Pointer[[]*tableRun]
	// tables are every table mapped for the version, to unmap on drop;
	// guarded by Store.mu.
	tables []*table
}

// tableRun is the tables of one ingest, ordered by key, disjoint.
type tableRun struct {
	tables []*table
}

// get looks key up in the tables of the version and reports found, or ok
// false when the version has no fast path.
func (fv *fastVersion) get(key []byte) (val []byte, found, ok bool, err error) {
	if fv == nil {
		return nil, false, false, nil
	}
	runs := fv.runs.Load()
	if runs == nil {
		return nil, false, false, nil
	}
	for _, r := range *runs {
		// The last table whose first key is at or before key.
		ts := r.tables
		lo, hi := 0, len(ts)
		for lo < hi {
			h := int(uint(lo+hi) >> 1)
			if bytes.Compare(ts[h].smallest[:], key) <= 0 {
				lo = h + 1
			} else {
				hi = h
			}
		}
		if lo == 0 {
			continue
		}
		val, found, err := ts[lo-1].get(key)
		if err != nil || found {
			return val, found, true, err
		}
	}
	return nil, false, true, nil
}

func (s *Store) versionTablesDir(v uint64) string {
	return filepath.Join(s.tablesDir, "v"+strconv.FormatUint(v, 10))
}

// stageRun links files, the tables an ingest is about to add to version
// v, under the version's next r<K>.tmp, and returns that directory, or ""
// when the version is read through Pebble. extend says whether v already
// holds rows: then it gets a run only if it has runs.
func (s *Store) stageRun(v uint64, files []string, extend bool) string {
	if len(files) == 0 {
		return ""
	}
	vdir := s.versionTablesDir(v)
	if extend {
		// Only a version whose fast path is open gets the new run: the
		// runs of one that is not (never had one, or lost it) must not
		// be opened at the next start without these rows.
		s.mu.Lock()
		fv := s.fast[v]
		open := fv != nil && fv.runs.Load() != nil
		s.mu.Unlock()
		if !open {
			if err := os.RemoveAll(vdir); err != nil {
				s.log.Error("cannot remove the tables of a version whose fast read path is off", "version", v, "err", err)
			}
			return ""
		}
	} else if err := os.RemoveAll(vdir); err != nil {
		s.log.Warn("cannot prepare the fast read path; the version is read through Pebble", "version", v, "err", err)
		return ""
	}
	stage, err := s.linkRun(vdir, files)
	if err == nil {
		return stage
	}
	s.log.Warn("cannot link the tables of a version; it is read through Pebble", "version", v, "err", err)
	if extend {
		// Its runs would miss these rows: the version has no fast path
		// from now on, and none after a restart.
		s.mu.Lock()
		if fv := s.fast[v]; fv != nil {
			fv.runs.Store(nil)
		}
		s.mu.Unlock()
	}
	if err := os.RemoveAll(vdir); err != nil && extend {
		s.log.Error("cannot remove the tables of a version whose fast read path is off", "version", v, "err", err)
	}
	return ""
}

func (s *Store) linkRun(vdir string, files []string) (string, error) {
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return "", err
	}
	runs, _, err := listRuns(vdir)
	if err != nil {
		return "", err
	}
	k := 1
	if len(runs) > 0 {
		k = runs[len(runs)-1] + 1
	}
	stage := filepath.Join(vdir, fmt.Sprintf("r%d.tmp", k))
	if err := os.RemoveAll(stage); err != nil {
		return "", err
	}
	if err := os.Mkdir(stage, 0o755); err != nil {
		return "", err
	}
	for _, f := range files {
		if err := os.Link(f, filepath.Join(stage, filepath.Base(f))); err != nil {
			return "", err
		}
	}
	if err := syncDir(stage); err != nil {
		return "", err
	}
	return stage, syncDir(vdir)
}

// unstage removes a run whose ingest failed.
func (s *Store) unstage(stage string) {
	if stage == "" {
		return
	}
	if err := os.RemoveAll(stage); err != nil {
		s.log.Error("cannot remove the links of tables that were not ingested; they are removed at the next start", "dir", stage, "err", err)
	}
}

// publishRun makes the run staged in stage, now ingested into version v,
// part of the version's fast path. For a new version it creates the path.
func (s *Store) publishRun(v uint64, stage string, extend bool) {
	if stage == "" {
		return
	}
	dir := strings.TrimSuffix(stage, ".tmp")
	err := os.Rename(stage, dir)
	if err == nil {
		err = syncDir(filepath.Dir(dir))
	}
	var r *tableRun
	if err == nil {
		r, err = openRun(dir)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if vi, ok := s.versions[v]; !ok || vi.State == StateDropping {
		// Dropped meanwhile: its directory goes too.
		if r != nil {
			unmapAll(r.tables)
		}
		_ = os.RemoveAll(filepath.Dir(dir))
		return
	}
	fv := s.fast[v]
	if fv == nil {
		if extend {
			// No fast path open (stageRun checked; it went meanwhile):
			// the version stays on Pebble's path, for good.
			if r != nil {
				unmapAll(r.tables)
			}
			_ = os.RemoveAll(filepath.Dir(dir))
			return
		}
		fv = &fastVersion{dir: filepath.Dir(dir)}
		s.fast[v] = fv
	}
	if err != nil {
		// Its links go too, so that no later run takes this one's place
		// and no start opens the version without these rows.
		s.log.Warn("cannot open the tables of a version; it is read through Pebble", "version", v, "err", err)
		fv.runs.Store(nil)
		if err := os.RemoveAll(fv.dir); err != nil {
			s.log.Error("cannot remove the tables of a version whose fast read path is off", "version", v, "err", err)
		}
		return
	}
	fv.tables = append(fv.tables, r.tables...)
	if extend && fv.runs.Load() == nil {
		return // already on Pebble's path
	}
	var runs []*tableRun
	if old := fv.runs.Load(); old != nil {
		runs = slices.Clone(*old)
	}
	runs = append(runs, r)
	fv.runs.Store(&runs)
}

// dropFast removes the fast path of version v: its mappings and links. No
// View of v may be in use.
func (s *Store) dropFast(v uint64) error {
	s.mu.Lock()
	fv := s.fast[v]
	delete(s.fast, v)
	s.mu.Unlock()
	if fv != nil {
		fv.runs.Store(nil)
		unmapAll(fv.tables)
	}
	return os.RemoveAll(s.versionTablesDir(v))
}

// openRun maps the tables in dir and orders them by key.
func openRun(dir string) (*tableRun, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no tables in %s", dir)
	}
	r := &tableRun{}
	for _, name := range names {
		t, err := openTable(name)
		if err != nil {
			unmapAll(r.tables)
			return nil, err
		}
		r.tables = append(r.tables, t)
	}
	slices.SortFunc(r.tables, func(a, b *table) int { return bytes.Compare(a.smallest[:], b.smallest[:]) })
	for i := 1; i < len(r.tables); i++ {
		if bytes.Compare(r.tables[i-1].largest[:], r.tables[i].smallest[:]) >= 0 {
			unmapAll(r.tables)
			return nil, fmt.Errorf("tables %s and %s overlap", r.tables[i-1].path, r.tables[i].path)
		}
	}
	return r, nil
}

func unmapAll(ts []*table) {
	for _, t := range ts {
		_ = t.unmap()
	}
}

// listRuns returns the numbers of the committed runs in vdir, ascending,
// and those of staged ones.
func listRuns(vdir string) (runs, staged []int, err error) {
	ents, err := os.ReadDir(vdir)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range ents {
		name, tmp := strings.CutSuffix(e.Name(), ".tmp")
		k, err := strconv.Atoi(strings.TrimPrefix(name, "r"))
		if !e.IsDir() || !strings.HasPrefix(name, "r") || err != nil || k < 1 {
			return nil, nil, fmt.Errorf("unexpected %s in %s", e.Name(), vdir)
		}
		if tmp {
			staged = append(staged, k)
		} else {
			runs = append(runs, k)
		}
	}
	slices.Sort(runs)
	slices.Sort(staged)
	return runs, staged, nil
}

// recoverFast opens the fast path of every complete version at Open and
// removes the links of versions that are gone. A run staged by an ingest
// that the process did not see end is kept when Pebble has its rows.
func (s *Store) recoverFast() error {
	if err := os.MkdirAll(s.tablesDir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", s.tablesDir, err)
	}
	ents, err := os.ReadDir(s.tablesDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		v, err := strconv.ParseUint(strings.TrimPrefix(e.Name(), "v"), 10, 64)
		vi, ok := s.versions[v]
		if err != nil || !strings.HasPrefix(e.Name(), "v") || !ok || vi.State != StateReady {
			if err := os.RemoveAll(filepath.Join(s.tablesDir, e.Name())); err != nil {
				return fmt.Errorf("cannot remove the tables of a version that is gone: %w", err)
			}
			continue
		}
		if err := s.openFast(v); err != nil {
			s.log.Warn("the fast read path of a version cannot open; it is read through Pebble", "version", v, "err", err)
			s.mu.Lock()
			fv := s.fast[v]
			delete(s.fast, v)
			s.mu.Unlock()
			if fv != nil {
				unmapAll(fv.tables)
			}
			if err := os.RemoveAll(s.versionTablesDir(v)); err != nil {
				return err
			}
		}
	}
	return nil
}

// openFast settles the staged runs of version v and opens its runs. A
// run that fails to open leaves the version on Pebble's path until the
// next Open, with its links kept.
func (s *Store) openFast(v uint64) error {
	vdir := s.versionTablesDir(v)
	runs, staged, err := listRuns(vdir)
	if err != nil {
		return err
	}
	for _, k := range staged {
		stage := filepath.Join(vdir, fmt.Sprintf("r%d.tmp", k))
		in, err := s.ingested(stage)
		if err != nil {
			return err
		}
		if !in {
			if err := os.RemoveAll(stage); err != nil {
				return err
			}
			continue
		}
		if err := os.Rename(stage, strings.TrimSuffix(stage, ".tmp")); err != nil {
			return err
		}
		runs = append(runs, k)
	}
	if len(runs) == 0 {
		return errors.New("no runs")
	}
	slices.Sort(runs)
	fv := &fastVersion{dir: vdir}
	s.mu.Lock()
	s.fast[v] = fv
	s.mu.Unlock()
	var open []*tableRun
	for _, k := range runs {
		r, err := openRun(filepath.Join(vdir, fmt.Sprintf("r%d", k)))
		if err != nil {
			s.log.Warn("cannot open the tables of a version; it is read through Pebble", "version", v, "err", err)
			return nil
		}
		s.mu.Lock()
		fv.tables = append(fv.tables, r.tables...)
		s.mu.Unlock()
		open = append(open, r)
	}
	fv.runs.Store(&open)
	return nil
}

// ingested reports whether Pebble holds the rows of the run staged in
// stage: an ingest is atomic and a key of a version is in one table only,
// so its first key decides.
func (s *Store) ingested(stage string) (bool, error) {
	r, err := openRun(stage)
	if err != nil {
		return false, err
	}
	defer unmapAll(r.tables)
	_, closer, err := s.db.Get(r.tables[0].smallest[:])
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

// closeFast releases the mappings of versions no View holds, at Close.
func (s *Store) closeFast() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for v, fv := range s.fast {
		if p := s.pins[v]; p != nil && p.refs.Load() != 0 {
			continue // a View outlived Close's wait: leave it readable
		}
		fv.runs.Store(nil)
		unmapAll(fv.tables)
		delete(s.fast, v)
	}
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
