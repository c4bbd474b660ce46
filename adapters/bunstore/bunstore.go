// Package bunstore is a [store.Store] on PostgreSQL, MySQL/MariaDB or SQLite
// through github.com/uptrace/bun: the adapter for anything that must survive
// a restart or be shared by several processes.
//
// The host owns the connection pool: it opens a *bun.DB (with the opener
// of its database — bunpostgres.Open, bunmysql.Open, bunsqlite.Open, or
// bunopen.Open for a DSN chosen at run time — or its own code), passes it
// to [New], calls [Store.Migrate] once at start-up, and
// closes the *bun.DB when it is done. A Store starts no goroutines, holds no
// connection of its own and has no Close method, so one pool can serve the
// host's own queries beside chatbatch's.
//
// All tables share a prefix ([Options.TablePrefix], "chatbatch_" by
// default), so several independent stores can live in one database. A host
// that already keeps users, rooms and messages in its own tables sets
// [Options.BookkeepingOnly]: then only the batch, chunk and idempotency-key
// tables are created and the Store is used as batch.Config.Batches only.
//
// Writes are bulk (multi-row INSERT statements of at most 500 rows and about
// 4 MB each) and every multi-statement write runs in one transaction, so a
// failed call leaves nothing half-written. A canceled context aborts a
// transaction up to its COMMIT but not the COMMIT itself, so that an error
// means the write did not happen (barring a connection lost mid-COMMIT).
// Methods never retry: the caller (package batch) does. The package links
// no database driver itself (it recognizes pgx and go-sql-driver/mysql by
// their types), so a program links only the driver it opens; and its tests
// on every database live in internal/alldb (its runnable examples in
// bunsqlite), so that `go mod tidy` in a program on one database does not
// fetch the others' drivers either.
//
// On PostgreSQL through pgx (what bunpostgres.Open uses) the worker's path is four
// statements per chunk, each with bind parameters and whole columns bound
// as arrays: start the chunk and read its batch, find the one-on-one rooms
// (a fifth creates those that are missing), save the messages (by COPY
// when bunpostgres is linked: see internal/pgcopy), record the outcomes
// and counters.
// Their look-ups probe primary keys once per ID, so they plan the same
// with or without table statistics (a fresh deployment that bulk-loaded
// its users before autovacuum analyzed them is as fast as an analyzed
// one); the store never runs ANALYZE itself. A chunk's recipients and
// outcomes are stored in a compact text form (see chunkcodec.go), not
// JSON.
//
// Elsewhere bun writes values into the SQL text rather than binding them,
// except for a full statement of a chunk's new messages: its 500 rows go
// to an INSERT that database/sql prepares once per connection, so that
// the database does not parse 6,000 literals per chunk. Strings with NUL
// bytes are refused either way (no text column can hold them), and that
// is why Migrate refuses a PostgreSQL session without
// standard_conforming_strings or a MySQL session with NO_BACKSLASH_ESCAPES:
// both would change how backslashes in the literals are read.
//
// SQLite writes one transaction at a time, and a writer that finds the
// lock taken sleeps and retries (busy_timeout) while writers arriving
// later may get it first: under the worker's steady chunks a POST could
// wait seconds for its CreateBatch. So on SQLite a Store lets the
// accept's writes (CreateBatch, ClaimIdempotencyKey) go first: while one
// is pending, the Store's other writes wait before they begin, in Go,
// for at most a second. This orders one Store's writers; other processes
// on the same file still meet SQLite's busy handler.
package bunstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/chatbatch/chatbatch/store"
)

var (
	_ store.Store              = (*Store)(nil)
	_ store.DirectRoomNamer    = (*Store)(nil)
	_ store.DirectRoomResolver = (*Store)(nil)
	_ store.MessageReader      = (*Store)(nil)
	_ store.MessageDeleter     = (*Store)(nil)
)

// DefaultTablePrefix is the table prefix used when Options.TablePrefix is "".
const DefaultTablePrefix = "chatbatch_"

// maxPrefixLen keeps the longest derived name (prefix +
// "idempotency_keys_expiry", or a table name plus PostgreSQL's automatic
// "_pkey" suffix) under the identifier limits
// of PostgreSQL (63 bytes) and MySQL (64 bytes).
const maxPrefixLen = 32

// ErrBookkeepingOnly is returned (wrapped) by the Directory, Messages and
// Inspector methods of a Store created with Options.BookkeepingOnly: their
// tables do not exist, because the host provides users, rooms and messages
// itself and passes its own Directory and Messages to batch.Config.
var ErrBookkeepingOnly = errors.New("bunstore: the store keeps batch bookkeeping only (Options.BookkeepingOnly); users, rooms and messages are provided by the host's own store.Directory and store.Messages")

// Options configures a Store. nil or the zero value selects the defaults.
type Options struct {
	// TablePrefix is prepended to every table and index name. It may hold
	// ASCII letters, digits and underscores only (it is written into SQL
	// as is) and at most 32 of them. Defaults to "chatbatch_".
	TablePrefix string

	// DirectRoomID names the one-on-one room of two users. It must be
	// symmetric in its arguments. Defaults to [store.DirectRoomID].
	DirectRoomID func(a, b string) string

	// BookkeepingOnly makes Migrate create only the batch, chunk and
	// idempotency-key tables, for hosts that keep users, rooms and
	// messages in their own tables:
	// the Directory and Messages methods (and the Inspector helpers) then
	// return an error wrapping ErrBookkeepingOnly, and the host passes its
	// own Directory and Messages to batch.Config beside this Store as
	// Batches. Defaults to false.
	BookkeepingOnly bool

	// DirectoryCache is how many facts about the directory (this user
	// exists; this pair's one-on-one room exists with both as members)
	// the store remembers, so that sends to receivers seen before do not
	// look them up again: a fixed array of 16 bytes a fact (rounded up to
	// a power of two), allocated on the first fact; newer facts push out
	// older ones. The cache follows every removal from the directory
	// tables, whoever makes it (see schema versions 11 and 12), so a send
	// never goes to a user or room removed before it was checked. On
	// MySQL/MariaDB only where the server allowed its triggers
	// (CachesDirectory). Negative: off. Defaults to DefaultDirectoryCache.
	DirectoryCache int
}

// Store is a store.Store on a SQL database. It is safe for concurrent use
// by several goroutines and several processes sharing one database. Create
// it with New.
type Store struct {
	db              *bun.DB
	kind            dialect.Name
	prefix          string
	directRoomID    func(a, b string) string
	bookkeepingOnly bool
	// pgx is set on PostgreSQL through pgx's database/sql driver: the
	// store then uses its own statements with bind parameters (pg.go).
	pgx bool
	pg  pgStatements
	// pairProbe decides when DirectRooms runs its read-only probe first
	// (pgSettlePairsWithRooms).
	pairProbe probeGate
	dir       *dirCache // nil: no directory cache
	// mysqlTriggers caches, on MySQL, whether the directory triggers
	// exist (triggersUnknown, triggersFound, triggersMissing).
	mysqlTriggers atomic.Int32

	// msgInsert is the prepared INSERT of a full statement of new
	// messages on SQLite and MySQL (preparedMessageInsert).
	msgInsert struct {
		mu   sync.Mutex
		stmt *sql.Stmt
	}

	// accepts, on SQLite, lets the accept's writes (CreateBatch,
	// ClaimIdempotencyKey) ahead of the others (acceptFirst); nil
	// elsewhere, where writers do not share one lock.
	accepts *acceptFirst

	// Table names, prefixed once here so that queries only concatenate.
	users, rooms, members, messages, batches, chunks, keys, reads, migrations, epochs string
}

// New returns a Store on db, which must use the PostgreSQL (pgdialect),
// MySQL/MariaDB (mysqldialect) or SQLite (sqlitedialect) dialect. opts may
// be nil. New runs no query: call Migrate before the first use.
func New(db *bun.DB, opts *Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("bunstore: New: db is nil")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	s := &Store{db: db, kind: db.Dialect().Name(), prefix: o.TablePrefix, directRoomID: o.DirectRoomID, bookkeepingOnly: o.BookkeepingOnly}
	switch s.kind {
	case dialect.PG, dialect.MySQL, dialect.SQLite:
	default:
		return nil, fmt.Errorf("bunstore: New: unsupported dialect %s (want pg, mysql or sqlite)", s.kind)
	}
	if s.prefix == "" {
		s.prefix = DefaultTablePrefix
	}
	if err := validPrefix(s.prefix); err != nil {
		return nil, err
	}
	if s.directRoomID == nil {
		s.directRoomID = store.DirectRoomID
	}
	s.users = s.prefix + "users"
	s.rooms = s.prefix + "rooms"
	s.members = s.prefix + "room_members"
	s.messages = s.prefix + "messages"
	s.batches = s.prefix + "batches"
	s.chunks = s.prefix + "chunks"
	s.keys = s.prefix + "idempotency_keys"
	s.reads = s.prefix + "batch_reads"
	s.migrations = s.prefix + "schema_migrations"
	s.epochs = s.prefix + "directory_epochs"
	if n := o.DirectoryCache; n >= 0 && s.cachesDirectory() {
		if n == 0 {
			n = DefaultDirectoryCache
		}
		s.dir = newDirCache(n)
	}
	if s.kind == dialect.SQLite {
		s.accepts = newAcceptFirst(acceptFirstMaxWait)
	}
	if isPgx(db.DB.Driver()) && s.kind == dialect.PG {
		s.pgx = true
		s.preparePG()
	}
	return s, nil
}

// validPrefix accepts only [A-Za-z0-9_]{1,32}: the prefix is concatenated
// into SQL, so this check is what keeps it from being an injection point.
func validPrefix(p string) error {
	if len(p) > maxPrefixLen {
		return fmt.Errorf("bunstore: Options.TablePrefix %q is longer than %d bytes", p, maxPrefixLen)
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("bunstore: Options.TablePrefix %q may hold only ASCII letters, digits and underscores", p)
		}
	}
	return nil
}

// TablePrefix returns the prefix of the store's tables, for hosts that
// join them in their own queries or drop them in tests.
func (s *Store) TablePrefix() string { return s.prefix }

// Tables returns the names of the tables Migrate creates (with the prefix),
// in an order in which they can be dropped (children before parents).
func (s *Store) Tables() []string {
	if s.bookkeepingOnly {
		return []string{s.migrations, s.keys, s.reads, s.chunks, s.batches}
	}
	tables := []string{s.migrations, s.keys, s.reads, s.chunks, s.batches, s.messages, s.members, s.rooms, s.users}
	if s.cachesDirectory() {
		// Last: the directory tables' triggers write it.
		tables = append(tables, s.epochs)
	}
	return tables
}

// Drop removes what Migrate created: every table of Tables (with its
// data) and, on PostgreSQL, the trigger function of schema version 11.
// For tests on a throwaway prefix, and for uninstalling.
func (s *Store) Drop(ctx context.Context) error {
	if err := begin(ctx, "drop"); err != nil {
		return err
	}
	tables := s.Tables()
	stmts := make([]string, 0, len(tables)+1)
	for _, t := range tables {
		stmts = append(stmts, "DROP TABLE IF EXISTS "+t)
	}
	if s.kind == dialect.PG && s.cachesDirectory() {
		stmts = append(stmts, "DROP FUNCTION IF EXISTS "+s.prefix+"directory_changed()")
	}
	for _, q := range stmts {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			return s.fail(ctx, "drop", err)
		}
	}
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bunstore: ping: %w", err)
	}
	return s.fail(ctx, "ping", s.db.PingContext(ctx))
}

// fail wraps err with the operation's name. When ctx is done, the result
// also wraps ctx.Err(): drivers report a canceled query in their own words
// ("interrupted", "query_canceled", a closed connection), and callers must
// be able to tell cancellation apart with errors.Is.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("bunstore: %s: %w (%w)", op, cerr, err)
	}
	return fmt.Errorf("bunstore: %s: %w", op, err)
}

// begin is the common start of every method: a done context is refused
// before any query runs.
func begin(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bunstore: %s: %w", op, err)
	}
	return nil
}

// full is begin for the Directory and Messages methods, which need the
// tables a BookkeepingOnly store does not have.
func (s *Store) full(ctx context.Context, op string) error {
	if s.bookkeepingOnly {
		return fmt.Errorf("bunstore: %s: %w", op, ErrBookkeepingOnly)
	}
	return begin(ctx, op)
}

// isUniqueViolation reports whether err is a duplicate-key error of one of
// the supported databases. The drivers' error types are recognized by
// their methods and fields, not imported, so that the store links no
// driver the host did not choose.
func isUniqueViolation(err error) bool {
	// PostgreSQL (pgx's *pgconn.PgError, lib/pq): SQLSTATE 23505.
	var state interface{ SQLState() string }
	if errors.As(err, &state) {
		return state.SQLState() == "23505"
	}
	// MySQL/MariaDB (go-sql-driver's *mysql.MySQLError): error 1062
	// ER_DUP_ENTRY.
	if n, ok := mysqlErrorNumber(err); ok {
		return n == 1062
	}
	// SQLite (modernc): extended codes 2067 SQLITE_CONSTRAINT_UNIQUE and
	// 1555 _PRIMARYKEY.
	var coder interface{ Code() int }
	if errors.As(err, &coder) && (coder.Code() == 2067 || coder.Code() == 1555) {
		return true
	}
	// The cgo SQLite driver (mattn) reports the same condition only in text.
	return strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// mysqlErrorNumber finds a go-sql-driver *mysql.MySQLError in err's chain
// and returns its Number.
func mysqlErrorNumber(err error) (uint16, bool) {
	for e := range errorChain(err) {
		v := reflect.ValueOf(e)
		if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
			continue
		}
		t := v.Elem().Type()
		if t.Name() != "MySQLError" || t.PkgPath() != "github.com/go-sql-driver/mysql" {
			continue
		}
		if f := v.Elem().FieldByName("Number"); f.IsValid() && f.Kind() == reflect.Uint16 {
			return uint16(f.Uint()), true
		}
	}
	return 0, false
}

// errorChain yields err and every error it wraps, depth first.
func errorChain(err error) func(yield func(error) bool) {
	return func(yield func(error) bool) {
		var walk func(error) bool
		walk = func(e error) bool {
			if e == nil {
				return true
			}
			if !yield(e) {
				return false
			}
			switch u := e.(type) {
			case interface{ Unwrap() error }:
				return walk(u.Unwrap())
			case interface{ Unwrap() []error }:
				for _, w := range u.Unwrap() {
					if !walk(w) {
						return false
					}
				}
			}
			return true
		}
		walk(err)
	}
}

// isPgx reports whether drv is pgx's database/sql driver
// (github.com/jackc/pgx/v5/stdlib), recognized by its type so that the
// store does not link pgx for hosts on other databases.
func isPgx(drv driver.Driver) bool {
	t := reflect.TypeOf(drv)
	return t != nil && t.Kind() == reflect.Pointer && t.Elem().Name() == "Driver" && t.Elem().PkgPath() == "github.com/jackc/pgx/v5/stdlib"
}

// unstorable reports whether any string holds a NUL byte or is not valid
// UTF-8. bun cannot write a NUL (PostgreSQL and SQLite would get a syntax
// error, MySQL would get the byte silently dropped) and PostgreSQL refuses
// invalid UTF-8 with an error that would read as an outage, so writes
// refuse such strings and lookups treat such IDs as absent: nothing like
// that was ever stored.
func unstorable(ss ...string) bool {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) {
			return true
		}
	}
	return false
}

// lockKey derives a stable 63-bit key from the table prefix, for the
// advisory locks that serialize concurrent migrations of one schema.
func lockKey(prefix string) int64 {
	h := fnv.New64a()
	h.Write([]byte("chatbatch/bunstore migrate " + prefix))
	return int64(h.Sum64() >> 1)
}

// inTx runs fn in a transaction on the pool. ctx cancels everything up to
// COMMIT, but not COMMIT itself: a COMMIT interrupted after the server
// received it leaves the caller unable to tell whether the transaction
// happened, and a batch stored while CreateBatch reported an error would
// later be run by the sweeper. Once fn has succeeded with ctx still live,
// the outcome is the COMMIT's own. On SQLite it first waits for the
// accept's pending writes (acceptFirst).
func (s *Store) inTx(ctx context.Context, fn func(ctx context.Context, tx bun.Tx) error) error {
	if err := s.accepts.wait(ctx); err != nil {
		return err
	}
	return s.runTx(ctx, fn)
}

// inAcceptTx is inTx for the accept's writes, which the others wait for
// (acceptFirst).
func (s *Store) inAcceptTx(ctx context.Context, fn func(ctx context.Context, tx bun.Tx) error) error {
	defer s.accepts.enter()()
	return s.runTx(ctx, fn)
}

// runTx is inTx without the wait for the accept's writes.
func (s *Store) runTx(ctx context.Context, fn func(ctx context.Context, tx bun.Tx) error) error {
	txCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	// txCtx bounds the wait for a connection and BEGIN like ctx does, and
	// makes database/sql roll back if ctx ends before COMMIT.
	tx, err := s.db.BeginTx(txCtx, nil)
	if err != nil {
		stop()
		return err
	}
	if err := fn(ctx, tx); err != nil {
		stop()
		_ = tx.Rollback()
		return err
	}
	if !stop() {
		_ = tx.Rollback() // already rolled back by database/sql; this only tidies up
		return ctx.Err()
	}
	return tx.Commit()
}

// acceptFirst lets the accept's writes on SQLite ahead of the worker's.
// SQLite has one write lock, and a writer that finds it taken sleeps and
// retries (busy_timeout) while other writers, arriving later, may get it
// first: under a worker's steady chunks a POST's CreateBatch could wait
// seconds. While an accept's write is pending, other writes wait before
// they start, so the accept waits at most for the writes already
// started. The writes that wait are every transaction (inTx) and
// StartChunk's claim, which are a chunk's writes but for a checkpoint
// after failed pushes. The rarer single statements (a lease renewal, a
// checkpoint, some of the sweep's) do not, and meet the busy handler as
// before. A write waits at most maxWait, then meets the busy handler as
// before, so that a stream of accepts cannot stall the worker. Its
// methods are no-ops on a nil *acceptFirst.
type acceptFirst struct {
	maxWait time.Duration
	mu      sync.Mutex
	pending int
	clear   chan struct{} // closed when pending falls to 0
}

// acceptFirstMaxWait is acceptFirst's maxWait: several times the longest
// wait of an accept seen under load (under 0.5 s), and well inside the
// default StoreTimeout (5 s) that bounds a worker's store call.
const acceptFirstMaxWait = time.Second

func newAcceptFirst(maxWait time.Duration) *acceptFirst {
	c := make(chan struct{})
	close(c)
	return &acceptFirst{maxWait: maxWait, clear: c}
}

// enter marks an accept's write pending until the returned func is called.
func (a *acceptFirst) enter() (leave func()) {
	if a == nil {
		return func() {}
	}
	a.mu.Lock()
	if a.pending == 0 {
		a.clear = make(chan struct{})
	}
	a.pending++
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		if a.pending--; a.pending == 0 {
			close(a.clear)
		}
		a.mu.Unlock()
	}
}

// wait returns when no accept's write is pending or after maxWait, or
// with ctx's error.
func (a *acceptFirst) wait(ctx context.Context) error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	c := a.clear
	a.mu.Unlock()
	select {
	case <-c:
		return nil
	default:
	}
	t := time.NewTimer(a.maxWait)
	defer t.Stop()
	select {
	case <-c:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
