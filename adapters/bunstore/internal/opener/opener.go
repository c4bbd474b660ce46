// Package opener holds what the bunstore openers (bunpostgres, bunmysql,
// bunsqlite, bunopen) share: the ping, the pool defaults and redaction of
// passwords in errors.
package opener

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/schema"
)

// Defaults Open applies. The host may change the pool afterwards through
// db.DB (the embedded *sql.DB).
const (
	PingTimeout       = 10 * time.Second // when ctx has no deadline
	SQLiteBusyTimeout = 10000            // ms a writer waits for SQLite's write lock
	ServerMaxConns    = 20
	SQLiteFileConns   = 8
)

// Pinged pings sqldb and wraps it in a bun.DB with a dialect made by
// newDialect, or closes it on failure. The dialect comes after the ping
// because bun.NewDB queries the server (mysqldialect asks for its version)
// and only logs a failure.
func Pinged(ctx context.Context, sqldb *sql.DB, newDialect func() schema.Dialect, where, password string) (*bun.DB, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, PingTimeout)
		defer cancel()
	}
	if err := sqldb.PingContext(ctx); err != nil {
		sqldb.Close()
		return nil, Redact(fmt.Errorf("bunstore: open %s: %w", where, err), password)
	}
	return bun.NewDB(sqldb, newDialect()), nil
}

// Redact hides password (raw and URL-escaped) in err's text while keeping
// err in the chain for errors.Is and errors.As.
func Redact(err error, password string) error {
	if password == "" {
		return err
	}
	msg := err.Error()
	for _, p := range []string{password, url.QueryEscape(password), url.PathEscape(password), url.UserPassword("", password).String()[1:]} {
		if p != "" {
			msg = strings.ReplaceAll(msg, p, "xxxxx")
		}
	}
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }

func (e *redactedError) Unwrap() error { return e.err }

// DSNForms lists what bunopen.Open accepts, for error messages and docs.
const DSNForms = `postgres://user:pass@host:5432/db?sslmode=disable (or postgresql://), ` +
	`mysql://user:pass@host:3306/db?param=value, user:pass@tcp(host:3306)/db?param=value (go-sql-driver/mysql's own form), ` +
	`sqlite:path/to/file.db, sqlite:file:path/to/file.db?param=value, sqlite::memory:`
