package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"

	"github.com/promotion-service/promo/promotion"
)

// Errors callers branch on.
var (
	// ErrBusy is returned by Begin while another Batch is open.
	ErrBusy = errors.New("pebblestore: another import is in progress")
	// ErrUnknownVersion is returned by Activate for a version that is not
	// kept.
	ErrUnknownVersion = errors.New("pebblestore: no such dataset version")
	// ErrNotReady is returned by Activate for a version that is being built
	// or dropped.
	ErrNotReady = errors.New("pebblestore: dataset version is not complete")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("pebblestore: closed")
	// ErrExists is returned by BeginVersion for a version the store has.
	ErrExists = errors.New("pebblestore: version exists")
	// ErrLocked is returned by Open when another process uses the
	// directory.
	ErrLocked = errors.New("pebblestore: the data directory is in use by another promo process")
	// ErrDiskFull is returned by Open when the data directory's file
	// system has too little free space for Pebble to open.
	ErrDiskFull = errors.New("pebblestore: not enough free disk space")
	// ErrHeld is returned, wrapped with the reason, by Commit for a version
	// the activation guard held (Config.MinRowsRatio): the version is
	// complete and kept, but the current one keeps serving until
	// Activate.
	ErrHeld = errors.New("pebblestore: dataset version held by the activation guard")
)

// Config configures a Store. The zero value of a field selects its default.
type Config struct {
	// Dir holds the Pebble database and the temporary files of imports. It
	// is created if missing.
	Dir string
	// KeepVersions is how many complete versions are kept, the current one
	// included, so that an operator can roll back (default 2).
	KeepVersions int
	// MemoryBudget bounds the memory that an import uses to hold rows
	// before it spills them to disk (default 256 MiB).
	MemoryBudget int64
	// CacheSize is the size of Pebble's block cache (default 128 MiB).
	CacheSize int64
	// Workers is how many goroutines sort and write SSTables when a batch
	// commits (default GOMAXPROCS).
	Workers int
	// BlockSize is the target size of SSTable data blocks (default 4 KiB).
	BlockSize int
	// BloomBitsPerKey adds a bloom filter to every SSTable when positive.
	// It is off by default: every version lives in the bottom level, whose
	// filters Pebble's Get never reads, so they would only cost import
	// time and space.
	BloomBitsPerKey int
	// MinRowsRatio is the activation guard: a version committed with
	// fewer rows than MinRowsRatio times the current version's is kept but
	// not activated (Commit fails with ErrHeld), so that a truncated file
	// never replaces a good dataset by accident; Activate serves it on
	// purpose. Zero, unlike the other fields, turns the guard off (read
	// nodes prepare versions and never commit them active).
	MinRowsRatio float64
	// Logger receives operational messages (default slog.Default()).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults for a store in dir.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:          dir,
		KeepVersions: 2,
		MemoryBudget: 256 << 20,
		CacheSize:    128 << 20,
		Workers:      runtime.GOMAXPROCS(0),
		BlockSize:    4 << 10,
		Logger:       slog.Default(),
	}
}

func (c *Config) fillDefaults() {
	d := DefaultConfig(c.Dir)
	if c.KeepVersions == 0 {
		c.KeepVersions = d.KeepVersions
	}
	if c.MemoryBudget == 0 {
		c.MemoryBudget = d.MemoryBudget
	}
	if c.CacheSize == 0 {
		c.CacheSize = d.CacheSize
	}
	if c.Workers == 0 {
		c.Workers = d.Workers
	}
	if c.BlockSize == 0 {
		c.BlockSize = d.BlockSize
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
}

// Validate reports the first invalid field of c.
func (c *Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("pebblestore: Dir is required")
	case c.KeepVersions < 1:
		return fmt.Errorf("pebblestore: KeepVersions must be at least 1, got %d", c.KeepVersions)
	case c.MemoryBudget < 8<<20:
		return fmt.Errorf("pebblestore: MemoryBudget must be at least 8 MiB, got %d bytes", c.MemoryBudget)
	case c.CacheSize < 0:
		return fmt.Errorf("pebblestore: CacheSize must not be negative, got %d", c.CacheSize)
	case c.Workers < 1:
		return fmt.Errorf("pebblestore: Workers must be at least 1, got %d", c.Workers)
	case c.MinRowsRatio < 0:
		return fmt.Errorf("pebblestore: MinRowsRatio must not be negative, got %g", c.MinRowsRatio)
	case c.BlockSize < 256:
		return fmt.Errorf("pebblestore: BlockSize must be at least 256 bytes, got %d", c.BlockSize)
	}
	return nil
}

// State is the life-cycle state of a dataset version.
type State string

// States of a version. Only StateBuilding, StateReady and StateDropping are
// stored; StateActive is StateReady for the current version, and
// StateHeld is StateReady for a version the activation guard held and
// that has never been activated.
const (
	StateBuilding State = "building"
	StateReady    State = "ready"
	StateActive   State = "active"
	StateHeld     State = "held"
	StateDropping State = "dropping"
)

// VersionInfo describes one dataset version.
type VersionInfo struct {
	Version     uint64     `json:"version"`
	State       State      `json:"state"`
	Rows        int64      `json:"rows"`
	Duplicates  int64      `json:"duplicates"`
	Source      string     `json:"source,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	CommittedAt *time.Time `json:"committed_at,omitempty"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
	// Epoch is the activation epoch of the version's latest activation:
	// every activation raises the store's epoch (see Store.Activate).
	Epoch uint64 `json:"epoch,omitempty"`
	// HeldReason says why the activation guard held the version at its
	// commit; it stays after an explicit activation, as history.
	HeldReason string `json:"held_reason,omitempty"`
}

// listed returns the state of vi as listed, for current version cur.
func (vi *VersionInfo) listed(cur uint64) State {
	switch {
	case vi.Version == cur:
		return StateActive
	case vi.State == StateReady && vi.HeldReason != "" && vi.ActivatedAt == nil:
		return StateHeld
	}
	return vi.State
}

// Store is a versioned promotion store. It is safe for concurrent use.
type Store struct {
	cfg    Config
	log    *slog.Logger
	db     *pebble.DB
	opts   *pebble.Options
	cache  interface{ Unref() }
	tmpDir string
	lock   *os.File // flock on Dir, held while open
	// tablesDir holds the links of the fast read path (fastread.go).
	tablesDir string

	// dbMu is held for reading by long operations on the database that
	// run without mu (ingest, excise), and for writing by Close.
	dbMu    sync.RWMutex
	closing atomic.Bool // Acquire returns nil once set

	mu       sync.Mutex // serializes metadata changes
	versions map[uint64]*VersionInfo
	pins     map[uint64]*pin // every version that has served since Open
	building bool
	closed   bool
	epoch    uint64          // of the latest activation
	pending  map[uint64]bool // versions to be activated soon: retention keeps them
	fast     map[uint64]*fastVersion
	// freeTimer returns the last batch's memory to the operating
	// system unless another batch begins first (batch.go, release).
	freeTimer *time.Timer
	spare     []*block // the last batch's row blocks, for the next one

	current atomic.Pointer[View]
	keys    sync.Pool // *[keyLen]byte

	retainCh chan struct{}
	stop     chan struct{}
	done     chan struct{}
}

// Open opens or creates the store in cfg.Dir, removes what a crashed import
// or drop left behind, and starts serving the current version, if any. It
// fails with ErrDiskFull when the disk has no room for Pebble to open, and
// returns when ctx ends even while Pebble is still opening (see
// openPebble).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.fillDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := context.Cause(ctx); err != nil {
		return nil, fmt.Errorf("cannot open the store in %s: %w", cfg.Dir, err)
	}
	s := &Store{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "store"),
		tmpDir:    filepath.Join(cfg.Dir, "tmp"),
		tablesDir: filepath.Join(cfg.Dir, "tables"),
		versions:  make(map[uint64]*VersionInfo),
		fast:      make(map[uint64]*fastVersion),
		pins:      make(map[uint64]*pin),
		retainCh:  make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	s.keys.New = func() any { return new([keyLen]byte) }
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create data directory: %w", err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	if err := os.RemoveAll(s.tmpDir); err != nil {
		return nil, fmt.Errorf("cannot remove leftover import files: %w", err)
	}
	if err := checkFreeSpace(cfg.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.tmpDir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create data directory: %w", err)
	}
	cache := pebble.NewCache(cfg.CacheSize)
	s.cache = cache
	opts := &pebble.Options{
		Cache:              cache,
		FormatMajorVersion: pebble.FormatNewest,
		// Only metadata is written through the memtable.
		MemTableSize: 4 << 20,
		Logger:       newPebbleLogger(s.log),
	}
	for i := range opts.Levels {
		l := &opts.Levels[i]
		l.BlockSize = cfg.BlockSize
		if cfg.BloomBitsPerKey > 0 {
			l.FilterPolicy = bloom.FilterPolicy(cfg.BloomBitsPerKey)
			l.FilterType = pebble.TableFilter
		}
		l.Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
	}
	opts.EnsureDefaults()
	db, err := openPebble(ctx, filepath.Join(cfg.Dir, "pebble"), opts)
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("cannot open pebble in %s: %w", cfg.Dir, err)
	}
	s.db = db
	s.opts = opts
	if err := s.recover(ctx); err != nil {
		_ = db.Close()
		cache.Unref()
		return nil, err
	}
	go s.retainLoop()
	s.triggerRetain()
	ok = true
	return s, nil
}

// recover loads the metadata, removes versions a crash left half-built or
// half-dropped, and installs the current version.
func (s *Store) recover(ctx context.Context) error {
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: metaVersions,
		UpperBound: append(slices.Clone(metaVersions[:len(metaVersions)-1]), 1),
	})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		var vi VersionInfo
		if err := json.Unmarshal(it.Value(), &vi); err != nil {
			_ = it.Close()
			return fmt.Errorf("cannot decode metadata of %q: %w", it.Key(), err)
		}
		s.versions[vi.Version] = &vi
	}
	if err := it.Close(); err != nil {
		return err
	}
	for v, vi := range s.versions {
		if vi.State == StateBuilding || vi.State == StateDropping {
			s.log.Info("removing incomplete dataset version left by a previous run", "version", v, "state", vi.State)
			if err := s.dropData(ctx, v, vi.State == StateBuilding); err != nil {
				return err
			}
			delete(s.versions, v)
		}
	}
	if err := s.recoverFast(); err != nil {
		return err
	}
	cur, err := s.readUint64(metaCurrent)
	if err != nil {
		return err
	}
	if s.epoch, err = s.readUint64(metaEpoch); err != nil {
		return err
	}
	if cur != 0 {
		if vi, ok := s.versions[cur]; ok && vi.State == StateReady {
			// A store written before epochs existed: its current
			// version is the first activation.
			s.epoch = max(s.epoch, 1)
			s.install(cur, s.epoch)
		} else {
			return fmt.Errorf("pebblestore: current version %d has no complete data (metadata is inconsistent)", cur)
		}
	}
	return nil
}

func (s *Store) readUint64(key []byte) (uint64, error) {
	val, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(val) != 8 {
		return 0, fmt.Errorf("pebblestore: malformed metadata %q", key)
	}
	return binary.BigEndian.Uint64(val), nil
}

// dropData removes every row of version v and its metadata. For a version
// that never became complete (unbuilt), it also gives the number back when
// it is the newest, so that successful imports number their versions
// without gaps; a number that ever served is never reused.
func (s *Store) dropData(ctx context.Context, v uint64, unbuilt bool) error {
	start, end := versionSpan(v)
	if err := s.db.Excise(ctx, pebble.KeyRange{Start: start, End: end}); err != nil {
		return fmt.Errorf("cannot remove the rows of version %d: %w", v, err)
	}
	if err := s.dropFast(v); err != nil {
		return fmt.Errorf("cannot remove the tables of version %d: %w", v, err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Delete(versionMetaKey(v), nil); err != nil {
		return err
	}
	if unbuilt {
		next, err := s.readUint64(metaNext)
		if err != nil {
			return err
		}
		if next == v+1 {
			if err := b.Set(metaNext, binary.BigEndian.AppendUint64(nil, v), nil); err != nil {
				return err
			}
		}
	}
	if err := b.Commit(syncWrite); err != nil {
		return fmt.Errorf("cannot remove the metadata of version %d: %w", v, err)
	}
	return nil
}

// putVersions persists the metadata of vis, and the current version and
// its epoch when current is not 0, in one synced batch.
func (s *Store) putVersions(current, epoch uint64, vis ...*VersionInfo) error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := s.putVersionsIn(b, vis...); err != nil {
		return err
	}
	if current != 0 {
		if err := b.Set(metaCurrent, binary.BigEndian.AppendUint64(nil, current), nil); err != nil {
			return err
		}
		if err := b.Set(metaEpoch, binary.BigEndian.AppendUint64(nil, epoch), nil); err != nil {
			return err
		}
	}
	return b.Commit(syncWrite)
}

// syncWrite makes a metadata write durable before it returns.
var syncWrite = pebble.Sync

func (s *Store) putVersionsIn(b *pebble.Batch, vis ...*VersionInfo) error {
	for _, vi := range vis {
		val, err := json.Marshal(vi)
		if err != nil {
			return err
		}
		if err := b.Set(versionMetaKey(vi.Version), val, nil); err != nil {
			return err
		}
	}
	return nil
}

// install makes v, activated at epoch, the version that Acquire returns.
// s.mu must be held or the store not yet shared.
func (s *Store) install(v, epoch uint64) {
	p := s.pins[v]
	if p == nil {
		p = new(pin)
		s.pins[v] = p
	}
	// A View per activation: the epoch it answers with is the one it was
	// activated at. Views of one version share its pin.
	view := &View{store: s, pin: p, fast: s.fast[v], version: v, epoch: epoch, prefix: versionPrefix(v),
		text: appendUint64(nil, v), epochText: appendUint64(nil, epoch)}
	upper := versionPrefix(v + 1)
	view.iterOpts = pebble.IterOptions{LowerBound: view.prefix[:], UpperBound: upper[:]}
	s.current.Store(view)
	s.epoch = epoch
}

// Acquire returns the View of the current version, or nil when no version
// has been activated yet. The caller must Release it, promptly: a version
// that is no longer kept is removed only once its last View is released.
func (s *Store) Acquire() *View {
	if s.closing.Load() {
		return nil
	}
	for {
		v := s.current.Load()
		if v == nil {
			return nil
		}
		v.pin.refs.Add(1)
		if !v.pin.retired.Load() {
			return v
		}
		// Lost a race with a drop of a version that was current an
		// instant ago; the current pointer has moved on.
		v.pin.refs.Add(-1)
	}
}

// View is a pinned dataset version. Its methods are safe for concurrent use
// until Release.
type View struct {
	store     *Store
	pin       *pin
	fast      *fastVersion // nil: read through Pebble
	version   uint64
	epoch     uint64
	prefix    [prefixLen]byte
	text      []byte
	epochText []byte
	// iterOpts bound an iterator to the version (GetSorted).
	iterOpts pebble.IterOptions
}

// pin counts the Views of one version in use; a version is removed once
// it is retired and no View of it is.
type pin struct {
	refs    atomic.Int64
	retired atomic.Bool
	// iterOpts bound an iterator to the version (GetSorted).
	iterOpts pebble.IterOptions
}

// Version returns the dataset version of v.
func (v *View) Version() uint64 { return v.version }

// Epoch returns the activation epoch at which v's version became current.
func (v *View) Epoch() uint64 { return v.epoch }

// EpochText returns the epoch in decimal. The caller must not modify the
// returned slice; it stays valid for the life of the store.
func (v *View) EpochText() []byte { return v.epochText }

// VersionText returns the version in decimal. The caller must not modify
// the returned slice; it stays valid for the life of the store.
func (v *View) VersionText() []byte { return v.text }

// Get looks id up in the version and fills r. It reports false when the
// version has no such ID. It does not allocate. It reads the version's
// own tables when it can (fastread.go), else through Pebble.
func (v *View) Get(id promotion.ID, r *promotion.Record) (bool, error) {
	if v.fast != nil {
		if found, ok, err := v.getFast(id, r); ok {
			return found, err
		}
	}
	return v.getPebble(id, r)
}

// getFast is Get through the fast path; ok is false when the version has
// none. A fault reading the mapping (SIGBUS: an I/O error of the disk
// under a mapped page, or a table file cut short under it) fails this
// lookup, as pread's EIO fails a Get through Pebble, instead of killing
// the process.
func (v *View) getFast(id promotion.ID, r *promotion.Record) (found, ok bool, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			f, isFault := p.(interface{ Addr() uintptr })
			if !isFault {
				panic(p)
			}
			found, ok, err = false, true, fmt.Errorf("cannot read promotion: fault reading a mapped table at %#x: %v", f.Addr(), p)
		}
	}()
	var k [keyLen]byte
	copy(k[:prefixLen], v.prefix[:])
	copy(k[prefixLen:], id[:])
	val, found, ok, err := v.fast.get(k[:])
	if ok {
		found, err = decodeFound(id, val, found, err, r)
	}
	return found, ok, err
}

// getPebble is Get through Pebble's DB.Get.
func (v *View) getPebble(id promotion.ID, r *promotion.Record) (bool, error) {
	s := v.store
	k := s.keys.Get().(*[keyLen]byte)
	copy(k[:prefixLen], v.prefix[:])
	copy(k[prefixLen:], id[:])
	val, closer, err := s.db.Get(k[:])
	s.keys.Put(k)
	if err != nil {
		if errors.Is(err, pebble.ErrNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("cannot read promotion: %w", err)
	}
	err = promotion.DecodeValue(val, r)
	closer.Close()
	if err != nil {
		return false, err
	}
	r.ID = id
	return true, nil
}

// decodeFound fills r from val, the value of id that a lookup found.
func decodeFound(id promotion.ID, val []byte, found bool, err error, r *promotion.Record) (bool, error) {
	if err != nil {
		return false, fmt.Errorf("cannot read promotion: %w", err)
	}
	if !found {
		return false, nil
	}
	if err := promotion.DecodeValue(val, r); err != nil {
		return false, err
	}
	r.ID = id
	return true, nil
}

// GetSorted looks ids up, which must be in ascending order (duplicates
// allowed), with one iterator over the version: a batch saves the setup of
// a read per id. It fills recs[i] and found[i] for ids[i]; recs and found
// must be at least as long as ids. It allocates once per call, not per id.
func (v *View) GetSorted(ids []promotion.ID, recs []promotion.Record, found []bool) error {
	if v.fast != nil && v.fast.runs.Load() != nil {
		// Each id costs a fast lookup, cheaper than an iterator's seek.
		for i, id := range ids {
			var err error
			if found[i], err = v.Get(id, &recs[i]); err != nil {
				return err
			}
		}
		return nil
	}
	it, err := v.store.db.NewIter(&v.iterOpts)
	if err != nil {
		return fmt.Errorf("cannot read promotions: %w", err)
	}
	k := v.store.keys.Get().(*[keyLen]byte) // a local array would escape to the iterator
	defer v.store.keys.Put(k)
	copy(k[:prefixLen], v.prefix[:])
	for i, id := range ids {
		copy(k[prefixLen:], id[:])
		found[i] = false
		if !it.SeekGE(k[:]) || !bytes.Equal(it.Key(), k[:]) {
			continue
		}
		val, err := it.ValueAndErr()
		if err == nil {
			err = promotion.DecodeValue(val, &recs[i])
		}
		if err != nil {
			it.Close()
			return fmt.Errorf("cannot read promotion: %w", err)
		}
		recs[i].ID = id
		found[i] = true
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("cannot read promotions: %w", err)
	}
	return nil
}

// Release unpins the version. v must not be used afterwards.
func (v *View) Release() { v.pin.refs.Add(-1) }

// Current describes the version that serves, and reports false when there
// is none yet.
func (s *Store) Current() (VersionInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.current.Load()
	if cur == nil {
		return VersionInfo{}, false
	}
	vi := *s.versions[cur.version]
	vi.State = StateActive
	vi.Epoch = cur.epoch
	return vi, true
}

// Epoch returns the store's activation epoch: how many activations it has
// made (or, on a read node, the cluster's epoch of the latest one).
func (s *Store) Epoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// Versions lists every kept version, newest first, including one being
// built.
func (s *Store) Versions() []VersionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cur uint64
	if v := s.current.Load(); v != nil {
		cur = v.version
	}
	out := make([]VersionInfo, 0, len(s.versions))
	for _, vi := range s.versions {
		c := *vi
		c.State = c.listed(cur)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b VersionInfo) int { return -cmpUint64(a.Version, b.Version) })
	return out
}

// Activate makes a kept, complete version the current one, durably, at
// the next activation epoch. It is how an operator rolls back, or serves
// a version the activation guard held.
func (s *Store) Activate(version uint64) (VersionInfo, error) {
	return s.ActivateEpoch(version, 0)
}

// ActivateEpoch is Activate at a given epoch, the cluster's, for a read
// node; epoch 0 is the store's next one. Activating the current version at
// its own epoch changes nothing.
func (s *Store) ActivateEpoch(version, epoch uint64) (VersionInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return VersionInfo{}, ErrClosed
	}
	vi, ok := s.versions[version]
	if !ok {
		return VersionInfo{}, fmt.Errorf("%w: %d", ErrUnknownVersion, version)
	}
	if vi.State != StateReady {
		return VersionInfo{}, fmt.Errorf("%w: version %d is %s", ErrNotReady, version, vi.State)
	}
	if epoch == 0 {
		epoch = s.epoch + 1
	}
	if cur := s.current.Load(); cur != nil && cur.version == version && cur.epoch == epoch {
		out := *vi
		out.State = StateActive
		return out, nil
	}
	next := *vi
	now := time.Now().UTC()
	next.ActivatedAt = &now
	next.Epoch = epoch
	if err := s.putVersions(version, epoch, &next); err != nil {
		return VersionInfo{}, fmt.Errorf("cannot activate version %d: %w", version, err)
	}
	*vi = next
	s.install(version, epoch)
	s.triggerRetain()
	s.log.Info("activated dataset version", "version", version, "epoch", epoch, "rows", vi.Rows)
	out := *vi
	out.State = StateActive
	return out, nil
}

// SetPending names the versions about to be activated (a read node's
// cluster target): retention keeps them beyond KeepVersions, so that a
// version pulled again for a rollback is not dropped before it serves.
func (s *Store) SetPending(versions ...uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := len(versions) != len(s.pending)
	for _, v := range versions {
		changed = changed || !s.pending[v]
	}
	if !changed {
		return
	}
	s.pending = make(map[uint64]bool, len(versions))
	for _, v := range versions {
		s.pending[v] = true
	}
	// A version no longer pending may be one too many now.
	s.triggerRetain()
}

func (s *Store) triggerRetain() {
	select {
	case s.retainCh <- struct{}{}:
	default:
	}
}

func (s *Store) retainLoop() {
	defer close(s.done)
	for {
		select {
		case <-s.stop:
			return
		case <-s.retainCh:
			if err := s.retain(); err != nil {
				s.log.Error("cannot drop old dataset versions", "err", err)
			}
		}
	}
}

// retain drops the complete versions beyond KeepVersions: the current one
// is always kept, then the most recently activated ones.
func (s *Store) retain() error {
	s.mu.Lock()
	var cur uint64
	if v := s.current.Load(); v != nil {
		cur = v.version
	}
	var ready []*VersionInfo
	for _, vi := range s.versions {
		// A prepared version newer than the current one waits for its
		// activation: it is not an old version. Neither is one about to
		// be activated (SetPending).
		if vi.State == StateReady && (vi.Version == cur || !(vi.ActivatedAt == nil && vi.Version > cur) && !s.pending[vi.Version]) {
			ready = append(ready, vi)
		}
	}
	slices.SortFunc(ready, func(a, b *VersionInfo) int {
		switch {
		case a.Version == cur:
			return -1
		case b.Version == cur:
			return 1
		}
		if c := cmpTime(b.ActivatedAt, a.ActivatedAt); c != 0 {
			return c
		}
		return -cmpUint64(a.Version, b.Version)
	})
	if len(ready) <= s.cfg.KeepVersions {
		s.mu.Unlock()
		return nil
	}
	var drop []*VersionInfo
	for _, vi := range ready[s.cfg.KeepVersions:] {
		c := *vi
		c.State = StateDropping
		drop = append(drop, &c)
	}
	if err := s.putVersions(0, 0, drop...); err != nil {
		s.mu.Unlock()
		return err
	}
	pins := make([]*pin, len(drop))
	for i, vi := range drop {
		*s.versions[vi.Version] = *vi
		pins[i] = s.pins[vi.Version]
	}
	s.mu.Unlock()

	for i, vi := range drop {
		if v := pins[i]; v != nil {
			v.retired.Store(true)
			for v.refs.Load() != 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if err := s.dropData(context.Background(), vi.Version, false); err != nil {
			return err
		}
		s.mu.Lock()
		delete(s.versions, vi.Version)
		delete(s.pins, vi.Version)
		s.mu.Unlock()
		s.log.Info("dropped dataset version", "version", vi.Version, "rows", vi.Rows)
	}
	return nil
}

// useDB runs fn, an operation on the database that does not hold mu,
// unless the store is closed.
func (s *Store) useDB(fn func() error) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.closing.Load() {
		return ErrClosed
	}
	return fn()
}

// Close stops background work and closes the database. It waits for a
// database operation of a batch in progress and, for up to five seconds,
// for Views to be released; from its start, Acquire returns nil and batches
// fail with ErrClosed. A batch that could not finish is removed by the
// next Open.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.stopFree()
	s.spare = nil
	pins := make([]*pin, 0, len(s.pins))
	for _, v := range s.pins {
		pins = append(pins, v)
	}
	s.mu.Unlock()
	s.closing.Store(true)
	close(s.stop)
	<-s.done
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for _, v := range pins {
		for v.refs.Load() != 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	err := s.db.Close()
	s.closeFast()
	s.cache.Unref()
	s.lock.Close()
	return err
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// cmpTime orders nil before every time.
func cmpTime(a, b *time.Time) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	return a.Compare(*b)
}
