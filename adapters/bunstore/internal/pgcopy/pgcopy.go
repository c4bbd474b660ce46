// Package pgcopy lets bunpostgres give bunstore PostgreSQL's COPY
// through pgx without bunstore importing pgx: bunstore serves every
// database, and importing pgx there would put it in the go.sum of hosts
// on MySQL or SQLite. bunpostgres, which links pgx anyway, registers the
// one function bunstore needs when it is linked, the way database/sql
// drivers register themselves.
package pgcopy

import (
	"context"
	"sync/atomic"
)

// Func copies rows into the columns cols of table (an unquoted,
// lower-case identifier) on the pgx connection driverConn (what
// sql.Conn.Raw passes: a *stdlib.Conn), in one COPY: all rows or, on an
// error, none. next returns one row's values at a time, and nil, nil
// after the last. It returns how many rows were copied.
type Func func(ctx context.Context, driverConn any, table string, cols []string, next func() ([]any, error)) (int64, error)

var registered atomic.Pointer[Func]

// Register makes f the copier; bunpostgres calls it from its init.
func Register(f Func) { registered.Store(&f) }

// Registered returns the copier, or nil when bunpostgres is not linked.
func Registered() Func {
	if f := registered.Load(); f != nil {
		return *f
	}
	return nil
}
