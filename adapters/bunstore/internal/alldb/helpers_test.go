package alldb_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/adapters/bunstore/bunopen"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

// Environment variables that enable the server databases. Without them the
// tests run on SQLite only.
const (
	envPostgres = "CHATBATCH_TEST_POSTGRES" // e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable
	envMySQL    = "CHATBATCH_TEST_MYSQL"    // e.g. root@tcp(127.0.0.1:3306)/test or mysql://root@127.0.0.1:3306/test
)

// backend is one database the tests run on. Each is opened once per test
// binary (the pool is shared by all tests) and isolated per test by a
// random table prefix.
type backend struct {
	name string
	env  string // "" for SQLite
	dsn  func() (string, error)

	once sync.Once
	db   *bun.DB
	err  error
}

var tempDir string // for the SQLite file backend; removed by TestMain

var backends = []*backend{
	{name: "sqlite-memory", dsn: func() (string, error) { return "sqlite::memory:", nil }},
	{name: "sqlite-file", dsn: func() (string, error) { return "sqlite:" + filepath.Join(tempDir, "shared.db"), nil }},
	{name: "postgres", env: envPostgres},
	{name: "mysql", env: envMySQL},
}

func TestMain(m *testing.M) {
	var err error
	tempDir, err = os.MkdirTemp("", "bunstore-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	for _, b := range backends {
		if b.db != nil {
			b.db.Close()
		}
	}
	os.RemoveAll(tempDir)
	os.Exit(code)
}

// get returns the backend's shared pool, skipping tb when the backend's
// environment variable is not set.
func (b *backend) get(tb testing.TB) *bun.DB {
	tb.Helper()
	if b.env != "" && os.Getenv(b.env) == "" {
		testenv.Skip(tb, "set %s=… to run against %s", b.env, b.name)
	}
	b.once.Do(func() {
		dsn := os.Getenv(b.env)
		if b.dsn != nil {
			dsn, b.err = b.dsn()
			if b.err != nil {
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b.db, b.err = bunopen.Open(ctx, dsn)
	})
	if b.err != nil {
		tb.Fatalf("open %s: %v", b.name, b.err)
	}
	return b.db
}

// forEach runs fn as a subtest per backend.
func forEach(t *testing.T, fn func(t *testing.T, b *backend, db *bun.DB)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b, b.get(t)) })
	}
}

// randomPrefix returns a fresh table prefix, so parallel tests never share
// tables.
func randomPrefix() string {
	var buf [5]byte
	rand.Read(buf[:])
	return "t" + hex.EncodeToString(buf[:]) + "_"
}

// newStore returns a migrated store on db with a fresh prefix (unless opts
// sets one) and drops its tables when tb ends.
func newStore(tb testing.TB, db *bun.DB, opts *bunstore.Options) *bunstore.Store {
	tb.Helper()
	var o bunstore.Options
	if opts != nil {
		o = *opts
	}
	if o.TablePrefix == "" {
		o.TablePrefix = randomPrefix()
	}
	s, err := bunstore.New(db, &o)
	if err != nil {
		tb.Fatal(err)
	}
	dropTables(tb, db, s)
	if err := s.Migrate(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return s
}

// dropTables drops s's tables when tb ends (t.Context is canceled by then,
// hence Background).
func dropTables(tb testing.TB, db *bun.DB, s *bunstore.Store) {
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Drop(ctx); err != nil {
			tb.Error(err)
		}
	})
}

// tableExists reports whether a table of that name can be queried.
func tableExists(ctx context.Context, db *bun.DB, table string) bool {
	rows, err := db.QueryContext(ctx, "SELECT 1 FROM "+table+" WHERE 1 = 0")
	if err != nil {
		return false
	}
	rows.Close()
	return true
}

// mysqlURL converts a native MySQL DSN (user[:pass]@tcp(host:port)/db?x)
// to the mysql:// form and back, so that both forms are tested whichever
// the environment gives.
func mysqlForms(dsn string) (native, urlForm string) {
	if strings.HasPrefix(dsn, "mysql://") {
		urlForm = dsn
		rest := strings.TrimPrefix(dsn, "mysql://")
		user, hostPath, _ := strings.Cut(rest, "@")
		host, path, _ := strings.Cut(hostPath, "/")
		return user + "@tcp(" + host + ")/" + path, urlForm
	}
	user, rest, _ := strings.Cut(dsn, "@tcp(")
	host, path, _ := strings.Cut(rest, ")/")
	return dsn, "mysql://" + user + "@" + host + "/" + path
}
