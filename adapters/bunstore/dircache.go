package bunstore

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"sync"

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
// MySQL/MariaDB has no cache: CREATE TRIGGER there needs the SUPER
// privilege when binary logging is on (as on most managed servers), and
// its cascaded deletes fire no triggers. A BookkeepingOnly store has no
// directory tables and so no cache either.
type dirCache struct {
	max          int // facts per generation
	seed1, seed2 maphash.Seed

	mu       sync.Mutex
	cur, old map[dirKey]struct{}
}

// dirKey is a 128-bit hash of a fact and the count it holds under, with
// a per-process random seed: a false match would need two 64-bit
// collisions at once.
type dirKey [2]uint64

// DefaultDirectoryCache is Options.DirectoryCache's default: facts per
// generation (two generations are kept), about 20 MB at most.
const DefaultDirectoryCache = 500_000

func newDirCache(max int) *dirCache {
	return &dirCache{max: max, seed1: maphash.MakeSeed(), seed2: maphash.MakeSeed(), cur: map[dirKey]struct{}{}}
}

// Kinds of fact.
const (
	factUser = 'u' // parts: app, user
	factRoom = 'r' // parts: app, room
	factPair = 'p' // parts: app, a, b (a is the sender)
)

// has reports for each key whether the fact is known, under one lock; a
// fact of the older generation moves to the current one.
func (c *dirCache) has(keys []dirKey) []bool {
	out := make([]bool, len(keys))
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, k := range keys {
		if _, ok := c.cur[k]; ok {
			out[i] = true
		} else if _, ok := c.old[k]; ok {
			c.addLocked(k)
			out[i] = true
		}
	}
	return out
}

func (c *dirCache) add(keys ...dirKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		c.addLocked(k)
	}
}

func (c *dirCache) addLocked(k dirKey) {
	if len(c.cur) >= c.max {
		c.old, c.cur = c.cur, make(map[dirKey]struct{}, len(c.cur))
	}
	c.cur[k] = struct{}{}
}

func (c *dirCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur, c.old = map[dirKey]struct{}{}, nil
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
	if s.dir == nil {
		return nil, nil
	}
	var epoch int64
	// The '' row counts TRUNCATEs (PostgreSQL), which change every app.
	if err := s.db.QueryRowContext(ctx, "SELECT CAST(COALESCE(SUM(epoch), 0) AS BIGINT) FROM "+s.epochs+" WHERE app_id IN (?, '')", app).Scan(&epoch); err != nil {
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

// cachesDirectory reports whether a store of this kind keeps the cache.
func (s *Store) cachesDirectory() bool {
	return !s.bookkeepingOnly && s.kind != dialect.MySQL
}
