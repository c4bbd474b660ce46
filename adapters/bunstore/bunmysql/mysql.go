// Package bunmysql opens a MySQL or MariaDB database for bunstore through
// go-sql-driver/mysql, with the session settings the store relies on.
// Import it rather than bunopen to link no other database driver.
package bunmysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"
	"github.com/uptrace/bun/schema"

	"github.com/chatbatch/chatbatch/adapters/bunstore/internal/opener"
)

// IsNativeDSN recognizes go-sql-driver/mysql's DSN form by its network
// part: user:pass@tcp(host:port)/db, @unix(/path)/db, tcp(…)/db.
func IsNativeDSN(dsn string) bool {
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
		return nil, opener.Redact(fmt.Errorf("bunstore: open mysql: invalid mysql:// URL: %w", err), "")
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
		return nil, opener.Redact(fmt.Errorf("bunstore: open mysql: %w", err), password)
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
		return nil, opener.Redact(fmt.Errorf("bunstore: open mysql: %w", err), cfg.Passwd)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = opener.PingTimeout
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, opener.Redact(fmt.Errorf("bunstore: open mysql: %w", err), cfg.Passwd)
	}
	sqldb := sql.OpenDB(connector)
	sqldb.SetMaxOpenConns(opener.ServerMaxConns)
	sqldb.SetMaxIdleConns(opener.ServerMaxConns)
	sqldb.SetConnMaxIdleTime(time.Minute)
	sqldb.SetConnMaxLifetime(3 * time.Minute)
	return opener.Pinged(ctx, sqldb, func() schema.Dialect { return mysqldialect.New() }, fmt.Sprintf("mysql %s/%s", cfg.Addr, cfg.DBName), cfg.Passwd)
}

// Open opens and pings a MySQL or MariaDB database for bunstore.New. dsn is
// mysql://user:pass@host:port/db?params or go-sql-driver/mysql's own form
// user:pass@tcp(host:port)/db?params. Open always sets parseTime=true,
// loc=UTC, charset utf8mb4, multiStatements and clientFoundRows off,
// whatever the DSN says: the store relies on them. Unless the DSN sets
// sql_mode, it adds STRICT_ALL_TABLES and removes NO_BACKSLASH_ESCAPES from
// the server's modes. The pool gets at most 20 connections, replaced after
// 3 minutes as go-sql-driver recommends. Errors never show the password.
// When ctx has no deadline the ping gives up after 10 seconds. The caller
// closes the returned *bun.DB.
func Open(ctx context.Context, dsn string) (*bun.DB, error) {
	switch {
	case strings.HasPrefix(strings.ToLower(dsn), "mysql://"):
		cfg, err := mysqlURLConfig(dsn)
		if err != nil {
			return nil, err
		}
		return openMySQL(ctx, cfg)
	case IsNativeDSN(dsn):
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, opener.Redact(fmt.Errorf("bunstore: open mysql: %w", err), nativeMySQLPassword(dsn))
		}
		return openMySQL(ctx, cfg)
	}
	return nil, errors.New("bunstore: open mysql: the DSN is neither mysql://… nor user:pass@tcp(host:port)/db")
}
