// Package bunopen opens any of bunstore's databases from a DSN, choosing
// the driver by the DSN's form: for programs whose database is set at run
// time (chatbatchd's -db flag). It links all three drivers; a program for
// one database imports bunpostgres, bunmysql or bunsqlite instead.
package bunopen

import (
	"context"
	"fmt"
	"strings"

	"github.com/uptrace/bun"

	"github.com/chatbatch/chatbatch/adapters/bunstore/bunmysql"
	"github.com/chatbatch/chatbatch/adapters/bunstore/bunpostgres"
	"github.com/chatbatch/chatbatch/adapters/bunstore/bunsqlite"
	"github.com/chatbatch/chatbatch/adapters/bunstore/internal/opener"
)

// Open opens and pings a database for bunstore.New. The DSN's form selects
// the database, driver and bun dialect:
//
//   - postgres://… or postgresql://…: PostgreSQL, as bunpostgres.Open.
//   - mysql://user:pass@host:port/db?params, or go-sql-driver/mysql's own
//     form user:pass@tcp(host:port)/db?params: MySQL or MariaDB, as
//     bunmysql.Open.
//   - sqlite:path, sqlite:file:path?params, sqlite::memory:: SQLite, as
//     bunsqlite.Open.
//
// Errors name the database kind, never the password. The caller closes the
// returned *bun.DB.
func Open(ctx context.Context, dsn string) (*bun.DB, error) {
	lower := strings.ToLower(dsn)
	switch {
	case strings.HasPrefix(lower, "postgres://"), strings.HasPrefix(lower, "postgresql://"):
		return bunpostgres.Open(ctx, dsn)
	case strings.HasPrefix(lower, "mysql://"), bunmysql.IsNativeDSN(dsn):
		return bunmysql.Open(ctx, dsn)
	case strings.HasPrefix(lower, "sqlite:"):
		return bunsqlite.Open(ctx, dsn)
	}
	scheme := "it"
	if i := strings.Index(dsn, "://"); i > 0 && i < 20 {
		scheme = fmt.Sprintf("scheme %q", dsn[:i])
	}
	return nil, fmt.Errorf("bunstore: open: unsupported DSN: %s is none of the accepted forms: %s", scheme, opener.DSNForms)
}
