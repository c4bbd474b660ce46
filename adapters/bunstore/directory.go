package bunstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/schema"

	"github.com/chatbatch/chatbatch/adapters/bunstore/internal/sqltext"
	"github.com/chatbatch/chatbatch/store"
)

// Bulk look-ups send bounded lists: PostgreSQL gets one array per 5,000
// IDs (= ANY), the others IN lists of 500. bun inlines the values, so what
// matters is the statement's size, not a bind-parameter limit.
const (
	pgLookupBatch = 5000
	inLookupBatch = 500
)

// MissingUsers implements store.Directory.
func (s *Store) MissingUsers(ctx context.Context, app string, ids []string) ([]string, error) {
	return s.missing(ctx, "missing users", s.users, app, ids)
}

// MissingRooms implements store.Directory.
func (s *Store) MissingRooms(ctx context.Context, app string, ids []string) ([]string, error) {
	return s.missing(ctx, "missing rooms", s.rooms, app, ids)
}

func (s *Store) missing(ctx context.Context, op, table, app string, ids []string) ([]string, error) {
	if err := s.full(ctx, op); err != nil {
		return nil, err
	}
	uniq := dedupe(ids)
	kind := byte(factRoom)
	if table == s.users {
		kind = factUser
	}
	// IDs the directory cache knows exist are not looked up.
	view, err := s.directoryView(ctx, app)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	lookup := uniq
	if view != nil {
		known := view.has(kind, "", uniq)
		lookup = make([]string, 0, len(uniq))
		for i, id := range uniq {
			if !known[i] {
				lookup = append(lookup, id)
			}
		}
	}
	found, err := s.existing(ctx, s.db, table, "id", app, lookup)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	view.add(kind, "", slices.Collect(maps.Keys(found)))
	out := []string{}
	for _, id := range lookup {
		if !found[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// dedupe returns ids without repeats, in order of first appearance.
func dedupe(ids []string) []string {
	seen := make(map[string]struct{}, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}

// existing returns which of ids (distinct) are present in table.col for
// app, in bounded bulk queries.
func (s *Store) existing(ctx context.Context, db bun.IConn, table, col, app string, ids []string) (map[string]bool, error) {
	found := make(map[string]bool, len(ids))
	ids = slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return unstorable(id) })
	if unstorable(app) || len(ids) == 0 {
		return found, nil
	}
	onPool := db == bun.IConn(s.db)
	var lookup func(part []string) (*sql.Rows, error)
	step := inLookupBatch
	// absent: lookup returns the IDs of its part that are not there,
	// rather than those that are (nearly all of them, usually: fewer
	// rows to send and to scan).
	absent := false
	switch {
	case s.pgx && onPool && s.pg.absent[table+"."+col] != "":
		q := s.pg.absent[table+"."+col]
		lookup = func(part []string) (*sql.Rows, error) { return s.db.DB.QueryContext(ctx, q, app, part) }
		step, absent = pgLookupBatch, true
	case s.kind == dialect.PG:
		lookup = func(part []string) (*sql.Rows, error) {
			return db.QueryContext(ctx, "SELECT t."+col+" FROM unnest(?::text[]) AS q(id) JOIN "+table+" t ON t.app_id = ? AND t."+col+" = q.id", pgdialect.Array(part), app)
		}
		step = pgLookupBatch
	default:
		lookup = func(part []string) (*sql.Rows, error) {
			return db.QueryContext(ctx, "SELECT "+col+" FROM "+table+" WHERE app_id = ? AND "+col+" IN (?)", app, sqltext.IDList(part))
		}
	}
	// allThere, where col is the table's key (each ID matches at most one
	// row), counts a part's IDs first: when all are there, as a
	// request's receivers nearly always are, one number comes back
	// instead of every ID, and only a part with IDs missing is read again.
	var allThere func(part []string) (bool, error)
	if !absent && s.kind != dialect.PG && col == "id" && (table == s.users || table == s.rooms) {
		allThere = func(part []string) (bool, error) {
			var n int
			err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+table+" WHERE app_id = ? AND "+col+" IN (?)", app, sqltext.IDList(part)).Scan(&n)
			return n == len(part), err
		}
	}
	parallel := 1
	if onPool && len(ids) >= 2*parallelLookupMin {
		// A request's 10,000 receivers are looked up while the client
		// waits: on the pool, in a few parts at once, so that the
		// database uses more than one core for them.
		parallel = min(maxParallelLookups, len(ids)/parallelLookupMin)
		step = min(step, (len(ids)+parallel-1)/parallel)
	}
	var mu sync.Mutex
	err := forEachPart(slices.Collect(slices.Chunk(ids, step)), parallel, func(part []string) error {
		var got []string
		if allThere != nil {
			all, err := allThere(part)
			if err != nil {
				return err
			}
			if all {
				got = part
			}
		}
		if got == nil {
			rows, err := lookup(part)
			if err != nil {
				return err
			}
			if err := scanStrings(rows, func(id string) { got = append(got, id) }); err != nil {
				return err
			}
		}
		if absent {
			missing := make(map[string]bool, len(got))
			for _, id := range got {
				missing[id] = true
			}
			got = slices.DeleteFunc(slices.Clone(part), func(id string) bool { return missing[id] })
		}
		mu.Lock()
		defer mu.Unlock()
		for _, id := range got {
			found[id] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return found, nil
}

// Large look-ups on the pool run in up to maxParallelLookups parts at
// once, each of at least parallelLookupMin IDs.
const (
	maxParallelLookups = 4
	parallelLookupMin  = 1000
)

// forEachPart calls fn for each part, up to parallel at once, and returns
// the first error.
func forEachPart(parts [][]string, parallel int, fn func(part []string) error) error {
	if parallel <= 1 || len(parts) <= 1 {
		for _, p := range parts {
			if err := fn(p); err != nil {
				return err
			}
		}
		return nil
	}
	sem := make(chan struct{}, parallel)
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = fn(p)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// scanStrings calls fn with each row's single string column and closes rows.
func scanStrings(rows *sql.Rows, fn func(string)) error {
	defer rows.Close()
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return err
		}
		fn(v)
	}
	return rows.Err()
}

// DirectRoom implements store.Directory. The room's ID comes from
// Options.DirectRoomID, so concurrent calls for one pair (in any order)
// compute the same primary key: the first insert wins, the others find the
// room, and there is never a second room for a pair.
func (s *Store) DirectRoom(ctx context.Context, app, a, b string) (string, error) {
	const op = "direct room"
	if err := s.full(ctx, op); err != nil {
		return "", err
	}
	if unstorable(app, a, b) {
		return "", fmt.Errorf("bunstore: %s of %q and %q: %w", op, a, b, store.ErrNotFound)
	}
	id := s.directRoomID(a, b)
	// One round trip answers the common case (both users exist, the room
	// too) without writing.
	pair := []string{a, b}
	if a == b {
		pair = pair[:1]
	}
	var users, rooms, members int
	err := s.db.QueryRowContext(ctx,
		"SELECT (SELECT COUNT(*) FROM "+s.users+" WHERE app_id = ? AND id IN (?)), (SELECT COUNT(*) FROM "+s.rooms+" WHERE app_id = ? AND id = ?), "+
			"(SELECT COUNT(*) FROM "+s.members+" WHERE app_id = ? AND room_id = ? AND user_id IN (?))",
		app, bun.List(pair), app, id, app, id, bun.List(pair)).Scan(&users, &rooms, &members)
	if err != nil {
		return "", s.fail(ctx, op, err)
	}
	if users != len(pair) {
		found, err := s.existing(ctx, s.db, s.users, "id", app, pair)
		if err != nil {
			return "", s.fail(ctx, op, err)
		}
		for _, u := range pair {
			if !found[u] {
				return "", fmt.Errorf("bunstore: %s of %q and %q: user %q: %w", op, a, b, u, store.ErrNotFound)
			}
		}
		return "", fmt.Errorf("bunstore: %s of %q and %q: %w", op, a, b, store.ErrNotFound)
	}
	if rooms > 0 {
		return s.checkPairRoom(id, a, b, members == len(pair))
	}
	err = s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		// A concurrent creator's insert makes ours wait for its commit
		// (PostgreSQL, MySQL) or runs strictly before or after ours
		// (SQLite), so 0 rows here means the room and its members exist.
		res, err := tx.ExecContext(ctx, s.insertIgnore(s.rooms, "app_id, id", "(?, ?)"), app, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		values := "(?, ?, ?)"
		args := []any{app, id, a}
		if b != a {
			values += ", (?, ?, ?)"
			args = append(args, app, id, b)
		}
		_, err = tx.ExecContext(ctx, s.insertIgnore(s.members, "app_id, room_id, user_id", values), args...)
		return err
	})
	if err != nil {
		return "", s.fail(ctx, op, err)
	}
	// A concurrent creator may have created the room first: for the same
	// pair that is the room; for a pair whose IDs map to the same room ID,
	// it is not.
	if err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+s.members+" WHERE app_id = ? AND room_id = ? AND user_id IN (?)",
		app, id, bun.List(pair)).Scan(&members); err != nil {
		return "", s.fail(ctx, op, err)
	}
	return s.checkPairRoom(id, a, b, members == len(pair))
}

// DirectRooms implements store.DirectRoomResolver in rounds. Each round
// looks every pair still open up at once (is the receiver a user, does
// the pair's room exist, with whom) and creates the rooms that do not
// exist: on PostgreSQL (pgx) all in one statement, elsewhere as one
// look-up and, if rooms are missing, one transaction. A round settles
// every pair whose room exists or was created by it; a room created by a
// concurrent caller, or a room ID two receivers share (IDs that differ
// only in case), is settled by the next round. What three rounds leave
// open (rooms that keep changing under us) DirectRoom settles one pair at
// a time. Rooms are inserted in ID order, so that concurrent callers
// never wait for each other's rooms in a cycle.
func (s *Store) DirectRooms(ctx context.Context, app, a string, bs []string) ([]store.DirectRoomResult, error) {
	const op = "direct rooms"
	if err := s.full(ctx, op); err != nil {
		return nil, err
	}
	view, err := s.directoryView(ctx, app)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	senderKnown := view.has(factUser, "", []string{a})[0]
	pairKnown := view.has(factPair, a, bs)
	byB := make(map[string]*pairState, len(bs))
	var open []*pairState
	for i, b := range bs {
		if byB[b] != nil {
			continue
		}
		p := &pairState{b: b}
		byB[b] = p
		if unstorable(app, a, b) {
			p.fail(a, store.ErrNotFound)
			continue
		}
		p.room = s.directRoomID(a, b)
		if pairKnown[i] {
			p.done, p.res = true, store.DirectRoomResult{Room: p.room}
			continue
		}
		open = append(open, p)
	}
	// Receivers known to be users are not looked up: MissingUsers saw
	// them when the request was accepted.
	if view != nil && len(open) > 0 {
		receivers := make([]string, len(open))
		for i, p := range open {
			receivers[i] = p.b
		}
		for i, known := range view.has(factUser, "", receivers) {
			open[i].userKnown = known
		}
	}
	// The probe settles pairs whose receivers are known users; a call
	// with none (receivers accepted by another process) neither probes
	// nor tells the gate anything.
	if probed := probeable(open); s.pgx && senderKnown && probed > 0 && s.pairProbe.try() {
		before := len(open)
		if err := s.pgSettlePairsWithRooms(ctx, app, a, open); err != nil {
			return nil, s.fail(ctx, op, err)
		}
		open = slices.DeleteFunc(open, func(p *pairState) bool { return p.done })
		s.pairProbe.record(before-len(open), probed)
	}
	for round := 0; round < 3 && len(open) > 0; round++ {
		claimed := make(map[string]bool, len(open))
		for _, p := range open {
			p.mayCreate = !claimed[p.room]
			claimed[p.room] = true
		}
		if s.pgx {
			err = s.pgDirectRoomRound(ctx, app, a, senderKnown, open)
		} else {
			err = s.directRoomRound(ctx, app, a, senderKnown, open)
		}
		if err != nil {
			return nil, s.fail(ctx, op, err)
		}
		open = slices.DeleteFunc(open, func(p *pairState) bool { return p.done })
	}
	for _, p := range open {
		room, err := s.DirectRoom(ctx, app, a, p.b)
		if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
		p.res = store.DirectRoomResult{Room: room, Err: err}
	}
	out := make([]store.DirectRoomResult, len(bs))
	var ok []string
	for i, b := range bs {
		out[i] = byB[b].res
		if out[i].Err == nil && view != nil {
			ok = append(ok, b)
		}
	}
	// A pair's fact implies its users': only the pairs are recorded, and
	// the sender's own fact, which MissingUsers recorded when the request
	// was accepted and newer facts may have pushed out since: without it
	// every later call for this sender would skip the PostgreSQL probe.
	view.add(factPair, a, dedupe(ok))
	if !senderKnown && len(ok) > 0 {
		view.add(factUser, "", []string{a})
	}
	return out, nil
}

// probeGate decides whether DirectRooms' read-only probe of the pairs'
// rooms is worth its statement. It settles the pairs of a send to
// receivers whose rooms exist — most sends — and is wasted on a first
// message to each, whose rooms the round statement then creates (about
// 1 ms of a call of 500 that takes 25 ms, docs/benchmarks.md). After a
// probe that settled fewer than half the pairs it probed, the next
// probeSkips calls go straight to the round statement, which settles
// existing rooms too, only at more cost; then one probes again. The
// rounds are what is correct either way: the probe is only a shortcut.
type probeGate struct{ skips atomic.Int32 }

const probeSkips = 7

// try reports whether this call probes, counting a skipped call.
func (g *probeGate) try() bool {
	for {
		n := g.skips.Load()
		if n <= 0 {
			return true
		}
		if g.skips.CompareAndSwap(n, n-1) {
			return false
		}
	}
}

// record takes what a probe settled of the pairs it probed.
func (g *probeGate) record(settled, probed int) {
	if 2*settled < probed {
		g.skips.Store(probeSkips)
	} else {
		g.skips.Store(0)
	}
}

// probeable counts the pairs the probe can settle: those whose receiver
// the directory cache knows is a user.
func probeable(pairs []*pairState) int {
	n := 0
	for _, p := range pairs {
		if p.userKnown {
			n++
		}
	}
	return n
}

// pairState is one distinct receiver of a DirectRooms call.
type pairState struct {
	b, room   string
	userKnown bool // the directory cache knows b is a user
	mayCreate bool // the one pair of this round allowed to create room
	done      bool
	res       store.DirectRoomResult
}

// pairLookup is what one round of DirectRooms learned about a pair.
type pairLookup struct {
	senderOK, userOK bool
	roomOK           bool // the room exists
	members          int  // how many of the pair are members of it
	created          bool // this round created it, with the pair as members
}

// settle records what l says about p, unless it says to look again.
func (p *pairState) settle(a string, l pairLookup) {
	pairSize := 2
	if p.b == a {
		pairSize = 1
	}
	switch {
	case !l.senderOK || !l.userOK:
		p.fail(a, store.ErrNotFound)
	case l.created || (l.roomOK && l.members == pairSize):
		p.done, p.res = true, store.DirectRoomResult{Room: p.room}
	case l.roomOK:
		p.fail(a, store.ErrConflict)
	}
}

func (p *pairState) fail(a string, err error) {
	what := "user " + fmt.Sprintf("%q or %q", a, p.b)
	if errors.Is(err, store.ErrConflict) {
		what = fmt.Sprintf("room %q exists for other members", p.room)
	}
	p.done, p.res = true, store.DirectRoomResult{Err: fmt.Errorf("bunstore: direct room of %q and %q: %s: %w", a, p.b, what, err)}
}

// directRoomRound is one round of DirectRooms on MySQL and SQLite: one
// look-up of the users and rooms, then, if rooms are missing, one
// transaction that creates them: the rooms as multi-row inserts that skip
// existing IDs, then members for the rooms that have none — the ones this
// call created. A concurrent creator of the same room makes the insert
// wait for its commit (MySQL) or runs strictly before or after (SQLite),
// so its members are seen and none are added to its room.
func (s *Store) directRoomRound(ctx context.Context, app, a string, senderKnown bool, pairs []*pairState) error {
	users := make([]string, 0, len(pairs)+1)
	rooms := make([]string, 0, len(pairs))
	if !senderKnown {
		users = append(users, a)
	}
	for _, p := range pairs {
		if !p.userKnown {
			users = append(users, p.b)
		}
		rooms = append(rooms, p.room)
	}
	found, members, err := s.lookupPairs(ctx, app, dedupe(users), dedupe(rooms))
	if err != nil {
		return err
	}
	found[a] = found[a] || senderKnown
	for _, p := range pairs {
		found[p.b] = found[p.b] || p.userKnown
	}
	var create []*pairState
	for _, p := range pairs {
		l := pairLookup{senderOK: found[a], userOK: found[p.b]}
		if m, ok := members[p.room]; ok {
			l.roomOK = true
			for _, u := range m {
				if u == a || u == p.b {
					l.members++
				}
			}
		}
		if l.senderOK && l.userOK && !l.roomOK && p.mayCreate {
			create = append(create, p)
			continue
		}
		p.settle(a, l)
	}
	if len(create) == 0 {
		return nil
	}
	slices.SortFunc(create, func(x, y *pairState) int { return strings.Compare(x.room, y.room) })
	var created map[string]bool
	err = s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		rooms := make([]row, len(create))
		sizes := make([]int, len(create))
		ids := make([]string, len(create))
		for i, p := range create {
			rooms[i], sizes[i], ids[i] = row{app, p.room}, 16+len(app)+len(p.room), p.room
		}
		for _, st := range bulkInserts(s, s.rooms, "app_id, id", "(app_id, id)", rooms, sizes) {
			if _, err := tx.ExecContext(ctx, "?", st); err != nil {
				return err
			}
		}
		withMembers, err := s.existing(ctx, tx, s.members, "room_id", app, ids)
		if err != nil {
			return err
		}
		var rows []row
		var msizes []int
		created = map[string]bool{}
		for _, p := range create {
			if withMembers[p.room] {
				continue
			}
			created[p.room] = true
			for _, u := range dedupe([]string{a, p.b}) {
				rows = append(rows, row{app, p.room, u})
				msizes = append(msizes, 16+len(app)+len(p.room)+len(u))
			}
		}
		for _, st := range bulkInserts(s, s.members, "app_id, room_id, user_id", "(app_id, room_id, user_id)", rows, msizes) {
			if _, err := tx.ExecContext(ctx, "?", st); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, p := range create {
		if created[p.room] {
			p.settle(a, pairLookup{senderOK: true, userOK: true, created: true})
		}
	}
	return nil
}

// checkPairRoom refuses a room that exists under the pair's ID without the
// pair as members: it belongs to another pair whose IDs give the same room
// ID (with the default scheme, user IDs that differ only in case). Sending
// into it would show one user's messages to another.
func (s *Store) checkPairRoom(id, a, b string, pairAreMembers bool) (string, error) {
	if !pairAreMembers {
		return "", fmt.Errorf("bunstore: direct room of %q and %q: room %q exists for other members: %w", a, b, id, store.ErrConflict)
	}
	return id, nil
}

// insertIgnore is an INSERT that skips rows whose key already exists and
// fails on anything else. On MySQL that is ON DUPLICATE KEY UPDATE with a
// no-op assignment, not INSERT IGNORE, which would also swallow errors such
// as truncation. The no-op also leaves RowsAffected at 0 for a duplicate.
func (s *Store) insertIgnore(table, cols, values string) string {
	q := "INSERT INTO " + table + " (" + cols + ") VALUES " + values
	if s.kind == dialect.MySQL {
		return q + " ON DUPLICATE KEY UPDATE app_id = app_id"
	}
	return q + " ON CONFLICT DO NOTHING"
}

// RoomMembers implements store.Directory. Rooms without members are in the
// map with an empty list; rooms that do not exist are not.
func (s *Store) RoomMembers(ctx context.Context, app string, roomIDs []string) (map[string][]string, error) {
	const op = "room members"
	if err := s.full(ctx, op); err != nil {
		return nil, err
	}
	out, err := s.roomMembers(ctx, app, roomIDs)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// roomMembers is RoomMembers without its checks and error wrapping.
func (s *Store) roomMembers(ctx context.Context, app string, roomIDs []string) (map[string][]string, error) {
	out := map[string][]string{}
	ids := slices.DeleteFunc(dedupe(roomIDs), func(id string) bool { return unstorable(id) })
	if unstorable(app) {
		return out, nil
	}
	step, match := inLookupBatch, func(part []string) any { return sqltext.IDList(part) }
	q := "SELECT r.id, m.user_id FROM " + s.rooms + " r LEFT JOIN " + s.members + " m ON m.app_id = r.app_id AND m.room_id = r.id WHERE r.app_id = ? AND r.id IN (?)"
	if s.kind == dialect.PG {
		// As in existing: one array parameter plans and parses far faster
		// than a long IN list.
		step, match = pgLookupBatch, func(part []string) any { return pgdialect.Array(part) }
		// Driving the join from unnest(array) makes PostgreSQL look each
		// ID up in the primary key instead of testing every room of the
		// app against the whole array.
		q = "SELECT r.id, m.user_id FROM unnest(?::text[]) AS q(id) JOIN " + s.rooms + " r ON r.app_id = ? AND r.id = q.id LEFT JOIN " + s.members + " m ON m.app_id = r.app_id AND m.room_id = r.id"
	}
	for part := range slices.Chunk(ids, step) {
		args := []any{app, match(part)}
		if s.kind == dialect.PG {
			args[0], args[1] = args[1], args[0]
		}
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		err = func() error {
			defer rows.Close()
			for rows.Next() {
				var room string
				var user sql.NullString
				if err := rows.Scan(&room, &user); err != nil {
					return err
				}
				if user.Valid {
					out[room] = append(out[room], user.String)
				} else if out[room] == nil {
					out[room] = []string{}
				}
			}
			return rows.Err()
		}()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// lookupPairs answers which of users exist and which of rooms exist with
// which members (MySQL and SQLite; the lists are a chunk's, so they are
// sent whole). One query reads the users and the rooms' members from the
// members' primary key; the rooms themselves are read only for the IDs
// that have no members (a room about to be created, usually).
func (s *Store) lookupPairs(ctx context.Context, app string, users, rooms []string) (map[string]bool, map[string][]string, error) {
	found := make(map[string]bool, len(users))
	members := make(map[string][]string, len(rooms))
	users = slices.DeleteFunc(users, func(id string) bool { return unstorable(id) })
	rooms = slices.DeleteFunc(rooms, func(id string) bool { return unstorable(id) })
	if unstorable(app) || len(users)+len(rooms) == 0 {
		return found, members, nil
	}
	// Neither list is ever empty: IN () is a syntax error.
	users, rooms = append(users, ""), append(rooms, "")
	rows, err := s.db.QueryContext(ctx, "SELECT 0, id, id FROM "+s.users+" WHERE app_id = ? AND id IN (?)"+
		" UNION ALL SELECT 1, room_id, user_id FROM "+s.members+" WHERE app_id = ? AND room_id IN (?)",
		app, sqltext.IDList(users), app, sqltext.IDList(rooms))
	if err != nil {
		return nil, nil, err
	}
	err = func() error {
		defer rows.Close()
		for rows.Next() {
			var kind int
			var id, member string
			if err := rows.Scan(&kind, &id, &member); err != nil {
				return err
			}
			if kind == 0 {
				found[id] = true
			} else {
				members[id] = append(members[id], member)
			}
		}
		return rows.Err()
	}()
	if err != nil {
		return nil, nil, err
	}
	var empty []string
	for _, r := range rooms[:len(rooms)-1] {
		if members[r] == nil {
			empty = append(empty, r)
		}
	}
	if len(empty) > 0 {
		// The room and its members in one statement: a room created since
		// the first query comes with its members.
		more, err := s.roomMembers(ctx, app, empty)
		if err != nil {
			return nil, nil, err
		}
		maps.Copy(members, more)
	}
	return found, members, nil
}

// AddUsers makes ids users of app; existing users are left alone. It is
// the seeding helper of storetest.Inspector and of demos: hosts with real
// users use BookkeepingOnly and their own Directory instead.
func (s *Store) AddUsers(ctx context.Context, app string, ids ...string) error {
	const op = "add users"
	if err := s.full(ctx, op); err != nil {
		return err
	}
	if unstorable(app) || unstorable(ids...) {
		return fmt.Errorf("bunstore: %s: an ID contains a NUL byte or invalid UTF-8", op)
	}
	ids = dedupe(ids)
	if len(ids) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		for part := range slices.Chunk(ids, maxRowsPerInsert) {
			if _, err := tx.ExecContext(ctx, s.insertIgnore(s.users, "app_id, id", "?"), bun.List(pairs(app, part))); err != nil {
				return err
			}
		}
		return nil
	})
	return s.fail(ctx, op, err)
}

// pairs turns ids into (app, id) rows for a VALUES list.
func pairs(app string, ids []string) []row {
	out := make([]row, len(ids))
	for i, id := range ids {
		out[i] = row{app, id}
	}
	return out
}

// row is a tuple of values that bun writes as "(v1, v2, ...)"; a bun.List
// of rows is a VALUES list.
type row []any

// AppendQuery implements schema.QueryAppender.
func (r row) AppendQuery(gen schema.QueryGen, b []byte) ([]byte, error) {
	b = append(b, '(')
	for i, v := range r {
		if i > 0 {
			b = append(b, ", "...)
		}
		if str, ok := v.(string); ok {
			b = sqltext.AppendString(gen, b, str)
			continue
		}
		b = gen.Append(b, v)
	}
	return append(b, ')'), nil
}

// DeleteUser removes a user of app. Their rooms and memberships stay, as
// in memstore; DirectRoom with them then returns store.ErrNotFound.
func (s *Store) DeleteUser(ctx context.Context, app, id string) error {
	const op = "delete user"
	if err := s.full(ctx, op); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, "DELETE FROM "+s.users+" WHERE app_id = ? AND id = ?", app, id)
	return s.fail(ctx, op, err)
}

// AddRoom creates room id in app, or replaces its members if it exists.
// Members need not be users yet. Only the members no longer listed are
// deleted: a removal makes the directory cache forget what it knew of the
// app, and a host that re-adds a room with the same members removes no one.
func (s *Store) AddRoom(ctx context.Context, app, id string, members ...string) error {
	const op = "add room"
	if err := s.full(ctx, op); err != nil {
		return err
	}
	if unstorable(app, id) || unstorable(members...) {
		return fmt.Errorf("bunstore: %s: an ID contains a NUL byte or invalid UTF-8", op)
	}
	members = dedupe(members)
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, s.insertIgnore(s.rooms, "app_id, id", "(?, ?)"), app, id); err != nil {
			return err
		}
		drop := "DELETE FROM " + s.members + " WHERE app_id = ? AND room_id = ?"
		args := []any{app, id}
		if len(members) > 0 {
			drop += " AND user_id NOT IN (?)"
			args = append(args, bun.List(members))
		}
		if _, err := tx.ExecContext(ctx, drop, args...); err != nil {
			return err
		}
		for part := range slices.Chunk(members, maxRowsPerInsert) {
			rows := make([]row, len(part))
			for i, m := range part {
				rows[i] = row{app, id, m}
			}
			if _, err := tx.ExecContext(ctx, s.insertIgnore(s.members, "app_id, room_id, user_id", "?"), bun.List(rows)); err != nil {
				return err
			}
		}
		return nil
	})
	return s.fail(ctx, op, err)
}

// DeleteRoom removes a room of app and its memberships; its messages stay.
func (s *Store) DeleteRoom(ctx context.Context, app, id string) error {
	const op = "delete room"
	if err := s.full(ctx, op); err != nil {
		return err
	}
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		// Explicit rather than ON DELETE CASCADE alone: SQLite enforces
		// foreign keys only on connections that enable them.
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+s.members+" WHERE app_id = ? AND room_id = ?", app, id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "DELETE FROM "+s.rooms+" WHERE app_id = ? AND id = ?", app, id)
		return err
	})
	return s.fail(ctx, op, err)
}

// UserRooms returns the IDs of the rooms user is a member of in app,
// sorted bytewise.
func (s *Store) UserRooms(ctx context.Context, app, user string) ([]string, error) {
	const op = "user rooms"
	if err := s.full(ctx, op); err != nil {
		return nil, err
	}
	out := []string{}
	if unstorable(app, user) {
		return out, nil // no such user was ever stored
	}
	rows, err := s.db.QueryContext(ctx, "SELECT room_id FROM "+s.members+" WHERE app_id = ? AND user_id = ?", app, user)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	if err := scanStrings(rows, func(id string) { out = append(out, id) }); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	// Sorted here, not by ORDER BY, so the order is Go's string order on
	// every database whatever its collation.
	slices.Sort(out)
	return out, nil
}
