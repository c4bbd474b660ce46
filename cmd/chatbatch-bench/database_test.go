package main

import (
	"path/filepath"
	"testing"
	"time"
)

// TestRunRetriesSQLiteBusy: a baseline's statement that SQLite's busy
// handler gives up on (another connection holds the write lock past
// busy_timeout) runs again, and is written once, when the lock is free.
func TestRunRetriesSQLiteBusy(t *testing.T) {
	dsn := "sqlite:file:" + filepath.Join(t.TempDir(), "busy.db") + "?_pragma=busy_timeout(100)"
	d, err := openDatabase(t.Context(), "sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	ctx := t.Context()
	if _, err := d.sql.ExecContext(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	holder, err := d.sql.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := holder.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	// Held for 2.5 busy timeouts: the first two tries give up, and a retry
	// (of busyRetries, 4 timeouts in all) gets in.
	released := make(chan error, 1)
	go func() {
		time.Sleep(250 * time.Millisecond)
		_, err := holder.ExecContext(ctx, "COMMIT")
		released <- err
	}()
	if err := d.run(ctx, statement{query: "INSERT INTO t (id) VALUES (?)", args: []any{1}}); err != nil {
		t.Fatalf("run while another connection held the lock past busy_timeout: %v", err)
	}
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	if err := d.run(ctx, statement{query: "SELECT count(*) FROM t", count: true, want: 1}); err != nil {
		t.Fatalf("rows written: %v", err)
	}
	if !sqliteBusy(errBusyExample) || sqliteBusy(nil) || sqliteBusy(errOther) {
		t.Error("sqliteBusy misreads an error")
	}
}

var (
	errBusyExample = errorString("database is locked (5) (SQLITE_BUSY)")
	errOther       = errorString("UNIQUE constraint failed: t.id (2067)")
)

type errorString string

func (e errorString) Error() string { return string(e) }
