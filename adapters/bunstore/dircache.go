package bunstore

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"slices"
	"sync"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

// The directory cache: what the store has seen to hold in the directory
// (a user exists; a room exists; a pair's one-on-one room exists with
// both as members), so that MissingUsers, MissingRooms and DirectRooms
// do not look it up again. The send-time check of
// receivers and rooms costs the database about as much as writing the
// messages does (three index probes a recipient), and a platform's
// batches go to the same users again and again; the receivers of a
// request have also just been looked up by MissingUsers when it was
// accepted.
//
// Facts can only be made false by removing rows (a user, a room, a
// membership) or changing their keys, never by adding rows. Triggers on
// the three directory tables (schema version 11) count such changes per
// application in <prefix>directory_epochs, whatever makes them: this
// store's DeleteUser, DeleteRoom and AddRoom, or the host's own SQL. A
// fact is remembered with the count it was learned under and believed
// only while the count is the same, so it is as current as a look-up
// would be: the count is read before the look-up (an older count at
// worst makes the fact expire early), and a removal committed after the
// count was read bumps it past the fact's. The one window a look-up has
// too — a removal committed between the check and the message's write —
// is the same either way. The count only grows, so a database restored
// from a backup behind a running process can reach a count again with
// other rows: restart the processes (or call ForgetDirectory) after a
// restore.
//
// On MySQL/MariaDB the triggers are per row (schema version 12) and the
// server may refuse them (CREATE TRIGGER needs SUPER where binary logging
// is on): the cache is on only where all of them exist
// (CachesDirectory). A BookkeepingOnly store has no directory tables and
// so no cache either.
type dirCache struct {
	seed1, seed2 maphash.Seed
	size         int // slots, a power of two

	mu    sync.Mutex
	slots []dirKey // nil until the first fact; the zero key is an empty slot
}

// dirKey is a 128-bit hash of a fact and the count it holds under, with
// a per-process random seed: a false match would need two 64-bit
// collisions at once.
type dirKey [2]uint64

// DefaultDirectoryCache is Options.DirectoryCache's default: 524,288
// facts, 8 MiB — a campaign to 100,000 receivers (their users and pairs)
// fits with 0.2 % of its facts pushed out.
const DefaultDirectoryCache = 1 << 19

// newDirCache returns a cache of at least n slots (n > 0). The slots are
// a fixed array, 16 bytes each, allocated on the first fact: the memory
// is known in advance, never grows with the directory, and holds no
// pointers for the garbage collector to scan. Each key may sit in any of
// the eight slots of its set (128 bytes, two cache lines); a new fact
// pushes out the set's least recently used one.
//
// Eight ways, not two: at the default size the 200,000 facts of a
// campaign to 100,000 receivers fill 38 % of the slots, and with sets of
// two slots 6.8 % of them were pushed out by facts that landed in a full
// set (four: 1.7 %; eight: 0.2 %, TestDirCacheLoad). A pushed-out fact
// costs a look-up, and the sender's, until DirectRooms learns it again,
// the read-only probe of every chunk it sends (docs/benchmarks.md).
func newDirCache(n int) *dirCache {
	size := dirWays
	for size < n {
		size <<= 1
	}
	return &dirCache{seed1: maphash.MakeSeed(), seed2: maphash.MakeSeed(), size: size}
}

// Kinds of fact.
const (
	factUser = 'u' // parts: app, user
	factRoom = 'r' // parts: app, room
	factPair = 'p' // parts: app, a, b (a is the sender)
)

// dirWays is how many slots a set has.
const dirWays = 8

// has reports for each key whether the fact is known, under one lock; a
// fact found moves to the front of its set.
func (c *dirCache) has(keys []dirKey) []bool {
	out := make([]bool, len(keys))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slots == nil {
		return out
	}
	for i, k := range keys {
		if k == (dirKey{}) {
			continue // the empty slot's value: never a fact
		}
		set := c.set(k)
		if j := slices.Index(set, k); j >= 0 {
			toFront(set, j)
			out[i] = true
		}
	}
	return out
}

// toFront moves set[j] to the front, the ones before it one slot back.
func toFront(set []dirKey, j int) {
	k := set[j]
	copy(set[1:j+1], set[:j])
	set[0] = k
}

func (c *dirCache) add(keys ...dirKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slots == nil {
		c.slots = make([]dirKey, c.size)
	}
	for _, k := range keys {
		if k == (dirKey{}) {
			continue // the empty slot's value: never stored
		}
		set := c.set(k)
		j := slices.Index(set, k)
		if j < 0 {
			j = len(set) - 1 // the least recently used fact goes
		}
		set[j] = k
		toFront(set, j)
	}
}

// set is k's slots.
func (c *dirCache) set(k dirKey) []dirKey {
	i := int(k[0]&uint64(c.size-1)) &^ (dirWays - 1)
	return c.slots[i : i+dirWays : i+dirWays]
}

func (c *dirCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.slots)
}

// dirView is the cache as of one reading of an application's count.
type dirView struct {
	c     *dirCache
	app   string
	epoch int64
}

// directoryView reads app's count of directory changes; it returns nil
// (every method a no-op) when the store has no cache.
func (s *Store) directoryView(ctx context.Context, app string) (*dirView, error) {
	if on, err := s.CachesDirectory(ctx); !on || err != nil {
		return nil, err
	}
	var epoch int64
	// The '' row counts TRUNCATEs (PostgreSQL), which change every app.
	if err := s.db.QueryRowContext(ctx, "SELECT CAST(COALESCE(SUM(epoch), 0) AS "+types[s.kind].int64Cast+") FROM "+s.epochs+" WHERE app_id IN (?, '')", app).Scan(&epoch); err != nil {
		return nil, err
	}
	return &dirView{c: s.dir, app: app, epoch: epoch}, nil
}

// keys returns the keys of the facts of kind about each of ids (for
// factPair, about the pair of a and each ID), hashed outside the lock.
func (v *dirView) keys(kind byte, a string, ids []string) []dirKey {
	out := make([]dirKey, len(ids))
	buf := make([]byte, 0, 128)
	for i, id := range ids {
		// IDs hold no NUL byte (unstorable), so NUL separates them
		// unambiguously.
		buf = append(binary.LittleEndian.AppendUint64(append(buf[:0], kind), uint64(v.epoch)), v.app...)
		if kind == factPair {
			buf = append(append(buf, 0), a...)
		}
		buf = append(append(buf, 0), id...)
		out[i] = dirKey{maphash.Bytes(v.c.seed1, buf), maphash.Bytes(v.c.seed2, buf)}
	}
	return out
}

// has reports for each of ids whether the fact of kind is known (see
// keys); all false without a cache.
func (v *dirView) has(kind byte, a string, ids []string) []bool {
	if v == nil {
		return make([]bool, len(ids))
	}
	return v.c.has(v.keys(kind, a, ids))
}

// add records the facts of kind about ids (see keys).
func (v *dirView) add(kind byte, a string, ids []string) {
	if v == nil || len(ids) == 0 {
		return
	}
	v.c.add(v.keys(kind, a, ids)...)
}

// ForgetDirectory drops every fact the store remembers about users and
// one-on-one rooms (Options.DirectoryCache), so that the next sends look
// them up again, as the first ones after a restart do. The cache follows
// every change to the directory by itself; this is for benchmarks and
// tests that measure a cold start.
func (s *Store) ForgetDirectory() {
	if s.dir != nil {
		s.dir.reset()
	}
}

// cachesDirectory reports whether a store of this kind may keep the cache
// (on MySQL/MariaDB, only where its triggers exist: CachesDirectory).
func (s *Store) cachesDirectory() bool {
	return !s.bookkeepingOnly
}

// CachesDirectory reports whether the store keeps the directory cache
// (Options.DirectoryCache): false in a BookkeepingOnly store, with a
// negative DirectoryCache, and on MySQL/MariaDB where the server refused
// the triggers of schema version 12 (see Migrate). On MySQL it looks the
// triggers up once per process, and again after each Migrate; every
// trigger must exist for the cache to be on.
func (s *Store) CachesDirectory(ctx context.Context) (bool, error) {
	if s.dir == nil {
		return false, nil
	}
	if s.kind != dialect.MySQL {
		return true, nil
	}
	switch s.mysqlTriggers.Load() {
	case triggersFound:
		return true, nil
	case triggersMissing:
		return false, nil
	}
	var names []any
	for _, t := range s.directoryTables() {
		names = append(names, t.name+"_deleted", t.name+"_updated")
	}
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME IN (?)", bun.List(names)).Scan(&n); err != nil {
		return false, s.fail(ctx, "look up the directory triggers", err)
	}
	state := triggersMissing
	if n == len(names) {
		state = triggersFound
	}
	s.mysqlTriggers.Store(state)
	return state == triggersFound, nil
}

// The states of Store.mysqlTriggers.
const (
	triggersUnknown int32 = iota // not looked up since New or the last Migrate
	triggersFound
	triggersMissing
)
