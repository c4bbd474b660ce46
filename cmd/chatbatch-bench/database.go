package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"

	"github.com/chatbatch/chatbatch/adapters/bunstore/bunopen"
)

// database is one database under test.
type database struct {
	name    string // postgres, mysql, sqlite
	dsn     string // as given (bunstore.Open's forms); for pgx on PostgreSQL
	bun     *bun.DB
	sql     *sql.DB
	version string
}

func openDatabase(ctx context.Context, name, dsn string) (*database, error) {
	db, err := bunopen.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	d := &database{name: name, dsn: dsn, bun: db, sql: db.DB}
	var q string
	switch name {
	case "postgres":
		q = "SHOW server_version"
	case "mysql":
		q = "SELECT VERSION()"
	default:
		q = "SELECT sqlite_version()"
	}
	if err := d.sql.QueryRowContext(ctx, q).Scan(&d.version); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: server version: %w", name, err)
	}
	return d, nil
}

func (d *database) close() { d.bun.Close() }

// analyze updates the planner statistics of table.
func (d *database) analyze(ctx context.Context, table string) error {
	q := "ANALYZE " + table
	if d.name == "mysql" {
		q = "ANALYZE TABLE " + table
	}
	_, err := d.sql.ExecContext(ctx, q)
	return err
}

// settle brings a freshly loaded table to the state a deployment's is in
// once autovacuum has visited it: planner statistics and, on PostgreSQL,
// the visibility map set (VACUUM (ANALYZE)), so that the send-time
// check's index-only probes read the index alone, as they do on a
// directory that is not brand new, instead of visiting each row's heap
// page — and so that autovacuum does not do it in the middle of some
// contender's measured span.
func (d *database) settle(ctx context.Context, table string) error {
	if d.name != "postgres" {
		return d.analyze(ctx, table)
	}
	_, err := d.sql.ExecContext(ctx, "VACUUM (ANALYZE) "+table)
	return err
}

// label names the database in the table: the server's own name for MySQL
// (MariaDB or MySQL).
func (d *database) label() string {
	if d.name == "mysql" && strings.Contains(strings.ToLower(d.version), "mariadb") {
		return "mariadb"
	}
	return d.name
}

// placeholders returns "(…), (…)" for rows×cols bind parameters.
func (d *database) placeholders(rows, cols int) string {
	var b strings.Builder
	n := 0
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := range cols {
			if c > 0 {
				b.WriteString(", ")
			}
			n++
			if d.name == "postgres" {
				b.WriteString("$" + strconv.Itoa(n))
			} else {
				b.WriteByte('?')
			}
		}
		b.WriteByte(')')
	}
	return b.String()
}

// param is the n-th (1-based) bind parameter of a statement.
func (d *database) param(n int) string {
	if d.name == "postgres" {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

// timeArg is a time as bunstore stores it: time.Time where the driver
// maps it to the column type (timestamptz, DATETIME(6) in UTC), the
// fixed-width UTC text on SQLite.
func (d *database) timeArg(t time.Time) any {
	t = t.UTC().Truncate(time.Microsecond)
	if d.name == "sqlite" {
		return t.Format("2006-01-02 15:04:05.000000") + "Z"
	}
	return t
}

// parseTime reads a time column as the drivers return it.
func parseTime(v any) (time.Time, error) {
	switch t := v.(type) {
	case time.Time:
		return t.UTC(), nil
	case []byte:
		return parseTime(string(t))
	case string:
		for _, layout := range []string{"2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999", time.RFC3339Nano} {
			if p, err := time.Parse(layout, t); err == nil {
				return p.UTC(), nil
			}
		}
		return time.Time{}, fmt.Errorf("cannot parse time %q", t)
	case nil:
		return time.Time{}, errors.New("time is NULL")
	default:
		return time.Time{}, fmt.Errorf("unexpected time value %T", v)
	}
}

// statement is one SQL statement with its bind arguments. A statement
// with count set is a query of one number, which must come out as want.
type statement struct {
	query string
	args  []any
	count bool
	want  int64
}

// job is statements one goroutine runs in order.
type job []statement

// insertStatements splits rows into multi-row INSERTs of at most per rows.
func (d *database) insertStatements(table string, cols []string, rows [][]any, per int) []statement {
	var stmts []statement
	queries := map[int]string{}
	for lo := 0; lo < len(rows); lo += per {
		hi := min(lo+per, len(rows))
		q, ok := queries[hi-lo]
		if !ok {
			q = "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES " + d.placeholders(hi-lo, len(cols))
			queries[hi-lo] = q
		}
		args := make([]any, 0, (hi-lo)*len(cols))
		for _, r := range rows[lo:hi] {
			args = append(args, r...)
		}
		stmts = append(stmts, statement{query: q, args: args})
	}
	return stmts
}

// run runs st through database/sql.
//
// On SQLite a statement that SQLite's busy handler gave up on (it waited
// busy_timeout for the write lock while other writers got it first; the
// statement wrote nothing) runs again, up to busyRetries times: the
// baselines' ten writers on SQLite's one lock once starved one of them
// for the whole 10 s, and the baseline's rate is what it takes to write
// the rows, not whether SQLite's sleeps were fair to each of them.
func (d *database) run(ctx context.Context, st statement) error {
	for try := 0; ; try++ {
		err := d.runOnce(ctx, st)
		if err == nil || d.name != "sqlite" || try == busyRetries || ctx.Err() != nil || !sqliteBusy(err) {
			return err
		}
	}
}

// busyRetries is how many times run runs a statement again on SQLITE_BUSY.
const busyRetries = 3

// sqliteBusy reports whether err is SQLite's SQLITE_BUSY ("database is
// locked").
func sqliteBusy(err error) bool {
	return err != nil && strings.Contains(err.Error(), "SQLITE_BUSY")
}

func (d *database) runOnce(ctx context.Context, st statement) error {
	if !st.count {
		_, err := d.sql.ExecContext(ctx, st.query, st.args...)
		return err
	}
	var n int64
	if err := d.sql.QueryRowContext(ctx, st.query, st.args...).Scan(&n); err != nil {
		return err
	}
	if n != st.want {
		return fmt.Errorf("%.60s…: %d, want %d", st.query, n, st.want)
	}
	return nil
}

// runJobs runs jobs on conc goroutines through database/sql.
func (d *database) runJobs(ctx context.Context, jobs []job, conc int) error {
	ch := make(chan job)
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range conc {
		wg.Go(func() {
			for j := range ch {
				for _, st := range j {
					if err := d.run(ctx, st); err != nil {
						once.Do(func() { firstErr = err; cancel() })
						break
					}
				}
			}
		})
	}
feed:
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// copyJob is what one pgx connection copies, in order.
type copyJob []copyTable

type copyTable struct {
	table string
	cols  []string
	rows  [][]any
}

// pgConns opens n pgx connections (PostgreSQL only).
func (d *database) pgConns(ctx context.Context, n int) ([]*pgx.Conn, func(), error) {
	var conns []*pgx.Conn
	closeAll := func() {
		for _, c := range conns {
			c.Close(context.WithoutCancel(ctx))
		}
	}
	for range n {
		c, err := pgx.Connect(ctx, d.dsn)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("pgx connect: %w", err)
		}
		conns = append(conns, c)
	}
	return conns, closeAll, nil
}

// runCopies runs jobs[i] on conns[i], concurrently.
func runCopies(ctx context.Context, conns []*pgx.Conn, jobs []copyJob) error {
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			for _, t := range j {
				if len(t.rows) == 0 {
					continue
				}
				if _, err := conns[i].CopyFrom(ctx, pgx.Identifier{t.table}, t.cols, pgx.CopyFromRows(t.rows)); err != nil {
					errs[i] = fmt.Errorf("copy into %s: %w", t.table, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// load writes seed rows as fast as the database takes them: COPY on
// PostgreSQL, multi-row INSERTs elsewhere. Not measured.
func (d *database) load(ctx context.Context, table string, cols []string, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	if d.name == "postgres" {
		conns, closeAll, err := d.pgConns(ctx, 1)
		if err != nil {
			return err
		}
		defer closeAll()
		return runCopies(ctx, conns, []copyJob{{{table, cols, rows}}})
	}
	conc := 4
	if d.name == "sqlite" {
		conc = 1 // one writer at a time anyway
	}
	per := 30_000 / len(cols) / 10 * 10 // well under every bind-parameter limit
	var jobs []job
	for _, st := range d.insertStatements(table, cols, rows, min(per, 2000)) {
		jobs = append(jobs, job{st})
	}
	return d.runJobs(ctx, jobs, conc)
}

// countMessages counts the rows of batchID in a messages table, through
// the (app_id, id) index: message IDs are batchID-<index>. It returns the
// rows and the distinct IDs.
func (d *database) countMessages(ctx context.Context, table, batchID string) (rows, distinct int, err error) {
	q := "SELECT COUNT(*), COUNT(DISTINCT id) FROM " + table + " WHERE app_id = " + d.param(1) +
		" AND id >= " + d.param(2) + " AND id < " + d.param(3) + " AND batch_id = " + d.param(4)
	err = d.sql.QueryRowContext(ctx, q, appID, batchID+"-", batchID+".", batchID).Scan(&rows, &distinct)
	return rows, distinct, err
}
