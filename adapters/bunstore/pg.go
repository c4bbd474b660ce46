package bunstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/chatbatch/chatbatch/adapters/bunstore/internal/pgcopy"
	"github.com/chatbatch/chatbatch/store"
)

// PostgreSQL through pgx (github.com/jackc/pgx/v5/stdlib, which
// bunpostgres.Open uses) gets its own statements for the worker's hot path and the bulk
// writes: bind parameters instead of values inlined into SQL text, whole
// columns passed as arrays and expanded with unnest (so 500 rows are 12
// parameters, not 150 KB of SQL to parse), and data-modifying WITH
// clauses that do in one round trip what takes a transaction of several
// statements elsewhere. They go to database/sql directly, bypassing bun's
// query formatting. Other drivers (lib/pq, bun's pgdriver) take the
// portable path.
//
// The look-ups probe the primary keys once per ID through scalar
// subqueries rather than joining the ID list to the tables: a join's plan
// depends on table statistics, and on a table whose statistics are
// missing or stale (a fresh deployment that bulk-loaded its users before
// autovacuum ran) PostgreSQL may hash the whole table for a few hundred
// IDs. A scalar subquery is never turned into a join or a hashed subplan,
// so the plan is index probes whatever the statistics say.
type pgStatements struct {
	startChunk, completeChunk, insertChunks string
	saveMessages, saveNewMessages           string
	copyMessages                            string // COPY … FROM STDIN (FORMAT binary) into the messages (pgCopyRows)
	directRooms, pairMembers                string
	recordReads                             string
	absent                                  map[string]string // by table + "." + column
}

func (s *Store) preparePG() {
	q := &s.pg
	q.startChunk = "WITH s AS (UPDATE " + s.chunks + " SET started_at = COALESCE(started_at, $4), attempts = attempts + 1, lease_until = $5" +
		" WHERE app_id = $1 AND batch_id = $2 AND chunk_no = $3 AND done = FALSE AND (started_at IS NOT NULL OR paused = FALSE)" +
		" RETURNING " + chunkReadColumns + ")" +
		" SELECT " + prefixed("s.", chunkReadColumns) + ", " + prefixed("b.", batchReadColumns) +
		" FROM s JOIN " + s.batches + " b ON b.app_id = $1 AND b.id = $2"
	// finished_at first, as in the portable CompleteChunk.
	q.completeChunk = "WITH c AS (UPDATE " + s.chunks + " SET done = TRUE, outcomes = $4" +
		" WHERE app_id = $1 AND batch_id = $2 AND chunk_no = $3 AND done = FALSE AND size = $5 RETURNING 1)" +
		" UPDATE " + s.batches + " SET finished_at = CASE WHEN chunks_done + 1 = chunks THEN $6 ELSE finished_at END," +
		" sent = sent + $7, failed = failed + $8, canceled = canceled + $9, push_failed = push_failed + $10, chunks_done = chunks_done + 1" +
		" WHERE app_id = $1 AND id = $2 AND EXISTS (SELECT 1 FROM c)" +
		" RETURNING " + batchReadColumns
	q.saveMessages = "INSERT INTO " + s.messages + " (" + messageColumns + ")" +
		" SELECT $1, u.id, u.room_id, u.receiver, u.sender, u.type, u.text, u.extra, u.fields, u.batch_id, u.idx, u.created_at" +
		" FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::int4[], $12::timestamptz[])" +
		" WITH ORDINALITY AS u(id, room_id, receiver, sender, type, text, extra, fields, batch_id, idx, created_at, ord)" +
		" ORDER BY u.ord"
	q.saveNewMessages = q.saveMessages
	q.copyMessages = "COPY " + s.messages + " (" + messageColumns + ") FROM STDIN (FORMAT binary)"
	q.saveMessages += " ON CONFLICT (app_id, id) DO NOTHING"
	q.insertChunks = "INSERT INTO " + s.chunks + " (" + chunkColumns + ")" +
		" SELECT $1, $2, u.no, u.start, u.size, u.recipients, u.not_before" +
		" FROM unnest($3::int4[], $4::int4[], $5::int4[], $6::text[], $7::timestamptz[]) AS u(no, start, size, recipients, not_before)"
	// One round of DirectRooms: for each receiver ($3) with the pair's
	// room ID ($4), whether the receiver is a user, how many of the pair
	// are members of that room, and whether the room exists; rooms that
	// do not exist are created, with the pair as members, for the
	// receivers allowed to ($5: one per room ID), in room ID order so
	// that concurrent creators never wait for each other in a cycle.
	// The room itself is looked up only when the pair are not both its
	// members (members reference rooms: if they are, it exists). Users
	// the directory cache knows ($6: the sender, $7: each receiver) are
	// not looked up.
	q.directRooms = "WITH q AS (SELECT q.*, CASE WHEN q.members = q.pair_size THEN 1" +
		" ELSE (SELECT 1 FROM " + s.rooms + " r WHERE r.app_id = $1 AND r.id = q.room) END AS room_ok" +
		" FROM (SELECT q.ord, q.b, q.room, q.may_create, CASE WHEN q.b = $2 THEN 1 ELSE 2 END AS pair_size," +
		" CASE WHEN q.user_known THEN 1 ELSE (SELECT 1 FROM " + s.users + " u WHERE u.app_id = $1 AND u.id = q.b) END AS user_ok," +
		" (SELECT count(*) FROM " + s.members + " m WHERE m.app_id = $1 AND m.room_id = q.room AND m.user_id IN ($2, q.b)) AS members" +
		// OFFSET 0 keeps the inner query from being merged into the outer
		// one, which would compute members again inside the CASE.
		" FROM unnest($3::text[], $4::text[], $5::bool[], $7::bool[]) WITH ORDINALITY AS q(b, room, may_create, user_known, ord) OFFSET 0) q)," +
		" a AS (SELECT CASE WHEN $6 THEN 1 ELSE (SELECT 1 FROM " + s.users + " WHERE app_id = $1 AND id = $2) END AS ok)," +
		" created AS (INSERT INTO " + s.rooms + " (app_id, id)" +
		" SELECT $1, q.room FROM q, a WHERE a.ok IS NOT NULL AND q.may_create AND q.user_ok IS NOT NULL AND q.room_ok IS NULL" +
		" ORDER BY q.room ON CONFLICT DO NOTHING RETURNING id)," +
		" joined AS (INSERT INTO " + s.members + " (app_id, room_id, user_id)" +
		" SELECT $1, c.id, v.u FROM created c JOIN q ON q.room = c.id AND q.may_create" +
		" CROSS JOIN LATERAL (SELECT $2::text AS u UNION SELECT q.b) v ORDER BY c.id, v.u ON CONFLICT DO NOTHING)" +
		" SELECT q.ord, (SELECT ok FROM a) IS NOT NULL, q.user_ok IS NOT NULL, q.members, q.room_ok IS NOT NULL, c.id IS NOT NULL" +
		" FROM q LEFT JOIN created c ON c.id = q.room AND q.may_create"
	// For the pairs of $2 (rooms) and $3 (receivers), one row per member
	// of the pair's room who is the sender ($4) or the receiver, with the
	// pair's ordinal. The LATERAL subquery's OFFSET 0 keeps it
	// from being pulled up into a join, so the plan is a range probe of
	// the members' primary key per pair whatever the statistics say, as
	// with the scalar subqueries above.
	q.pairMembers = "SELECT q.ord FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS q(room, b, ord)" +
		" CROSS JOIN LATERAL (SELECT 1 FROM " + s.members + " m WHERE m.app_id = $1 AND m.room_id = q.room" +
		" AND (m.user_id = $4 OR m.user_id = q.b) OFFSET 0) m"
	// RecordReads in one statement: the chunks locked in (batch, chunk)
	// order (a chunk pruned meanwhile drops its reads), the reads of the
	// locked chunks inserted skipping recorded ones, and each chunk's
	// read_count moved by its rows inserted; the sum is returned. Reads
	// of a chunk are inserted only under its lock, so concurrent calls
	// never wait on each other's inserts in a cycle.
	q.recordReads = "WITH r AS (SELECT * FROM unnest($2::text[], $3::int4[], $4::int4[], $5::timestamptz[]) AS r(batch_id, chunk_no, idx, read_at))," +
		" locked AS (SELECT c.batch_id, c.chunk_no FROM " + s.chunks + " c WHERE c.app_id = $1 AND (c.batch_id, c.chunk_no) IN (SELECT batch_id, chunk_no FROM r)" +
		" ORDER BY c.batch_id, c.chunk_no FOR UPDATE)," +
		" ins AS (INSERT INTO " + s.reads + " (app_id, batch_id, idx, read_at) SELECT $1, r.batch_id, r.idx, r.read_at FROM r JOIN locked l ON l.batch_id = r.batch_id AND l.chunk_no = r.chunk_no" +
		" ORDER BY r.batch_id, r.idx ON CONFLICT DO NOTHING RETURNING batch_id, idx)," +
		" n AS (SELECT r.batch_id, r.chunk_no, count(*) AS n FROM ins JOIN r ON r.batch_id = ins.batch_id AND r.idx = ins.idx GROUP BY r.batch_id, r.chunk_no)," +
		" upd AS (UPDATE " + s.chunks + " c SET read_count = c.read_count + n.n FROM n WHERE c.app_id = $1 AND c.batch_id = n.batch_id AND c.chunk_no = n.chunk_no RETURNING n.n)" +
		" SELECT COALESCE(SUM(n), 0) FROM upd"
	// The IDs of $2 that are not in the table: a look-up returns the
	// few that are missing rather than the many that exist.
	q.absent = map[string]string{}
	for _, t := range []struct{ table, col string }{{s.users, "id"}, {s.rooms, "id"}} {
		q.absent[t.table+"."+t.col] = "SELECT q.id FROM unnest($2::text[]) AS q(id)" +
			" WHERE (SELECT 1 FROM " + t.table + " t WHERE t.app_id = $1 AND t." + t.col + " = q.id LIMIT 1) IS NULL"
	}
}

// pgStartChunk is StartChunk's one round trip: it returns nil, nil, nil
// when the chunk was not started by this call (missing or done before),
// for the caller to read it.
func (s *Store) pgStartChunk(ctx context.Context, p *store.StartChunkParams) (*store.Batch, *store.Chunk, error) {
	ref := p.Ref
	bs, cs := newBatchScan(ref.AppID, ref.BatchID), &chunkScan{c: store.Chunk{ChunkRef: ref}}
	dest := append(cs.dest(), bs.dest()...)
	b, c, err := scanStarted(s.db.DB.QueryRowContext(ctx, s.pg.startChunk, ref.AppID, ref.BatchID, ref.No, pgTime(p.At), pgNullTime(p.LeaseUntil)), bs, cs, dest)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, nil
	}
	return b, c, err
}

// pgCompleteChunk is CompleteChunk in one statement.
func (s *Store) pgCompleteChunk(ctx context.Context, p *store.CompleteChunkParams, outcomes string, n counts) (*store.Batch, error) {
	ref := p.Ref
	bs := newBatchScan(ref.AppID, ref.BatchID)
	err := s.db.DB.QueryRowContext(ctx, s.pg.completeChunk, ref.AppID, ref.BatchID, ref.No, outcomes, len(p.Outcomes), pgTime(p.At), n.sent, n.failed, n.canceled, n.pushFailed).
		Scan(bs.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, s.whyNotCompleted(ctx, s.db, ref, len(p.Outcomes))
	}
	if err != nil {
		return nil, err
	}
	return bs.batch(), nil
}

// pgRecordReads is RecordReads in one statement; reads are distinct by
// (batch, index) and storable.
func (s *Store) pgRecordReads(ctx context.Context, app string, reads []store.Read) (int, error) {
	n := len(reads)
	batches, chunks, idx, at := make([]string, n), make([]int32, n), make([]int32, n), make([]time.Time, n)
	for i, r := range reads {
		batches[i], chunks[i], idx[i], at[i] = r.BatchID, int32(r.Chunk), int32(r.Index), pgTime(r.At)
	}
	var recorded int64
	err := s.db.DB.QueryRowContext(ctx, s.pg.recordReads, app, batches, chunks, idx, at).Scan(&recorded)
	return int(recorded), err
}

// pgTime is a time as the store keeps it (UTC, microseconds), for pgx.
func pgTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// pgNullTime is pgTime, with the zero time as NULL.
func pgNullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := pgTime(t)
	return &u
}

// pgSaveMessages writes msgs (distinct IDs, checked) in one statement;
// skipStored makes it skip IDs already stored instead of failing on them.
func (s *Store) pgSaveMessages(ctx context.Context, app string, msgs []store.Message, fields []nullString, skipStored bool) error {
	if copier := pgcopy.Registered(); copier != nil && !skipStored {
		return s.pgCopyMessages(ctx, copier, app, msgs, fields)
	}
	n := len(msgs)
	ids, rooms, receivers, senders, types, texts, batchIDs := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	extras, fs := make([]*string, n), make([]*string, n)
	idx, created := make([]int32, n), make([]time.Time, n)
	for i := range msgs {
		m := &msgs[i]
		ids[i], rooms[i], receivers[i], senders[i], types[i], texts[i], batchIDs[i] = m.ID, m.RoomID, m.Receiver, m.Sender, m.Type, m.Text, m.BatchID
		if m.Extra != nil {
			e := string(m.Extra)
			extras[i] = &e
		}
		if fields[i].valid {
			fs[i] = &fields[i].s
		}
		idx[i], created[i] = int32(m.Index), pgTime(m.CreatedAt)
	}
	q := s.pg.saveNewMessages
	if skipStored {
		q = s.pg.saveMessages
	}
	_, err := s.db.DB.ExecContext(ctx, q, app, ids, rooms, receivers, senders, types, texts, extras, fs, batchIDs, idx, created)
	return err
}

// pgCopyMessages writes msgs (distinct IDs, checked, assumed new) with
// one COPY, which costs PostgreSQL less per row than an INSERT, however
// it is written: no statement to plan, no rows to project. COPY cannot
// skip stored IDs; if one is stored, the COPY fails as a whole with a
// unique violation and SaveMessages writes again with INSERT … ON
// CONFLICT DO NOTHING. Used when bunpostgres is linked (it registers
// pgx's COPY; see internal/pgcopy).
//
// The rows go in COPY's binary format, written here (pgCopyRows) rather
// than by pgx's CopyFrom, which asks the server for the columns' types
// first (a round trip a COPY) and boxes and encodes every value through
// its type map: 18 % of the worker's Go in a profile of worker (a).
func (s *Store) pgCopyMessages(ctx context.Context, copier pgcopy.Func, app string, msgs []store.Message, fields []nullString) error {
	data := pgCopyRows(app, msgs, fields)
	conn, err := s.db.DB.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		_, err := copier(ctx, dc, s.pg.copyMessages, bytes.NewReader(data))
		return err
	})
}

// pgCopyRows writes msgs as the rows of a COPY … (messageColumns) FROM
// STDIN (FORMAT binary): a header, then for each row its field count and
// each field as a 32-bit length (-1: NULL) and its bytes, in the
// column's binary form — text as its UTF-8 bytes (the connection's
// encoding is UTF-8, and checkMessage refused NUL and invalid UTF-8), idx
// as a 32-bit integer, created_at as microseconds since 2000-01-01 UTC —
// then the trailer (-1). All integers are big-endian.
func pgCopyRows(app string, msgs []store.Message, fields []nullString) []byte {
	const nfields = 12 // messageColumns
	size := len(pgCopyHeader) + 2
	for i := range msgs {
		m := &msgs[i]
		size += 2 + 4*nfields + 4 + 8 + len(app) + len(m.ID) + len(m.RoomID) + len(m.Receiver) + len(m.Sender) + len(m.Type) + len(m.Text) + len(m.Extra) + len(fields[i].s) + len(m.BatchID)
	}
	b := make([]byte, 0, size)
	b = append(b, pgCopyHeader...)
	text := func(b []byte, s string) []byte {
		return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
	}
	null := func(b []byte) []byte { return binary.BigEndian.AppendUint32(b, 0xFFFFFFFF) }
	for i := range msgs {
		m := &msgs[i]
		b = binary.BigEndian.AppendUint16(b, nfields)
		b = text(text(text(text(text(text(text(b, app), m.ID), m.RoomID), m.Receiver), m.Sender), m.Type), m.Text)
		if m.Extra != nil {
			b = append(binary.BigEndian.AppendUint32(b, uint32(len(m.Extra))), m.Extra...)
		} else {
			b = null(b)
		}
		if f := fields[i]; f.valid {
			b = text(b, f.s)
		} else {
			b = null(b)
		}
		b = text(b, m.BatchID)
		b = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b, 4), uint32(int32(m.Index)))
		b = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(b, 8), uint64(pgMicros(m.CreatedAt)))
	}
	return binary.BigEndian.AppendUint16(b, 0xFFFF)
}

// pgCopyHeader opens a binary COPY: the signature, no flags, no header
// extension.
var pgCopyHeader = []byte("PGCOPY\n\xff\r\n\x00" + "\x00\x00\x00\x00" + "\x00\x00\x00\x00")

// pgMicros is t as PostgreSQL's timestamptz holds it: microseconds since
// 2000-01-01 00:00:00 UTC, rounded down (as pgTime truncates).
func pgMicros(t time.Time) int64 {
	const pgEpochUnix = 946684800 // 2000-01-01 00:00:00 UTC
	return (t.Unix()-pgEpochUnix)*1_000_000 + int64(t.Nanosecond()/1000)
}

// pgDirectRoomRound runs one round of DirectRooms in one statement.
func (s *Store) pgDirectRoomRound(ctx context.Context, app, a string, senderKnown bool, pairs []*pairState) error {
	bs, rooms, mayCreate, known := make([]string, len(pairs)), make([]string, len(pairs)), make([]bool, len(pairs)), make([]bool, len(pairs))
	for i, p := range pairs {
		bs[i], rooms[i], mayCreate[i], known[i] = p.b, p.room, p.mayCreate, p.userKnown
	}
	rows, err := s.db.DB.QueryContext(ctx, s.pg.directRooms, app, a, bs, rooms, mayCreate, senderKnown, known)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var ord int
		var l pairLookup
		if err := rows.Scan(&ord, &l.senderOK, &l.userOK, &l.members, &l.roomOK, &l.created); err != nil {
			return err
		}
		if ord < 1 || ord > len(pairs) {
			return fmt.Errorf("direct rooms: row %d of %d", ord, len(pairs))
		}
		pairs[ord-1].settle(a, l)
	}
	return rows.Err()
}

// pgSettlePairsWithRooms settles, in one read-only statement, the pairs
// whose room exists with one or both of them as members. DirectRooms
// runs it before its rounds when the users are known (the sender and,
// for a pair to be settled, its receiver: members need not be users). A
// send to receivers whose rooms exist, which is most of them, ends here.
// Per 500 pairs it costs the server about 60 % of the round statement,
// which counts each pair's members with an aggregate and carries the room
// creation (docs/benchmarks.md); a chunk whose rooms are all new pays for
// it on top of the round.
func (s *Store) pgSettlePairsWithRooms(ctx context.Context, app, a string, pairs []*pairState) error {
	var probe []*pairState
	for _, p := range pairs {
		if p.userKnown {
			probe = append(probe, p)
		}
	}
	if len(probe) == 0 {
		return nil
	}
	rooms, bs := make([]string, len(probe)), make([]string, len(probe))
	for i, p := range probe {
		rooms[i], bs[i] = p.room, p.b
	}
	rows, err := s.db.DB.QueryContext(ctx, s.pg.pairMembers, app, rooms, bs, a)
	if err != nil {
		return err
	}
	defer rows.Close()
	members := make([]int, len(probe))
	for rows.Next() {
		var ord int
		if err := rows.Scan(&ord); err != nil {
			return err
		}
		if ord < 1 || ord > len(probe) {
			return fmt.Errorf("pair members: row %d of %d", ord, len(probe))
		}
		members[ord-1]++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i, p := range probe {
		// A member means the room exists (members reference rooms): it
		// is the pair's, or another pair's if one of them is missing
		// (ErrConflict). With none, the rounds tell a missing room from
		// a room of others.
		if members[i] > 0 {
			p.settle(a, pairLookup{senderOK: true, userOK: true, roomOK: true, members: members[i]})
		}
	}
	return nil
}

// pgInsertChunks writes a new batch's chunk rows in one statement;
// recipients[i] is chunks[i]'s encoded recipients. As in the portable
// path, a chunk's identity is the batch's and its position.
func (s *Store) pgInsertChunks(ctx context.Context, tx bun.Tx, b *store.Batch, chunks []store.Chunk, recipients []string) error {
	n := len(chunks)
	nos, starts, sizes, notBefore := make([]int32, n), make([]int32, n), make([]int32, n), make([]time.Time, n)
	for i := range chunks {
		c := &chunks[i]
		nos[i], starts[i], sizes[i], notBefore[i] = int32(i), int32(c.Start), int32(len(c.Recipients)), pgTime(c.NotBefore)
	}
	_, err := tx.Tx.ExecContext(ctx, s.pg.insertChunks, b.AppID, b.ID, nos, starts, sizes, recipients, notBefore)
	return err
}
