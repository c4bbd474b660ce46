package bunstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"
	"github.com/uptrace/bun/schema"
)

// dsnForms lists what Open accepts, for its error messages and docs.
const dsnForms = `postgres://user:pass@host:5432/db?sslmode=disable (or postgresql://), ` +
	`mysql://user:pass@host:3306/db?param=value, user:pass@tcp(host:3306)/db?param=value (go-sql-driver/mysql's own form), ` +
	`sqlite:path/to/file.db, sqlite:file:path/to/file.db?param=value, sqlite::memory:`

// Defaults Open applies. The host may change the pool afterwards through
// db.DB (the embedded *sql.DB).
const (
	openPingTimeout   = 10 * time.Second // when ctx has no deadline
	sqliteBusyTimeout = 10000            // ms a writer waits for SQLite's write lock
	serverMaxConns    = 20
	sqliteFileConns   = 8
)

// Open opens and pings a database for New. The DSN's form selects the
// database, driver and bun dialect:
//
//   - postgres://… or postgresql://…: PostgreSQL through pgx's database/sql
//     driver (github.com/jackc/pgx/v5/stdlib), with any parameter pgx
//     understands (sslmode, connect_timeout, …).
//   - mysql://user:pass@host:port/db?params, or go-sql-driver/mysql's own
//     form user:pass@tcp(host:port)/db?params: MySQL or MariaDB. Open
//     always sets parseTime=true, loc=UTC, charset utf8mb4, multiStatements
//     and clientFoundRows off, whatever the DSN says: the store relies on
//     them. Unless the DSN sets sql_mode, it adds STRICT_ALL_TABLES and
//     removes NO_BACKSLASH_ESCAPES from the server's modes.
//   - sqlite:path, sqlite:file:path?params: an SQLite file through the
//     pure-Go driver (modernc.org/sqlite via bun's sqliteshim; no cgo).
//     Open adds WAL journaling, busy_timeout 10 s, foreign keys and
//     _txlock=immediate (so that writers queue for the write lock instead
//     of failing with SQLITE_BUSY), each unless the DSN sets it.
//   - sqlite::memory:: a new, private in-memory SQLite database. It lives
//     in the pool's one connection (MaxOpenConns 1, never closed for age or
//     idleness), so it is gone when the *bun.DB is closed.
//
// Pools of server databases get at most 20 connections, kept idle for up
// to 5 minutes (MySQL: replaced after 3 minutes, as go-sql-driver
// recommends); SQLite files 8. Change them on db.DB if needed. Errors name
// the database kind, never the password. When ctx has no deadline the
// ping gives up after 10 seconds. The caller closes the returned *bun.DB.
func Open(ctx context.Context, dsn string) (*bun.DB, error) {
	lower := strings.ToLower(dsn)
	switch {
	case strings.HasPrefix(lower, "postgres://"), strings.HasPrefix(lower, "postgresql://"):
		return openPostgres(ctx, dsn)
	case strings.HasPrefix(lower, "mysql://"):
		cfg, err := mysqlURLConfig(dsn)
		if err != nil {
			return nil, err
		}
		return openMySQL(ctx, cfg)
	case isNativeMySQL(dsn):
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, redact(fmt.Errorf("bunstore: open mysql: %w", err), nativeMySQLPassword(dsn))
		}
		return openMySQL(ctx, cfg)
	case strings.HasPrefix(lower, "sqlite:"):
		return openSQLite(ctx, dsn[len("sqlite:"):])
	}
	scheme := "it"
	if i := strings.Index(dsn, "://"); i > 0 && i < 20 {
		scheme = fmt.Sprintf("scheme %q", dsn[:i])
	}
	return nil, fmt.Errorf("bunstore: open: unsupported DSN: %s is none of the accepted forms: %s", scheme, dsnForms)
}

// isNativeMySQL recognizes go-sql-driver/mysql's DSN form by its network
// part: user:pass@tcp(host:port)/db, @unix(/path)/db, tcp(…)/db.
func isNativeMySQL(dsn string) bool {
	for _, n := range []string{"tcp(", "tcp6(", "unix("} {
		if strings.HasPrefix(dsn, n) || strings.Contains(dsn, "@"+n) {
			return true
		}
	}
	return false
}

// nativeMySQLPassword extracts the password of a native MySQL DSN for
// redaction, the way go-sql-driver splits it (last @, first colon).
func nativeMySQLPassword(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	if at < 0 {
		return ""
	}
	if c := strings.IndexByte(dsn[:at], ':'); c >= 0 {
		return dsn[c+1 : at]
	}
	return ""
}

func openPostgres(ctx context.Context, dsn string) (*bun.DB, error) {
	password := ""
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		password, _ = u.User.Password()
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password in its parse errors; redact again in
		// case a malformed URL defeats it.
		return nil, redact(fmt.Errorf("bunstore: open postgres: %w", err), password)
	}
	if cfg.Password != "" {
		password = cfg.Password
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = openPingTimeout
	}
	sqldb := stdlib.OpenDB(*cfg)
	sqldb.SetMaxOpenConns(serverMaxConns)
	sqldb.SetMaxIdleConns(serverMaxConns)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	sqldb.SetConnMaxLifetime(30 * time.Minute)
	where := fmt.Sprintf("postgres %s/%s", net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)), cfg.Database)
	return pinged(ctx, sqldb, func() schema.Dialect { return pgdialect.New() }, where, password)
}

// mysqlURLConfig converts mysql://user:pass@host:port/db?params into the
// driver's Config. User and password are set on the Config directly, not
// spliced into a native DSN, so that any character in them is safe.
func mysqlURLConfig(dsn string) (*mysql.Config, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		// url.Error repeats the whole URL, password included: keep only
		// the reason.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, redact(fmt.Errorf("bunstore: open mysql: invalid mysql:// URL: %w", err), "")
	}
	password := ""
	if u.User != nil {
		password, _ = u.User.Password()
	}
	host := u.Host
	if host == "" {
		host = "127.0.0.1"
	}
	if u.Port() == "" {
		host = net.JoinHostPort(strings.Trim(host, "[]"), "3306")
	}
	native := "tcp(" + host + ")/" + url.PathEscape(strings.TrimPrefix(u.Path, "/"))
	if u.RawQuery != "" {
		native += "?" + u.RawQuery
	}
	cfg, err := mysql.ParseDSN(native)
	if err != nil {
		return nil, redact(fmt.Errorf("bunstore: open mysql: %w", err), password)
	}
	cfg.DBName = strings.TrimPrefix(u.Path, "/")
	if u.User != nil {
		cfg.User = u.User.Username()
		cfg.Passwd = password
	}
	return cfg, nil
}

func openMySQL(ctx context.Context, cfg *mysql.Config) (*bun.DB, error) {
	// The store depends on these, whatever the DSN asked for: times come
	// back as time.Time in UTC, text is utf8mb4 (emoji), one statement per
	// query, and RowsAffected counts changed rows (insertIgnore's no-op
	// update of a duplicate reports 0).
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.MultiStatements = false
	cfg.ClientFoundRows = false
	// Strict mode turns a too long ID (VARBINARY(255)) into an error
	// instead of a silent truncation, and bun's MySQL string literals
	// escape backslashes, which NO_BACKSLASH_ESCAPES would store doubled.
	// The server's other modes are kept. A DSN that sets sql_mode itself
	// wins (Migrate still refuses NO_BACKSLASH_ESCAPES).
	if _, ok := cfg.Params["sql_mode"]; !ok {
		if cfg.Params == nil {
			cfg.Params = map[string]string{}
		}
		cfg.Params["sql_mode"] = "CONCAT(REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', ''), ',STRICT_ALL_TABLES')"
	}
	collation := ""
	if strings.HasPrefix(cfg.Collation, "utf8mb4_") {
		collation = cfg.Collation
	}
	if err := cfg.Apply(mysql.Charset("utf8mb4", collation)); err != nil {
		return nil, redact(fmt.Errorf("bunstore: open mysql: %w", err), cfg.Passwd)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = openPingTimeout
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, redact(fmt.Errorf("bunstore: open mysql: %w", err), cfg.Passwd)
	}
	sqldb := sql.OpenDB(connector)
	sqldb.SetMaxOpenConns(serverMaxConns)
	sqldb.SetMaxIdleConns(serverMaxConns)
	sqldb.SetConnMaxIdleTime(time.Minute)
	sqldb.SetConnMaxLifetime(3 * time.Minute)
	return pinged(ctx, sqldb, func() schema.Dialect { return mysqldialect.New() }, fmt.Sprintf("mysql %s/%s", cfg.Addr, cfg.DBName), cfg.Passwd)
}

func openSQLite(ctx context.Context, rest string) (*bun.DB, error) {
	if rest == "" {
		return nil, fmt.Errorf("bunstore: open sqlite: empty path; accepted forms: %s", dsnForms)
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
		return nil, fmt.Errorf("bunstore: open sqlite: empty path; accepted forms: %s", dsnForms)
	}
	params := []struct{ key, value, setBy string }{
		{"_pragma", "foreign_keys(1)", "foreign_keys"},
	}
	if !memory {
		params = append(params,
			struct{ key, value, setBy string }{"_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout), "busy_timeout"},
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
		sqldb.SetMaxOpenConns(sqliteFileConns)
		sqldb.SetMaxIdleConns(sqliteFileConns)
	}
	where := "sqlite " + name
	if rest == ":memory:" {
		where = "sqlite :memory:"
	}
	return pinged(ctx, sqldb, func() schema.Dialect { return sqlitedialect.New() }, where, "")
}

// pinged pings sqldb and wraps it in a bun.DB with a dialect made by
// newDialect, or closes it on failure. The dialect comes after the ping
// because bun.NewDB queries the server (mysqldialect asks for its version)
// and only logs a failure.
func pinged(ctx context.Context, sqldb *sql.DB, newDialect func() schema.Dialect, where, password string) (*bun.DB, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, openPingTimeout)
		defer cancel()
	}
	if err := sqldb.PingContext(ctx); err != nil {
		sqldb.Close()
		return nil, redact(fmt.Errorf("bunstore: open %s: %w", where, err), password)
	}
	return bun.NewDB(sqldb, newDialect()), nil
}

// redact hides password (raw and URL-escaped) in err's text while keeping
// err in the chain for errors.Is and errors.As.
func redact(err error, password string) error {
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
