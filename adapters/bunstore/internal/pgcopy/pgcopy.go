// Package pgcopy lets bunpostgres give bunstore PostgreSQL's COPY
// through pgx without bunstore importing pgx: bunstore serves every
// database, and importing pgx there would put it in the go.sum of hosts
// on MySQL or SQLite. bunpostgres, which links pgx anyway, registers the
// one function bunstore needs when it is linked, the way database/sql
// drivers register themselves.
package pgcopy

import (
	"context"
	"io"
	"sync/atomic"
)

// Func runs sql, a COPY … FROM STDIN, on the pgx connection driverConn
// (what sql.Conn.Raw passes: a *stdlib.Conn) with data as its input, in
// the format sql names; all rows are copied or, on an error, none. It
// returns how many rows were copied.
type Func func(ctx context.Context, driverConn any, sql string, data io.Reader) (int64, error)

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
