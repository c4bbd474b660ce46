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
// both as members),
// so that DirectRooms does not look it up again. The send-time check of
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
// is the same either way.
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

func (c *dirCache) key(kind byte, epoch int64, parts ...string) dirKey {
	var e [9]byte
	e[0] = kind
	binary.LittleEndian.PutUint64(e[1:], uint64(epoch))
	var k dirKey
	for i, seed := range []maphash.Seed{c.seed1, c.seed2} {
		var h maphash.Hash
		h.SetSeed(seed)
		h.Write(e[:])
		for _, p := range parts {
			// IDs hold no NUL byte (unstorable), so NUL separates them
			// unambiguously.
			h.WriteString(p)
			h.WriteByte(0)
		}
		k[i] = h.Sum64()
	}
	return k
}

// has reports whether the fact is known; a fact of the older generation
// moves to the current one.
func (c *dirCache) has(k dirKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.cur[k]; ok {
		return true
	}
	if _, ok := c.old[k]; ok {
		c.addLocked(k)
		return true
	}
	return false
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

func (v *dirView) hasUser(u string) bool { return v.has(factUser, u) }

func (v *dirView) has(kind byte, ids ...string) bool {
	return v != nil && v.c.has(v.c.key(kind, v.epoch, append([]string{v.app}, ids...)...))
}

// addIDs records that each of ids (users or rooms, by kind) exists.
func (v *dirView) addIDs(kind byte, ids []string) {
	if v == nil || len(ids) == 0 {
		return
	}
	keys := make([]dirKey, len(ids))
	for i, id := range ids {
		keys[i] = v.c.key(kind, v.epoch, v.app, id)
	}
	v.c.add(keys...)
}

// addPairs records that a and each of bs are users, and that the pair's
// one-on-one room exists with both as members.
func (v *dirView) addPairs(a string, bs []string) {
	if v == nil || len(bs) == 0 {
		return
	}
	keys := make([]dirKey, 0, 2*len(bs)+1)
	keys = append(keys, v.c.key(factUser, v.epoch, v.app, a))
	for _, b := range bs {
		keys = append(keys, v.c.key(factPair, v.epoch, v.app, a, b), v.c.key(factUser, v.epoch, v.app, b))
	}
	v.c.add(keys...)
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
