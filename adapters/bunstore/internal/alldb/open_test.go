package alldb_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/adapters/bunstore/bunopen"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

func openOK(t *testing.T, dsn string) *bun.DB {
	t.Helper()
	db, err := bunopen.Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open(%q): %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func pragma(t *testing.T, db *bun.DB, name string) string {
	t.Helper()
	var v string
	if err := db.QueryRowContext(t.Context(), "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestOpenSQLiteMemory(t *testing.T) {
	a := openOK(t, "sqlite::memory:")
	b := openOK(t, "sqlite::memory:")
	if a.Dialect().Name() != dialect.SQLite {
		t.Errorf("dialect %s", a.Dialect().Name())
	}
	if n := a.Stats().MaxOpenConnections; n != 1 {
		t.Errorf("in-memory pool MaxOpenConnections = %d, want 1 (the connection is the database)", n)
	}
	if _, err := a.ExecContext(t.Context(), "CREATE TABLE only_in_a (x INTEGER)"); err != nil {
		t.Fatal(err)
	}
	if tableExists(t.Context(), b, "only_in_a") {
		t.Error("two sqlite::memory: opens share one database")
	}
	if got := pragma(t, a, "foreign_keys"); got != "1" {
		t.Errorf("foreign_keys = %s", got)
	}
}

func TestOpenSQLiteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store.db")
	db := openOK(t, "sqlite:"+path)
	for name, want := range map[string]string{"journal_mode": "wal", "busy_timeout": "10000", "foreign_keys": "1"} {
		if got := pragma(t, db, name); got != want {
			t.Errorf("PRAGMA %s = %s, want %s", name, got, want)
		}
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the database file was not created: %v", err)
	}
	// file: URIs pass through, and a pragma the DSN sets wins.
	db2 := openOK(t, "sqlite:file:"+filepath.Join(dir, "other.db")+"?_pragma=busy_timeout(2500)")
	if got := pragma(t, db2, "busy_timeout"); got != "2500" {
		t.Errorf("busy_timeout set by the DSN = %s, want 2500", got)
	}
	if got := pragma(t, db2, "journal_mode"); got != "wal" {
		t.Errorf("journal_mode = %s, want wal", got)
	}
	// A file in WAL mode serves a store.
	s, err := bunstore.New(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestOpenPostgres(t *testing.T) {
	dsn := os.Getenv(envPostgres)
	if dsn == "" {
		testenv.Skip(t, "set %s=… to run against PostgreSQL", envPostgres)
	}
	rest := dsn[strings.Index(dsn, "://"):]
	for _, form := range []string{"postgres" + rest, "postgresql" + rest} {
		db := openOK(t, form)
		if db.Dialect().Name() != dialect.PG {
			t.Errorf("%s: dialect %s", form, db.Dialect().Name())
		}
	}
}

func TestOpenMySQL(t *testing.T) {
	dsn := os.Getenv(envMySQL)
	if dsn == "" {
		testenv.Skip(t, "set %s=… to run against MySQL/MariaDB", envMySQL)
	}
	native, urlForm := mysqlForms(dsn)
	sep := "?"
	if strings.Contains(urlForm, "?") {
		sep = "&"
	}
	// The DSN's own charset, parseTime and loc are overridden.
	for _, form := range []string{native, urlForm, urlForm + sep + "charset=latin1&parseTime=false&loc=Local"} {
		db := openOK(t, form)
		if db.Dialect().Name() != dialect.MySQL {
			t.Errorf("%s: dialect %s", form, db.Dialect().Name())
		}
		var charset string
		var at time.Time
		err := db.QueryRowContext(t.Context(), "SELECT @@character_set_connection, CAST('2026-04-10 09:30:15.123456' AS DATETIME(6))").Scan(&charset, &at)
		if err != nil {
			t.Fatalf("%s: %v", form, err)
		}
		if charset != "utf8mb4" || at.Location() != time.UTC || at.Nanosecond() != 123456000 {
			t.Errorf("%s: charset %s, time %v; want utf8mb4 and a UTC time.Time", form, charset, at)
		}
		var mode string
		if err := db.QueryRowContext(t.Context(), "SELECT @@SESSION.sql_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(mode, "STRICT_ALL_TABLES") || strings.Contains(mode, "NO_BACKSLASH_ESCAPES") {
			t.Errorf("%s: sql_mode %s", form, mode)
		}
	}
	// A session that reads backslashes literally would store bun's escaped
	// backslashes doubled: Migrate refuses it.
	db := openOK(t, native+sep+"sql_mode='NO_BACKSLASH_ESCAPES'")
	s, err := bunstore.New(db, &bunstore.Options{TablePrefix: randomPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err == nil || !strings.Contains(err.Error(), "NO_BACKSLASH_ESCAPES") {
		t.Errorf("Migrate under NO_BACKSLASH_ESCAPES = %v, want a refusal", err)
	}
}

func TestOpenErrors(t *testing.T) {
	const password = "s3cr3t-pw"
	cases := []struct {
		dsn, want string
	}{
		{"", "postgres://"},
		{"redis://localhost:6379", `"redis"`},
		{"sqlserver://sa:" + password + "@localhost", `"sqlserver"`},
		{"sqlite:", "empty path"},
		{"sqlite:" + filepath.Join(t.TempDir(), "no", "such", "dir", "x.db"), "sqlite"},
		// Closed port: refused at once.
		{"postgres://alice:" + password + "@127.0.0.1:1/db?sslmode=disable", "postgres"},
		{"postgresql://alice:" + password + "@127.0.0.1:1/db?sslmode=disable", "postgres"},
		{"mysql://alice:" + password + "@127.0.0.1:1/db", "mysql"},
		{"alice:" + password + "@tcp(127.0.0.1:1)/db", "mysql"},
		// Malformed, with the password in the text.
		{"mysql://alice:" + password + "@127.0.0.1:port/db", "mysql"},
		{"postgres://alice:" + password + "@127.0.0.1:port/db", "postgres"},
		{"alice:" + password + "@tcp(127.0.0.1:1/db", "mysql"},
		{"mysql://alice:" + password + "@127.0.0.1:1/db?timeout=oops", "mysql"},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		start := time.Now()
		db, err := bunopen.Open(ctx, c.dsn)
		cancel()
		if err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded", c.dsn)
			continue
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Open(%q) took %v to fail", c.dsn, d)
		}
		msg := err.Error()
		if strings.Contains(msg, password) {
			t.Errorf("Open(%q) error reveals the password: %s", c.dsn, msg)
		}
		if !strings.Contains(msg, c.want) {
			t.Errorf("Open(%q) = %q, want it to mention %s", c.dsn, msg, c.want)
		}
	}
}
