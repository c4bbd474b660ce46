// Package pgtest gives each test a PostgreSQL schema of its own with the
// chat server's tables, so that tests run in parallel on one database.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chatbatch/chatbatch/examples/existingchat/chat"
)

// Env names the database the tests use, e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const Env = "CHATBATCH_TEST_POSTGRES"

// DSN returns the database URL, skipping t when Env is not set.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(Env)
	if dsn == "" {
		Skip(t, "set %s=postgres://… to run the chat server's tests on PostgreSQL", Env)
	}
	return dsn
}

// Skip skips t, or fails it in CI (CI=true): CI provides every service,
// and a test that does not run there proves nothing.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	if v := os.Getenv("CI"); v == "true" || v == "1" {
		t.Fatalf("CI=true, so this test must run, but: "+format, args...)
	}
	t.Skipf(format, args...)
}

// NewSchema creates an empty schema, dropped when t ends.
func NewSchema(t testing.TB) (dsn, schema string) {
	t.Helper()
	dsn = DSN(t)
	var b [6]byte
	rand.Read(b[:])
	schema = "existingchat_" + hex.EncodeToString(b[:])
	exec(t, dsn, `CREATE SCHEMA `+schema)
	t.Cleanup(func() { exec(t, dsn, `DROP SCHEMA `+schema+` CASCADE`) })
	return dsn, schema
}

func exec(t testing.TB, dsn, sql string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", Env, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Errorf("%s: %v", sql, err)
	}
}

// DB returns the chat server's database in a fresh schema, migrated, with
// a pool of at most maxConns connections (so that many parallel tests
// stay within the server's max_connections).
func DB(t testing.TB, maxConns int) *chat.DB {
	t.Helper()
	dsn, schema := NewSchema(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", strconv.Itoa(max(maxConns, 1)))
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := chat.Open(ctx, u.String(), schema)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}
