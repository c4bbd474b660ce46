// Package bunsqlite opens an SQLite database for bunstore through the
// pure-Go driver (modernc.org/sqlite via bun's sqliteshim; no cgo).
// Import it rather than bunopen to link no other database driver.
package bunsqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"
	"github.com/uptrace/bun/schema"

	"github.com/chatbatch/chatbatch/adapters/bunstore/internal/opener"
)

func openSQLite(ctx context.Context, rest string) (*bun.DB, error) {
	if rest == "" {
		return nil, fmt.Errorf("bunstore: open sqlite: empty path; accepted forms: %s", opener.DSNForms)
	}
	name, query, _ := strings.Cut(rest, "?")
	memory := false
	switch {
	case rest == ":memory:":
		// A named shared-cache database, private to this pool: plain
		// :memory: would be per connection, and file::memory:?cache=shared
		// is one database for the whole process.
		name, query, memory = "file:chatbatch-"+rand.Text(), "mode=memory&cache=shared", true
	case strings.HasPrefix(name, "file:"):
		memory = strings.Contains("&"+query+"&", "&mode=memory&") || strings.HasPrefix(name, "file::memory:")
	case name == "":
		return nil, fmt.Errorf("bunstore: open sqlite: empty path; accepted forms: %s", opener.DSNForms)
	}
	params := []struct{ key, value, setBy string }{
		{"_pragma", "foreign_keys(1)", "foreign_keys"},
	}
	if !memory {
		params = append(params,
			struct{ key, value, setBy string }{"_pragma", fmt.Sprintf("busy_timeout(%d)", opener.SQLiteBusyTimeout), "busy_timeout"},
			struct{ key, value, setBy string }{"_pragma", "journal_mode(WAL)", "journal_mode"},
			struct{ key, value, setBy string }{"_txlock", "immediate", "_txlock"},
		)
	}
	for _, p := range params {
		if strings.Contains(strings.ToLower(query), p.setBy) {
			continue // the DSN chose
		}
		if query != "" {
			query += "&"
		}
		query += p.key + "=" + url.QueryEscape(p.value)
	}
	sqldb, err := sql.Open(sqliteshim.ShimName, name+"?"+query)
	if err != nil {
		return nil, fmt.Errorf("bunstore: open sqlite %s: %w", name, err)
	}
	if memory {
		// The connection is the database: exactly one, never closed for
		// age or idleness, or the data is gone.
		sqldb.SetMaxOpenConns(1)
		sqldb.SetMaxIdleConns(1)
		sqldb.SetConnMaxLifetime(0)
		sqldb.SetConnMaxIdleTime(0)
	} else {
		sqldb.SetMaxOpenConns(opener.SQLiteFileConns)
		sqldb.SetMaxIdleConns(opener.SQLiteFileConns)
	}
	where := "sqlite " + name
	if rest == ":memory:" {
		where = "sqlite :memory:"
	}
	return opener.Pinged(ctx, sqldb, func() schema.Dialect { return sqlitedialect.New() }, where, "")
}

// Open opens and pings an SQLite database for bunstore.New. dsn is
// sqlite:path, sqlite:file:path?params or sqlite::memory:. Files get WAL
// journaling, busy_timeout 10 s, foreign keys and _txlock=immediate (so
// that writers queue for the write lock instead of failing with
// SQLITE_BUSY), each unless the DSN sets it, and a pool of 8 connections.
// sqlite::memory: is a new, private in-memory database living in the
// pool's one connection (never closed for age or idleness), gone when the
// *bun.DB is closed. The caller closes the returned *bun.DB.
func Open(ctx context.Context, dsn string) (*bun.DB, error) {
	if !strings.HasPrefix(strings.ToLower(dsn), "sqlite:") {
		return nil, errors.New(`bunstore: open sqlite: the DSN does not start with "sqlite:"`)
	}
	return openSQLite(ctx, dsn[len("sqlite:"):])
}
