package bunstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/schema"

	"github.com/chatbatch/chatbatch/adapters/bunstore/internal/sqltext"
	"github.com/chatbatch/chatbatch/store"
)

// Bulk inserts are split into statements of at most maxRowsPerInsert rows
// and about maxStatementBytes of values. bun inlines values into the SQL
// text, so the statement's size is what meets a limit: MySQL's
// max_allowed_packet is 16–64 MB by default, and escaping can at most
// double the estimate below.
const (
	maxRowsPerInsert  = 500
	maxStatementBytes = 4 << 20
)

const messageColumns = "app_id, id, room_id, receiver, sender, type, text, extra, fields, batch_id, idx, created_at"

// SaveMessages implements store.Messages with multi-row INSERTs that skip
// IDs already stored (ON CONFLICT DO NOTHING; on MySQL ON DUPLICATE KEY
// UPDATE with a no-op). Repeated IDs within msgs are reduced to their first
// occurrence first. When msgs needs several statements they run in one
// transaction, so a failed call stores nothing. On PostgreSQL (pgx) it is
// always one statement, the columns bound as arrays. The first attempt
// assumes the IDs are new (see saveMessages).
func (s *Store) SaveMessages(ctx context.Context, app string, msgs []store.Message) error {
	const op = "save messages"
	if err := s.full(ctx, op); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	seen := make(map[string]struct{}, len(msgs))
	distinct := make([]store.Message, 0, len(msgs))
	fields := make([]nullString, 0, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		if _, dup := seen[m.ID]; dup {
			continue
		}
		seen[m.ID] = struct{}{}
		f, err := checkMessage(app, m)
		if err != nil {
			return fmt.Errorf("bunstore: %s: message %q: %w", op, m.ID, err)
		}
		distinct = append(distinct, *m)
		fields = append(fields, f)
	}
	// New messages are the rule and a re-run chunk the exception, so the
	// first attempt is a plain INSERT, which costs the database less than
	// one that handles conflicts; only if it meets a stored ID is the
	// write repeated skipping stored IDs.
	err := s.saveMessages(ctx, app, distinct, fields, false)
	if err != nil && isUniqueViolation(err) && ctx.Err() == nil {
		err = s.saveMessages(ctx, app, distinct, fields, true)
	}
	return s.fail(ctx, op, err)
}

// saveMessages writes msgs (distinct IDs, checked) in one statement, or
// in one transaction of several; skipStored makes it skip IDs already
// stored instead of failing on them.
func (s *Store) saveMessages(ctx context.Context, app string, msgs []store.Message, fields []nullString, skipStored bool) error {
	if s.pgx {
		// One statement, however many messages: no transaction needed.
		return s.pgSaveMessages(ctx, app, msgs, fields, skipStored)
	}
	rows := make([]messageRow, len(msgs))
	sizes := make([]int, len(msgs))
	for i := range msgs {
		rows[i], sizes[i] = newMessageRow(app, &msgs[i], fields[i])
	}
	conflictKey := ""
	if skipStored {
		conflictKey = "(app_id, id)"
	}
	parts := rowParts(sizes)
	var prepared *sql.Stmt
	if !skipStored && slices.ContainsFunc(parts, func(p [2]int) bool { return p[1]-p[0] == maxRowsPerInsert }) {
		prepared = s.preparedMessageInsert(ctx)
	}
	save := func(ctx context.Context, tx *sql.Tx, db bun.IConn) error {
		for _, p := range parts {
			part := rows[p[0]:p[1]]
			var err error
			if prepared != nil && len(part) == maxRowsPerInsert {
				st := prepared
				if tx != nil {
					st = tx.StmtContext(ctx, prepared) // closed with tx
				}
				_, err = st.ExecContext(ctx, messageArgs(s.kind, part)...)
			} else {
				_, err = db.ExecContext(ctx, "?", bulkInserts(s, s.messages, messageColumns, conflictKey, part, sizes[p[0]:p[1]])[0])
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	if len(parts) == 1 {
		return save(ctx, nil, s.db)
	}
	return s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error { return save(ctx, tx.Tx, tx) })
}

// preparedMessageInsert returns the INSERT of maxRowsPerInsert new
// messages with bind parameters, prepared on the first call (nil on
// PostgreSQL, which copies, or if preparing failed: the caller then
// writes the values into the SQL as for any other part). On SQLite and
// MySQL/MariaDB a statement of 500 rows with its values in the text is
// parsed anew on every call: in a profile of worker (c) on SQLite the
// parse was 40 % of the write's CPU. database/sql prepares the statement
// once on each connection of the pool and keeps it, so a full chunk's
// messages are bound and executed, never parsed
// (docs/benchmarks.md, "Prepared message inserts").
func (s *Store) preparedMessageInsert(ctx context.Context) *sql.Stmt {
	if s.kind == dialect.PG {
		return nil
	}
	s.msgInsert.mu.Lock()
	defer s.msgInsert.mu.Unlock()
	if s.msgInsert.stmt == nil {
		row := "(" + strings.Repeat("?, ", messageColumnCount-1) + "?)"
		q := "INSERT INTO " + s.messages + " (" + messageColumns + ") VALUES " + strings.Repeat(row+", ", maxRowsPerInsert-1) + row
		st, err := s.db.DB.PrepareContext(ctx, q)
		if err != nil {
			return nil // the table may not exist yet: the inline statement says so
		}
		s.msgInsert.stmt = st
	}
	return s.msgInsert.stmt
}

// messageColumnCount is how many columns messageColumns names.
var messageColumnCount = strings.Count(messageColumns, ",") + 1

// messageArgs are rows' values for the prepared INSERT, as messageRow
// writes them into SQL: the same strings, NULLs and time text, so that a
// row reads back the same whichever way it was written.
//
// A value in an []any is boxed, an allocation each; the messages of a
// chunk share their app, sender, type, batch and usually their time and
// extra, so a value equal to the previous row's reuses its box: for 500
// messages, 2,255 allocations instead of 6,241 and 0.17 instead of
// 0.6 ms (BenchmarkMessageRows/messageArgs).
func messageArgs(kind dialect.Name, rows []messageRow) []any {
	args := make([]any, 0, messageColumnCount*len(rows))
	var app, sender, typ, batch, lastExtra, at any
	var lastAt time.Time
	same := func(box *any, s string) any {
		if v, ok := (*box).(string); !ok || v != s {
			*box = s
		}
		return *box
	}
	for _, r := range rows {
		m := r.m
		var extra, fields any
		if m.Extra != nil {
			if v, ok := lastExtra.(string); !ok || v != string(m.Extra) {
				lastExtra = string(m.Extra)
			}
			extra = lastExtra
		}
		if r.fields.valid {
			fields = r.fields.s
		}
		if at == nil || !m.CreatedAt.Equal(lastAt) {
			at, lastAt = toDB(m.CreatedAt).text(kind), m.CreatedAt
		}
		args = append(args, same(&app, r.app), m.ID, m.RoomID, m.Receiver, same(&sender, m.Sender), same(&typ, m.Type), m.Text,
			extra, fields, same(&batch, m.BatchID), int64(m.Index), at)
	}
	return args
}

// checkMessage refuses what the database cannot store as given and
// returns m's Fields encoded.
func checkMessage(app string, m *store.Message) (nullString, error) {
	if unstorable(app, m.ID, m.RoomID, m.Receiver, m.Sender, m.Type, m.Text, m.BatchID) || bytes.IndexByte(m.Extra, 0) >= 0 {
		return nullString{}, errors.New("contains a NUL byte or invalid UTF-8, which the database's text columns cannot hold")
	}
	if m.CreatedAt.IsZero() {
		return nullString{}, errors.New("CreatedAt is the zero time")
	}
	return encodeFields(m.Fields)
}

// messageRow is a message (checked, with its Fields encoded) as the
// values of messageColumns. It writes them into the SQL itself, rather
// than as a row of values that bun writes one by one: a statement's 500
// messages are 6,000 values, each boxed into an interface and written
// through bun's generic appender: half of the 0.5 ms it took to write
// 500 (BenchmarkMessageRows).
type messageRow struct {
	app    string
	m      *store.Message
	fields nullString
}

// newMessageRow returns m's row and an estimate of its size in SQL.
func newMessageRow(app string, m *store.Message, fields nullString) (messageRow, int) {
	size := 64 + len(app) + len(m.ID) + len(m.RoomID) + len(m.Receiver) + len(m.Sender) + len(m.Type) + len(m.Text) + len(m.Extra) + len(fields.s) + len(m.BatchID)
	return messageRow{app, m, fields}, size
}

// AppendQuery implements schema.QueryAppender, as row does for the same
// values.
func (r messageRow) AppendQuery(gen schema.QueryGen, b []byte) ([]byte, error) {
	m := r.m
	b = append(b, '(')
	for i, v := range [...]string{r.app, m.ID, m.RoomID, m.Receiver, m.Sender, m.Type, m.Text} {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = sqltext.AppendString(gen, b, v)
	}
	b = append(b, ", "...)
	if m.Extra != nil {
		b = sqltext.AppendString(gen, b, string(m.Extra))
	} else {
		b = append(b, "NULL"...)
	}
	b = append(b, ", "...)
	b, _ = r.fields.AppendQuery(gen, b)
	b = append(b, ", "...)
	b = sqltext.AppendString(gen, b, m.BatchID)
	b = append(b, ", "...)
	b = strconv.AppendInt(b, int64(m.Index), 10)
	b = append(b, ", "...)
	b, _ = toDB(m.CreatedAt).AppendQuery(gen, b)
	return append(b, ')'), nil
}

// encodeFields writes Fields as one JSON object with its values verbatim
// (json.Marshal would compact them and escape <, > and &), keys sorted.
// nil is NULL, so that nil and empty come back as they went in.
func encodeFields(f map[string]json.RawMessage) (nullString, error) {
	if f == nil {
		return nullString{}, nil
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range slices.Sorted(maps.Keys(f)) {
		v := f[k]
		if !json.Valid(v) {
			return nullString{}, fmt.Errorf("the value of field %q in Fields is not valid JSON", k)
		}
		if bytes.IndexByte(v, 0) >= 0 || strings.IndexByte(k, 0) >= 0 {
			return nullString{}, errors.New("a key or value in Fields contains a NUL byte")
		}
		if i > 0 {
			b.WriteByte(',')
		}
		key, _ := json.Marshal(k)
		b.Write(key)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return someString(b.String()), nil
}

func decodeFields(s *string) (map[string]json.RawMessage, error) {
	if s == nil {
		return nil, nil
	}
	f := map[string]json.RawMessage{}
	if err := json.Unmarshal([]byte(*s), &f); err != nil {
		return nil, fmt.Errorf("fields column: %w", err)
	}
	return f, nil
}

// bulkInserts splits rows into multi-row INSERT statements under the row
// and size limits, the values written into the SQL text. conflictKey,
// when not empty, makes rows whose key already exists be skipped.
//
// Each statement is written into one buffer sized from the rows' size
// estimates: handing bun a VALUES ? with the rows made it grow its buffer
// from nothing, a statement of 500 messages copied over and over (a tenth
// of the worker's CPU on MySQL in a profile of worker (a)). Run one as
// ExecContext(ctx, "?", st): as an argument, bun copies it once and never
// reads it for placeholders, which it would on a DB with named arguments
// (WithNamedArg), taking ?name and \? inside the values for its own.
func bulkInserts[R schema.QueryAppender](s *Store, table, cols, conflictKey string, rows []R, sizes []int) []bun.Safe {
	head := "INSERT INTO " + table + " (" + cols + ") VALUES "
	tail := ""
	if conflictKey != "" {
		if s.kind == dialect.MySQL {
			// Not INSERT IGNORE: that also turns errors such as a too
			// long value into warnings.
			tail = " ON DUPLICATE KEY UPDATE app_id = app_id"
		} else {
			tail = " ON CONFLICT " + conflictKey + " DO NOTHING"
		}
	}
	gen := s.db.QueryGen()
	var stmts []bun.Safe
	write := func(rows []R, bytes int) {
		// Escaping only grows a value that holds quotes or backslashes.
		b := make([]byte, 0, len(head)+bytes+bytes/8+len(tail))
		b = append(b, head...)
		for i, r := range rows {
			if i > 0 {
				b = append(b, ", "...)
			}
			b, _ = r.AppendQuery(gen, b) // never fails: errors are written into the SQL
		}
		stmts = append(stmts, bun.Safe(append(b, tail...)))
	}
	for _, p := range rowParts(sizes) {
		bytes := 0
		for _, n := range sizes[p[0]:p[1]] {
			bytes += n
		}
		write(rows[p[0]:p[1]], bytes)
	}
	return stmts
}

// rowParts splits rows of the given size estimates into the [start, end)
// ranges of one statement each: at most maxRowsPerInsert rows and, unless
// one row is larger, maxStatementBytes.
func rowParts(sizes []int) [][2]int {
	var parts [][2]int
	start, bytes := 0, 0
	for i := range sizes {
		if i > start && (i-start == maxRowsPerInsert || bytes+sizes[i] > maxStatementBytes) {
			parts = append(parts, [2]int{start, i})
			start, bytes = i, 0
		}
		bytes += sizes[i]
	}
	if start < len(sizes) {
		parts = append(parts, [2]int{start, len(sizes)})
	}
	return parts
}

// RoomMessages returns up to limit messages of room in app, newest first
// (by CreatedAt, then the later save first); limit <= 0 means all. It is
// the read-back helper of storetest.Inspector and of the reference server.
func (s *Store) RoomMessages(ctx context.Context, app, room string, limit int) ([]store.Message, error) {
	const op = "room messages"
	if err := s.full(ctx, op); err != nil {
		return nil, err
	}
	if unstorable(app, room) {
		return []store.Message{}, nil // no such room was ever stored
	}
	q := "SELECT " + messageReadColumns + " FROM " + s.messages + " WHERE app_id = ? AND room_id = ? ORDER BY created_at DESC, seq DESC"
	args := []any{app, room}
	if limit > 0 {
		q += " LIMIT ?"
		args = append(args, limit)
	}
	out, err := s.readMessages(ctx, app, q, args...)
	return out, s.fail(ctx, op, err)
}

// GetMessages implements store.MessageReader: the messages among ids, by
// the (app_id, id) key, maxRowsPerInsert IDs a statement.
func (s *Store) GetMessages(ctx context.Context, app string, ids []string) ([]store.Message, error) {
	const op = "get messages"
	if err := s.full(ctx, op); err != nil {
		return nil, err
	}
	var stored []string
	for _, id := range ids {
		if !unstorable(app, id) {
			stored = append(stored, id)
		}
	}
	out := []store.Message{}
	for part := range slices.Chunk(stored, maxRowsPerInsert) {
		ms, err := s.readMessages(ctx, app, "SELECT "+messageReadColumns+" FROM "+s.messages+" WHERE app_id = ? AND id IN (?)", app, bun.List(part))
		if err != nil {
			return nil, s.fail(ctx, op, err)
		}
		out = append(out, ms...)
	}
	return out, nil
}

// DeleteMessages implements store.MessageDeleter, by the (app_id, id)
// key, maxRowsPerInsert IDs a statement.
func (s *Store) DeleteMessages(ctx context.Context, app string, ids []string) error {
	const op = "delete messages"
	if err := s.full(ctx, op); err != nil {
		return err
	}
	var stored []string
	for _, id := range ids {
		if !unstorable(app, id) {
			stored = append(stored, id)
		}
	}
	for part := range slices.Chunk(stored, maxRowsPerInsert) {
		if _, err := s.db.ExecContext(ctx, "DELETE FROM "+s.messages+" WHERE app_id = ? AND id IN (?)", app, bun.List(part)); err != nil {
			return s.fail(ctx, op, err)
		}
	}
	return nil
}

// messageReadColumns are the columns readMessages scans.
const messageReadColumns = "id, room_id, receiver, sender, type, text, extra, fields, batch_id, idx, created_at"

// readMessages runs q, which selects messageReadColumns of app's messages.
func (s *Store) readMessages(ctx context.Context, app, q string, args ...any) ([]store.Message, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []store.Message{}
	for rows.Next() {
		m := store.Message{AppID: app}
		var extra, fields *string
		var created dbTime
		if err := rows.Scan(&m.ID, &m.RoomID, &m.Receiver, &m.Sender, &m.Type, &m.Text, &extra, &fields, &m.BatchID, &m.Index, &created); err != nil {
			return nil, err
		}
		if extra != nil {
			m.Extra = json.RawMessage(*extra)
		}
		if m.Fields, err = decodeFields(fields); err != nil {
			return nil, err
		}
		m.CreatedAt = created.t
		out = append(out, m)
	}
	return out, rows.Err()
}
