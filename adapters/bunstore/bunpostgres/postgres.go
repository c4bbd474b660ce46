// Package bunpostgres opens a PostgreSQL database for bunstore through
// pgx's database/sql driver (github.com/jackc/pgx/v5/stdlib), the driver
// bunstore's PostgreSQL fast path (bind parameters, array columns, one
// statement per step) is made for. Import it rather than bunopen to link
// no other database driver.
//
// Linking this package also gives bunstore PostgreSQL's COPY for saving
// messages, on any *bun.DB of pgx's database/sql driver however it was
// opened: a host that opens its own imports it for that alone
// (import _ "github.com/chatbatch/chatbatch/adapters/bunstore/bunpostgres").
package bunpostgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/schema"

	"github.com/chatbatch/chatbatch/adapters/bunstore/internal/opener"
	"github.com/chatbatch/chatbatch/adapters/bunstore/internal/pgcopy"
)

func openPostgres(ctx context.Context, dsn string) (*bun.DB, error) {
	password := ""
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		password, _ = u.User.Password()
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password in its parse errors; redact again in
		// case a malformed URL defeats it.
		return nil, opener.Redact(fmt.Errorf("bunstore: open postgres: %w", err), password)
	}
	if cfg.Password != "" {
		password = cfg.Password
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = opener.PingTimeout
	}
	sqldb := stdlib.OpenDB(*cfg)
	sqldb.SetMaxOpenConns(opener.ServerMaxConns)
	sqldb.SetMaxIdleConns(opener.ServerMaxConns)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	sqldb.SetConnMaxLifetime(30 * time.Minute)
	where := fmt.Sprintf("postgres %s/%s", net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)), cfg.Database)
	return opener.Pinged(ctx, sqldb, func() schema.Dialect { return pgdialect.New() }, where, password)
}

// Open opens and pings a PostgreSQL database for bunstore.New. dsn is
// postgres://… or postgresql://…, with any parameter pgx understands
// (sslmode, connect_timeout, …). The pool gets at most 20 connections,
// kept idle for up to 5 minutes; change it on db.DB if needed. Errors never
// show the password. When ctx has no deadline the ping gives up after 10
// seconds. The caller closes the returned *bun.DB.
func Open(ctx context.Context, dsn string) (*bun.DB, error) {
	lower := strings.ToLower(dsn)
	if !strings.HasPrefix(lower, "postgres://") && !strings.HasPrefix(lower, "postgresql://") {
		return nil, errors.New("bunstore: open postgres: the DSN is not a postgres:// or postgresql:// URL")
	}
	return openPostgres(ctx, dsn)
}

func init() { pgcopy.Register(copyFrom) }

// copyFrom is bunstore's COPY (see pgcopy.Func) on a connection of pgx's
// database/sql driver.
func copyFrom(ctx context.Context, driverConn any, sql string, data io.Reader) (int64, error) {
	c, ok := driverConn.(*stdlib.Conn)
	if !ok {
		return 0, fmt.Errorf("bunpostgres: COPY needs a connection of pgx's database/sql driver, not %T", driverConn)
	}
	tag, err := c.Conn().PgConn().CopyFrom(ctx, data, sql)
	return tag.RowsAffected(), err
}
