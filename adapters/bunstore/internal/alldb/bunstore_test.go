package alldb_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/adapters/bunstore/bunopen"
	"github.com/chatbatch/chatbatch/adapters/bunstore/internal/pgcopy"
	"github.com/chatbatch/chatbatch/store"
	"github.com/chatbatch/chatbatch/store/storetest"
)

func TestNewValidatesOptions(t *testing.T) {
	db := backends[0].get(t)
	for _, prefix := range []string{"bad-prefix", "x;DROP TABLE users;--", "päfix_", "a b", strings.Repeat("p", 33)} {
		if _, err := bunstore.New(db, &bunstore.Options{TablePrefix: prefix}); err == nil {
			t.Errorf("New accepted TablePrefix %q", prefix)
		}
	}
	if _, err := bunstore.New(nil, nil); err == nil {
		t.Error("New accepted a nil db")
	}
	s, err := bunstore.New(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.TablePrefix() != bunstore.DefaultTablePrefix || s.Tables()[0] != "chatbatch_schema_migrations" {
		t.Errorf("default prefix %q, tables %q", s.TablePrefix(), s.Tables())
	}
}

// TestMigrate runs Migrate twice in a row, then from 4 goroutines at once
// on fresh stores sharing one new prefix, as several processes starting
// together would.
func TestMigrate(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db, nil) // migrated once
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("second Migrate: %v", err)
		}
		prefix := randomPrefix()
		stores := make([]*bunstore.Store, 4)
		for i := range stores {
			var err error
			if stores[i], err = bunstore.New(db, &bunstore.Options{TablePrefix: prefix}); err != nil {
				t.Fatal(err)
			}
		}
		dropTables(t, db, stores[0])
		errs := make([]error, len(stores))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, s := range stores {
			wg.Go(func() {
				<-start
				errs[i] = s.Migrate(ctx)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("concurrent Migrate %d: %v", i, err)
			}
		}
		for _, table := range stores[0].Tables() {
			if !tableExists(ctx, db, table) {
				t.Errorf("table %s missing after concurrent migrations", table)
			}
		}
		// The migrated schema works.
		if err := stores[1].AddUsers(ctx, "app", "u"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestMigrateUpgradesV1 upgrades a database made by the first release
// (no migrations table, no lease or notification columns) that holds a
// finished batch and a running one whose chunk a worker had started:
// the data stays, the finished batch counts as reported, and the started
// chunk, whose lease is unknown, is pending for the sweeper at once.
func TestMigrateUpgradesV1(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		s := unmigratedStore(t, db)
		// Version 1's statements but the last (which creates the
		// migrations table): the tables as the first release made them.
		v1 := s.Migrations()[0].Statements
		for _, stmt := range v1[:len(v1)-1] {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				t.Fatalf("%s: %v", stmt, err)
			}
		}
		created := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
		for _, id := range []string{"batch-done", "batch-running"} {
			b := &store.Batch{AppID: "app", ID: id, Sender: "system", Count: 1, Chunks: 1, Payload: []byte("{}"), CreatedAt: created}
			chunks := []store.Chunk{{Recipients: []store.Recipient{{Receiver: "u"}}, NotBefore: created}}
			if err := s.CreateBatch(ctx, b, chunks); err != nil {
				t.Fatal(err)
			}
		}
		p := s.TablePrefix()
		for _, q := range []string{
			"UPDATE " + p + "batches SET finished_at = created_at, chunks_done = 1, sent = 1 WHERE id = 'batch-done'",
			"UPDATE " + p + "chunks SET done = TRUE WHERE batch_id = 'batch-done'",
			"UPDATE " + p + "chunks SET started_at = not_before WHERE batch_id = 'batch-running'",
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		for range 2 { // the second Migrate finds nothing to do
			if err := s.Migrate(ctx); err != nil {
				t.Fatalf("Migrate of a version 1 database: %v", err)
			}
		}
		var versions []int
		rows, err := db.QueryContext(ctx, "SELECT version FROM "+p+"schema_migrations ORDER BY version")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			versions = append(versions, v)
		}
		rows.Close()
		var want []int
		for v := 2; v <= bunstore.SchemaVersion; v++ {
			want = append(want, v)
		}
		if !slices.Equal(versions, want) {
			t.Errorf("schema_migrations holds %v, want %v (every version after the first)", versions, want)
		}
		done, err := s.GetBatch(ctx, "app", "batch-done")
		if err != nil {
			t.Fatal(err)
		}
		if !done.NotifiedAt.Equal(created) || done.Sent != 1 {
			t.Errorf("the finished batch after the upgrade: %+v; want NotifiedAt = FinishedAt, its counters kept", done)
		}
		now := time.Now().UTC()
		claimed, err := s.ClaimDoneNotifications(ctx, &store.ClaimDoneNotificationsParams{FinishedBefore: now, At: now, Until: now.Add(time.Minute), Limit: 10})
		if err != nil || len(claimed) != 0 {
			t.Errorf("ClaimDoneNotifications after the upgrade = %v, %v; want nothing to report again", claimedIDs(claimed), err)
		}
		pending, err := s.PendingChunks(ctx, &store.PendingChunksParams{DueBefore: created.Add(-time.Hour), LeaseExpiredBefore: now, Limit: 10})
		if err != nil || len(pending) != 1 || pending[0].BatchID != "batch-running" || pending[0].Attempts != 0 || !pending[0].LeaseUntil.IsZero() {
			t.Errorf("PendingChunks after the upgrade = %+v, %v; want the started chunk, lease unknown", pending, err)
		}
		_, c, err := s.StartChunk(ctx, &store.StartChunkParams{Ref: store.ChunkRef{AppID: "app", BatchID: "batch-running"}, At: now, LeaseUntil: now.Add(time.Minute)})
		if err != nil || c.Attempts != 1 || !c.StartedAt.Equal(created) || len(c.Recipients) != 1 {
			t.Errorf("StartChunk after the upgrade = %+v, %v", c, err)
		}
	})
}

// TestMigrationsSQL applies Migrations' statements as a host's own
// migration tool would, then checks that Migrate finds nothing to do and
// that the store works on the schema they made.
func TestMigrationsSQL(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		s := unmigratedStore(t, db)
		ms := s.Migrations()
		if len(ms) != bunstore.SchemaVersion || ms[len(ms)-1].Version != bunstore.SchemaVersion {
			t.Fatalf("Migrations() has %d versions, the last %d; want 1..%d", len(ms), ms[len(ms)-1].Version, bunstore.SchemaVersion)
		}
		for _, m := range ms {
			for _, q := range m.Statements {
				if _, err := db.ExecContext(ctx, q); err != nil {
					t.Fatalf("version %d: %s: %v", m.Version, q, err)
				}
			}
		}
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("Migrate after the SQL was applied: %v", err)
		}
		now := time.Now().UTC()
		b := &store.Batch{AppID: "app", ID: "b", Sender: "system", Count: 1, Chunks: 1, Payload: []byte("{}"), CreatedAt: now}
		if err := s.CreateBatch(ctx, b, []store.Chunk{{Recipients: []store.Recipient{{Receiver: "u"}}, NotBefore: now}}); err != nil {
			t.Fatal(err)
		}
		if _, c, err := s.StartChunk(ctx, &store.StartChunkParams{Ref: store.ChunkRef{AppID: "app", BatchID: "b"}, At: now, LeaseUntil: now.Add(time.Minute)}); err != nil || c.Attempts != 1 {
			t.Fatalf("StartChunk on the schema made by the SQL: %+v %v", c, err)
		}
	})
}

// unmigratedStore is a store on db with a fresh prefix and no tables yet
// (they are dropped when t ends).
func unmigratedStore(t *testing.T, db *bun.DB) *bunstore.Store {
	t.Helper()
	s, err := bunstore.New(db, &bunstore.Options{TablePrefix: randomPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	dropTables(t, db, s)
	return s
}

func claimedIDs(bs []*store.Batch) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.AppID+"/"+b.ID)
	}
	return out
}

func TestMigrateCanceled(t *testing.T) {
	db := backends[0].get(t)
	s, err := bunstore.New(db, &bunstore.Options{TablePrefix: randomPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Migrate(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Migrate with a canceled context = %v", err)
	}
}

// TestBookkeepingOnly checks that only the batch tables exist, that they
// pass the Batches suite, and that the other methods say why they fail.
func TestBookkeepingOnly(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db, &bunstore.Options{BookkeepingOnly: true})
		p := s.TablePrefix()
		if got := s.Tables(); !slices.Equal(got, []string{p + "schema_migrations", p + "idempotency_keys", p + "batch_reads", p + "chunks", p + "batches"}) {
			t.Errorf("Tables() = %q", got)
		}
		for _, name := range []string{"users", "rooms", "room_members", "messages"} {
			if tableExists(ctx, db, p+name) {
				t.Errorf("BookkeepingOnly created %s%s", p, name)
			}
		}
		for _, name := range []string{"batches", "chunks", "idempotency_keys"} {
			if !tableExists(ctx, db, p+name) {
				t.Errorf("BookkeepingOnly did not create %s%s", p, name)
			}
		}
		calls := map[string]func() error{
			"MissingUsers": func() error { _, err := s.MissingUsers(ctx, "a", []string{"u"}); return err },
			"MissingRooms": func() error { _, err := s.MissingRooms(ctx, "a", []string{"r"}); return err },
			"DirectRoom":   func() error { _, err := s.DirectRoom(ctx, "a", "u", "v"); return err },
			"RoomMembers":  func() error { _, err := s.RoomMembers(ctx, "a", []string{"r"}); return err },
			"SaveMessages": func() error { return s.SaveMessages(ctx, "a", []store.Message{{ID: "m"}}) },
			"AddUsers":     func() error { return s.AddUsers(ctx, "a", "u") },
			"AddRoom":      func() error { return s.AddRoom(ctx, "a", "r") },
			"DeleteUser":   func() error { return s.DeleteUser(ctx, "a", "u") },
			"DeleteRoom":   func() error { return s.DeleteRoom(ctx, "a", "r") },
			"UserRooms":    func() error { _, err := s.UserRooms(ctx, "a", "u"); return err },
			"RoomMessages": func() error { _, err := s.RoomMessages(ctx, "a", "r", 0); return err },
		}
		for name, call := range calls {
			if err := call(); !errors.Is(err, bunstore.ErrBookkeepingOnly) {
				t.Errorf("%s on a BookkeepingOnly store = %v, want ErrBookkeepingOnly", name, err)
			}
		}
		storetest.RunBatches(t, func(t *testing.T) store.Batches {
			return newStore(t, db, &bunstore.Options{BookkeepingOnly: true})
		}, nil)
	})
}

func TestDirectRoomIDScheme(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db, nil)
		if err := s.AddUsers(ctx, "app", "System", "user-a"); err != nil {
			t.Fatal(err)
		}
		id, err := s.DirectRoom(ctx, "app", "user-a", "System")
		if err != nil {
			t.Fatal(err)
		}
		if id != "c4c8fcc8e02e576e239f81e9f9a90d21" { // md5("system_user-a")
			t.Errorf("direct room ID = %q, want IMKit's md5(\"system_user-a\")", id)
		}
		custom := newStore(t, db, &bunstore.Options{DirectRoomID: func(a, b string) string {
			return "dm:" + min(a, b) + ":" + max(a, b)
		}})
		if err := custom.AddUsers(ctx, "app", "x", "y"); err != nil {
			t.Fatal(err)
		}
		if id, err := custom.DirectRoom(ctx, "app", "y", "x"); err != nil || id != "dm:x:y" {
			t.Errorf("DirectRoom with a custom scheme = %q, %v; want dm:x:y", id, err)
		}
	})
}

// TestInspectorHelpers covers the memstore-compatible extras beyond what
// the suite uses: replacing and deleting rooms, deleting users, and the
// order of messages saved at the same instant.
func TestInspectorHelpers(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db, nil)
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(s.AddUsers(ctx, "app", "u1", "u2", "u1"))
		must(s.AddRoom(ctx, "app", "r", "u1", "u2"))
		must(s.AddRoom(ctx, "app", "r", "u2", "ghost", "u2")) // replaces the members
		members, err := s.RoomMembers(ctx, "app", []string{"r"})
		must(err)
		if got := slices.Sorted(slices.Values(members["r"])); !slices.Equal(got, []string{"ghost", "u2"}) {
			t.Errorf("members after replacing = %q", got)
		}
		must(s.AddRoom(ctx, "app", "b-room", "u2"))
		rooms, err := s.UserRooms(ctx, "app", "u2")
		must(err)
		if !slices.Equal(rooms, []string{"b-room", "r"}) {
			t.Errorf("UserRooms = %q, want sorted [b-room r]", rooms)
		}
		must(s.DeleteRoom(ctx, "app", "r"))
		if missing, _ := s.MissingRooms(ctx, "app", []string{"r"}); len(missing) != 1 {
			t.Error("DeleteRoom left the room")
		}
		rooms, err = s.UserRooms(ctx, "app", "u2")
		must(err)
		if !slices.Equal(rooms, []string{"b-room"}) {
			t.Errorf("UserRooms after DeleteRoom = %q", rooms)
		}
		must(s.DeleteUser(ctx, "app", "u1"))
		if missing, _ := s.MissingUsers(ctx, "app", []string{"u1", "u2"}); !slices.Equal(missing, []string{"u1"}) {
			t.Errorf("MissingUsers after DeleteUser = %q", missing)
		}
		if _, err := s.DirectRoom(ctx, "app", "u1", "u2"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DirectRoom with a deleted user = %v", err)
		}

		// Same CreatedAt: the later save first, within a call and across calls.
		at := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
		msg := func(id string) store.Message {
			return store.Message{ID: id, AppID: "app", RoomID: "room", Sender: "u2", Type: "text", Text: id, CreatedAt: at}
		}
		must(s.SaveMessages(ctx, "app", []store.Message{msg("m-b"), msg("m-a")}))
		must(s.SaveMessages(ctx, "app", []store.Message{msg("m-0")}))
		got, err := s.RoomMessages(ctx, "app", "room", 0)
		must(err)
		var ids []string
		for _, m := range got {
			ids = append(ids, m.ID)
		}
		if !slices.Equal(ids, []string{"m-0", "m-a", "m-b"}) {
			t.Errorf("messages at one instant = %q, want the later save first [m-0 m-a m-b]", ids)
		}
	})
}

// TestValues checks what the suite does not: times in other zones and
// below a microsecond, empty vs nil Vars and Fields, Fields kept verbatim,
// NUL bytes refused on write and treated as absent on read, outcome counts
// checked.
func TestValues(t *testing.T) {
	forEach(t, func(t *testing.T, be *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db, nil)
		zone := time.FixedZone("UTC+8", 8*3600)
		at := time.Date(2026, 4, 10, 17, 30, 15, 123456789, zone)
		m := store.Message{
			ID: "m", AppID: "app", RoomID: "room", Sender: "s", Type: "text", Text: "t", CreatedAt: at,
			Extra:  json.RawMessage(`{"a":  "<&>" }`), // neither compacted nor HTML-escaped
			Fields: map[string]json.RawMessage{"x": json.RawMessage(`[1, "<&>"]`), "é\"": json.RawMessage(`{}`)},
		}
		if err := s.SaveMessages(ctx, "app", []store.Message{m}); err != nil {
			t.Fatal(err)
		}
		got, err := s.RoomMessages(ctx, "app", "room", 0)
		if err != nil || len(got) != 1 {
			t.Fatalf("RoomMessages = %v, %v", got, err)
		}
		if want := at.UTC().Truncate(time.Microsecond); !got[0].CreatedAt.Equal(want) || got[0].CreatedAt.Location() != time.UTC {
			t.Errorf("CreatedAt = %v, want %v in UTC", got[0].CreatedAt, want)
		}
		if string(got[0].Extra) != string(m.Extra) || string(got[0].Fields["x"]) != `[1, "<&>"]` || string(got[0].Fields["é\""]) != "{}" {
			t.Errorf("Extra %q Fields %q, want them verbatim", got[0].Extra, got[0].Fields)
		}
		empty := m
		empty.ID, empty.RoomID, empty.Fields = "m2", "room2", map[string]json.RawMessage{}
		if err := s.SaveMessages(ctx, "app", []store.Message{empty}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.RoomMessages(ctx, "app", "room2", 0); len(got) != 1 || got[0].Fields == nil || len(got[0].Fields) != 0 {
			t.Errorf("empty Fields came back as %#v", got)
		}

		bad := m
		bad.ID, bad.Text = "nul", "a\x00b"
		if err := s.SaveMessages(ctx, "app", []store.Message{bad}); err == nil || !strings.Contains(err.Error(), "NUL") {
			t.Errorf("SaveMessages with a NUL in the text = %v, want an error naming NUL", err)
		}
		zero := m
		zero.ID, zero.CreatedAt = "zero", time.Time{}
		if err := s.SaveMessages(ctx, "app", []store.Message{zero}); err == nil {
			t.Error("SaveMessages accepted a zero CreatedAt")
		}
		// IDs that need quoting in SQL strings, PostgreSQL arrays and JSON.
		tricky := []string{"u", `q"uote`, `back\slash`, "{brace}", "com,ma", "it's", " space ", "NULL", "😀", "Ü"}
		if err := s.AddUsers(ctx, "app", tricky...); err != nil {
			t.Fatal(err)
		}
		if missing, err := s.MissingUsers(ctx, "app", append(tricky, "ü", "null")); err != nil || !slices.Equal(missing, []string{"ü", "null"}) {
			t.Errorf("MissingUsers over tricky IDs = %q, %v; want [ü null]", missing, err)
		}
		// IDs are at most 255 bytes on MySQL (VARBINARY(255)): longer is an
		// error there, never a silent truncation.
		long := strings.Repeat("x", 300)
		err = s.AddUsers(ctx, "app", long)
		if be.name == "mysql" {
			if err == nil {
				t.Error("MySQL accepted a 300-byte user ID")
			}
		} else if missing, _ := s.MissingUsers(ctx, "app", []string{long}); err != nil || len(missing) != 0 {
			t.Errorf("a 300-byte user ID: %v, missing %d", err, len(missing))
		}
		if missing, err := s.MissingUsers(ctx, "app", []string{"u\x00", "u"}); err != nil || !slices.Equal(missing, []string{"u\x00"}) {
			t.Errorf("MissingUsers with a NUL ID = %q, %v", missing, err)
		}
		if _, err := s.GetBatch(ctx, "app", "b\x00"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetBatch with a NUL ID = %v", err)
		}

		b := &store.Batch{ID: "b", AppID: "app", Sender: "s", Count: 3, Chunks: 2, CreatedAt: at}
		chunks := []store.Chunk{
			{Recipients: []store.Recipient{{Receiver: "u", Vars: map[string]string{}}, {Room: "r"}}, NotBefore: at},
			{Start: 2, Recipients: []store.Recipient{{Receiver: "v", Vars: map[string]string{"k": "a\x00b"}}}, NotBefore: at},
		}
		if err := s.CreateBatch(ctx, b, chunks); err != nil {
			t.Fatal(err)
		}
		c, err := s.LoadChunk(ctx, store.ChunkRef{AppID: "app", BatchID: "b"})
		if err != nil {
			t.Fatal(err)
		}
		if c.Recipients[0].Vars == nil || c.Recipients[1].Vars != nil {
			t.Errorf("Vars empty/nil did not round-trip: %#v", c.Recipients)
		}
		c1, err := s.LoadChunk(ctx, store.ChunkRef{AppID: "app", BatchID: "b", No: 1})
		if err != nil || c1.Recipients[0].Vars["k"] != "a\x00b" || c1.Start != 2 {
			t.Errorf("chunk 1 = %+v, %v", c1, err)
		}
		if gb, _ := s.GetBatch(ctx, "app", "b"); gb == nil || gb.Payload != nil {
			t.Errorf("a nil Payload came back as %v", gb)
		}
		_, err = s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: c.ChunkRef, Outcomes: []store.Outcome{{Status: store.OutcomeSent}}, At: at})
		if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			t.Errorf("CompleteChunk with 1 outcome for 2 recipients = %v, want a plain error", err)
		}
		if gb, _ := s.GetBatch(ctx, "app", "b"); gb == nil || gb.ChunksDone != 0 {
			t.Errorf("a refused CompleteChunk changed the batch: %+v", gb)
		}
		if refs, err := s.PendingChunks(ctx, &store.PendingChunksParams{DueBefore: at, LeaseExpiredBefore: at, Limit: -1}); err != nil || len(refs) != 2 {
			t.Errorf("PendingChunks(limit -1) = %v, %v; want both chunks", refs, err)
		}
		if refs, err := s.PendingChunks(ctx, &store.PendingChunksParams{DueBefore: at, LeaseExpiredBefore: at, Limit: 0}); err != nil || len(refs) != 0 {
			t.Errorf("PendingChunks(limit 0) = %v, %v; want none", refs, err)
		}
	})
}

// TestLargeSaveSplits saves more than one statement's worth of bytes (4 MB)
// in one call: several statements, one transaction.
func TestLargeSaveSplits(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db, nil)
		text := strings.Repeat("訂單🚀'\\", 25_000) // 300 KB
		msgs := make([]store.Message, 20)        // 6 MB
		for i := range msgs {
			msgs[i] = store.Message{ID: fmt.Sprint("big-", i), AppID: "app", RoomID: "room", Sender: "s", Type: "text", Text: text, Index: i,
				CreatedAt: time.Date(2026, 4, 10, 9, 0, i, 0, time.UTC)}
		}
		if err := s.SaveMessages(ctx, "app", msgs); err != nil {
			t.Fatal(err)
		}
		got, err := s.RoomMessages(ctx, "app", "room", 0)
		if err != nil || len(got) != len(msgs) || got[0].Text != text || got[0].ID != "big-19" {
			t.Fatalf("RoomMessages: %d messages, %v", len(got), err)
		}
	})
}

// TestClosedDB: every method on a closed pool returns an error, no panic.
func TestClosedDB(t *testing.T) {
	ctx := t.Context()
	db, err := bunopen.Open(ctx, "sqlite::memory:")
	if err != nil {
		t.Fatal(err)
	}
	s, err := bunstore.New(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	db.Close()
	now := time.Now().UTC()
	ref := store.ChunkRef{AppID: "a", BatchID: "b"}
	calls := map[string]func() error{
		"Migrate":      func() error { return s.Migrate(ctx) },
		"Ping":         func() error { return s.Ping(ctx) },
		"MissingUsers": func() error { _, err := s.MissingUsers(ctx, "a", []string{"u"}); return err },
		"MissingRooms": func() error { _, err := s.MissingRooms(ctx, "a", []string{"r"}); return err },
		"DirectRoom":   func() error { _, err := s.DirectRoom(ctx, "a", "u", "v"); return err },
		"RoomMembers":  func() error { _, err := s.RoomMembers(ctx, "a", []string{"r"}); return err },
		"SaveMessages": func() error {
			return s.SaveMessages(ctx, "a", []store.Message{{ID: "m", RoomID: "r", CreatedAt: now}})
		},
		"CreateBatch": func() error {
			return s.CreateBatch(ctx, &store.Batch{ID: "b", AppID: "a", Chunks: 1, CreatedAt: now}, []store.Chunk{{NotBefore: now}})
		},
		"GetBatch":  func() error { _, err := s.GetBatch(ctx, "a", "b"); return err },
		"LoadChunk": func() error { _, err := s.LoadChunk(ctx, ref); return err },
		"CompleteChunk": func() error {
			_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: ref, At: now})
			return err
		},
		"PendingChunks": func() error {
			_, err := s.PendingChunks(ctx, &store.PendingChunksParams{DueBefore: now, LeaseExpiredBefore: now, Limit: 10})
			return err
		},
		"AddUsers":     func() error { return s.AddUsers(ctx, "a", "u") },
		"AddRoom":      func() error { return s.AddRoom(ctx, "a", "r", "u") },
		"DeleteUser":   func() error { return s.DeleteUser(ctx, "a", "u") },
		"DeleteRoom":   func() error { return s.DeleteRoom(ctx, "a", "r") },
		"UserRooms":    func() error { _, err := s.UserRooms(ctx, "a", "u"); return err },
		"RoomMessages": func() error { _, err := s.RoomMessages(ctx, "a", "r", 0); return err },
	}
	for name, call := range calls {
		err := call()
		if err == nil {
			t.Errorf("%s on a closed database returned no error", name)
		} else if !strings.HasPrefix(err.Error(), "bunstore: ") {
			t.Errorf("%s: error %q lacks the package's context", name, err)
		}
	}
}

// TestCanceledMidWrite cancels a large save while it runs: the error
// wraps the context's error and nothing is half-written (none or all). On the
// in-memory SQLite backend it also shows that the interrupted connection
// (which is the database) survives.
func TestCanceledMidWrite(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		s := newStore(t, db, nil)
		text := strings.Repeat("x", 2000)
		for attempt, delay := range []time.Duration{time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond} {
			// Fresh IDs and room per attempt: on MySQL the server may still
			// be rolling back the previous, interrupted attempt, and rows
			// it holds would make this one wait or deadlock.
			room := fmt.Sprint("room-", attempt)
			msgs := make([]store.Message, 3000) // 6 MB: at least two statements
			for i := range msgs {
				msgs[i] = store.Message{ID: fmt.Sprintf("m-%d-%d", attempt, i), AppID: "app", RoomID: room, Sender: "s", Type: "text", Text: text, CreatedAt: time.Now().UTC()}
			}
			ctx, cancel := context.WithTimeout(t.Context(), delay)
			err := s.SaveMessages(ctx, "app", msgs)
			cancel()
			t.Logf("after %v: %v", delay, err)
			got, rerr := s.RoomMessages(t.Context(), "app", room, 0)
			if rerr != nil {
				t.Fatalf("after a canceled save the store is unusable: %v", rerr)
			}
			switch {
			case err == nil:
				if len(got) != len(msgs) {
					t.Fatalf("a successful save stored %d of %d messages", len(got), len(msgs))
				}
				return // too fast to be interrupted: nothing more to see
			case !errors.Is(err, context.DeadlineExceeded):
				t.Errorf("SaveMessages interrupted after %v = %v, want an error wrapping context.DeadlineExceeded", delay, err)
			case len(got) != 0 && len(got) != len(msgs):
				// All is fine too: a save that is one statement (PostgreSQL
				// through pgx) may commit just as the deadline passes.
				t.Fatalf("an interrupted save left %d of %d messages", len(got), len(msgs))
			}
		}
	})
}

// TestCreateBatchConcurrentDuplicate: of several concurrent creators of
// one batch ID exactly one succeeds; the others get ErrConflict.
func TestCreateBatchConcurrentDuplicate(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db, nil)
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				now := time.Now().UTC()
				chunks := make([]store.Chunk, 3)
				for c := range chunks {
					chunks[c] = store.Chunk{Start: c, Recipients: []store.Recipient{{Receiver: fmt.Sprint("writer-", i)}}, NotBefore: now}
				}
				<-start
				errs[i] = s.CreateBatch(ctx, &store.Batch{ID: "same", AppID: "app", Sender: fmt.Sprint("writer-", i), Count: 3, Chunks: 3, CreatedAt: now}, chunks)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Errorf("creators %d and %d both succeeded", winner, i)
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("creator %d: %v, want ErrConflict", i, err)
			}
		}
		if winner < 0 {
			t.Fatal("no creator succeeded")
		}
		// Only the winner's chunks exist.
		for no := range 3 {
			c, err := s.LoadChunk(ctx, store.ChunkRef{AppID: "app", BatchID: "same", No: no})
			if err != nil || c.Recipients[0].Receiver != fmt.Sprint("writer-", winner) {
				t.Errorf("chunk %d = %+v, %v; want writer-%d's", no, c, err, winner)
			}
		}
	})
}

// TestPostgresSavesByCopy: on PostgreSQL through bunpostgres (linked by
// bunopen) SaveMessages writes new messages with one COPY, and when some
// are stored already (a chunk run again) the COPY fails as a whole and
// the messages are written again skipping the stored ones: each stored
// once. The prefix has capitals, which PostgreSQL folds in the store's
// unquoted names and COPY must fold too.
func TestPostgresSavesByCopy(t *testing.T) {
	db := backends[2].get(t)
	ctx := t.Context()
	s := newStore(t, db, &bunstore.Options{TablePrefix: "Copy" + randomPrefix()})
	table := strings.ToLower(s.TablePrefix() + "messages")

	copier := pgcopy.Registered()
	if copier == nil {
		t.Fatal("bunpostgres is linked (through bunopen) but registered no COPY function")
	}
	type call struct {
		rows int64
		err  error
	}
	var mu sync.Mutex
	var calls []call
	pgcopy.Register(func(ctx context.Context, dc any, sql string, data io.Reader) (int64, error) {
		n, err := copier(ctx, dc, sql, data)
		if strings.Contains(sql, s.TablePrefix()+"messages ") {
			mu.Lock()
			calls = append(calls, call{n, err})
			mu.Unlock()
		}
		return n, err
	})
	t.Cleanup(func() { pgcopy.Register(copier) })

	msg := func(i int) store.Message {
		return store.Message{ID: fmt.Sprint("b-", i), AppID: "app", RoomID: "room", Receiver: "u", Sender: "s", Type: "text",
			Text: fmt.Sprint("hi ", i), Extra: json.RawMessage(`{"k":1}`), BatchID: "b", Index: i, CreatedAt: time.Date(2026, 12, 4, 9, 0, i, 0, time.UTC)}
	}
	if err := s.SaveMessages(ctx, "app", []store.Message{msg(0), msg(1), msg(2)}); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveMessages(ctx, "app", []store.Message{msg(2), msg(3), msg(4)}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(calls) != 2 || calls[0].rows != 3 || calls[0].err != nil || calls[1].err == nil {
		t.Fatalf("COPY calls on %s = %+v; want 3 rows copied, then one failed on the stored ID", table, calls)
	}
	mu.Unlock()
	got, err := s.RoomMessages(ctx, "app", "room", 0)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, m := range got {
		ids = append(ids, m.ID)
	}
	if want := []string{"b-4", "b-3", "b-2", "b-1", "b-0"}; !slices.Equal(ids, want) {
		t.Fatalf("stored %v, want %v, each once", ids, want)
	}
	if string(got[0].Extra) != `{"k":1}` || got[0].Text != "hi 4" || got[0].Index != 4 || !got[0].CreatedAt.Equal(msg(4).CreatedAt) {
		t.Fatalf("stored %+v, want %+v", got[0], msg(4))
	}

	// COPY's binary rows are bunstore's own (pgCopyRows): NULLs, long
	// and multi-byte text, Fields, negative and large indexes, times
	// before 2000 and after 2100 to the microsecond come back as written.
	odd := []store.Message{
		{ID: "odd-1", RoomID: "room2", Receiver: "ü", Sender: "s", Type: "text", Text: strings.Repeat("名字 \\ '\t\n", 5000), BatchID: "b2", Index: -7,
			CreatedAt: time.Date(1969, 7, 20, 20, 17, 40, 123456789, time.UTC)},
		{ID: "odd-2", RoomID: "room2", Receiver: "r", Sender: "s", Type: "", Text: "", Extra: json.RawMessage(`[]`), Fields: map[string]json.RawMessage{"a": json.RawMessage(`{"b": [1, 2]}`)},
			BatchID: "b2", Index: 1<<31 - 1, CreatedAt: time.Date(2150, 1, 2, 3, 4, 5, 999999000, time.FixedZone("x", 3600))},
	}
	if err := s.SaveMessages(ctx, "app", odd); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(calls) != 3 || calls[2].rows != 2 || calls[2].err != nil {
		t.Fatalf("COPY calls on %s = %+v; want a third, of 2 rows", table, calls)
	}
	mu.Unlock()
	back, err := s.GetMessages(ctx, "app", []string{"odd-1", "odd-2"})
	if err != nil || len(back) != 2 {
		t.Fatalf("GetMessages = %d, %v", len(back), err)
	}
	byID := map[string]store.Message{back[0].ID: back[0], back[1].ID: back[1]}
	for _, want := range odd {
		got := byID[want.ID]
		if got.ID != want.ID || got.Text != want.Text || got.Type != want.Type || got.Receiver != want.Receiver || got.Index != want.Index ||
			string(got.Extra) != string(want.Extra) || (got.Extra == nil) != (want.Extra == nil) ||
			!got.CreatedAt.Equal(want.CreatedAt.Truncate(time.Microsecond)) || len(got.Fields) != len(want.Fields) || string(got.Fields["a"]) != string(want.Fields["a"]) {
			t.Errorf("stored by COPY: %.300v\nwant %.300v", got, want)
		}
	}
}

// TestChunksArePacked checks on each database that a chunk of 500
// recipients is stored packed ("~z;", see bunstore's chunkcodec.go), and
// that a chunk stored by an earlier version, in the compact form
// unpacked, is still read.
func TestChunksArePacked(t *testing.T) {
	forEach(t, func(t *testing.T, be *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db, nil)
		b := &store.Batch{ID: "b-packed", AppID: "app", Sender: "system", Chunks: 1, Count: 500, CreatedAt: time.Now().UTC(), Payload: []byte(`{}`)}
		c := store.Chunk{ChunkRef: store.ChunkRef{AppID: "app", BatchID: b.ID}, NotBefore: b.CreatedAt}
		for i := range 500 {
			c.Recipients = append(c.Recipients, store.Recipient{Receiver: fmt.Sprintf("user-%d", i), Vars: map[string]string{"name": fmt.Sprintf("名字 %d", i)}})
		}
		if err := s.CreateBatch(ctx, b, []store.Chunk{c}); err != nil {
			t.Fatal(err)
		}
		chunks := s.TablePrefix() + "chunks"
		var raw string
		if err := db.QueryRowContext(ctx, "SELECT recipients FROM "+chunks+" WHERE batch_id = ?", b.ID).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(raw, "~z;") || len(raw) > 500*12 {
			t.Errorf("recipients column of 500 recipients: %d bytes, %.20q…; want packed, at most 12 bytes a recipient", len(raw), raw)
		}
		// What an earlier version wrote for the same chunk: the compact
		// form, unpacked.
		var compact strings.Builder
		compact.WriteString("~2;1;4:name;500;")
		for i := range 500 {
			r, v := fmt.Sprintf("user-%d", i), fmt.Sprintf("名字 %d", i)
			fmt.Fprintf(&compact, "m%d:%s0:%d:%s", len(r), r, len(v), v)
		}
		if _, err := db.ExecContext(ctx, "UPDATE "+chunks+" SET recipients = ? WHERE batch_id = ?", compact.String(), b.ID); err != nil {
			t.Fatal(err)
		}
		got, err := s.LoadChunk(ctx, c.ChunkRef)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Recipients, c.Recipients) {
			t.Errorf("a chunk in the unpacked compact form read back as %d recipients, not the ones written", len(got.Recipients))
		}
	})
}

// TestTablesAreWhatMigrateCreates checks that Tables names every table
// Migrate creates under the prefix and no other: hosts and tests drop a
// store's tables by it, and a table it missed was left behind.
func TestTablesAreWhatMigrateCreates(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		for _, bookkeepingOnly := range []bool{false, true} {
			s := newStore(t, db, &bunstore.Options{BookkeepingOnly: bookkeepingOnly})
			got := prefixedTables(t, db, s.TablePrefix())
			want := slices.Sorted(slices.Values(s.Tables()))
			if !slices.Equal(got, want) {
				t.Errorf("BookkeepingOnly %v: Migrate created %q, Tables() = %q", bookkeepingOnly, got, want)
			}
			for _, table := range s.Tables() {
				if _, err := db.ExecContext(t.Context(), "DROP TABLE "+table); err != nil {
					t.Fatalf("drop %s: %v", table, err)
				}
			}
			if left := prefixedTables(t, db, s.TablePrefix()); len(left) > 0 {
				t.Errorf("BookkeepingOnly %v: after dropping Tables(), left %q", bookkeepingOnly, left)
			}
		}
	})
}

// prefixedTables lists, sorted, the tables of db's schema whose names
// start with prefix.
func prefixedTables(t *testing.T, db *bun.DB, prefix string) []string {
	t.Helper()
	q := "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, length(?)) = ?"
	switch db.Dialect().Name() {
	case dialect.PG:
		q = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND left(tablename, length(?)) = ?"
	case dialect.MySQL:
		q = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND LEFT(table_name, CHAR_LENGTH(?)) = ?"
	}
	rows, err := db.QueryContext(t.Context(), q, prefix, prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		out = append(out, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestNamedArgsLeaveValuesAlone: a host's bun.DB may carry named
// arguments (WithNamedArg), which make bun read ?name and \? in a
// statement's text. Values the store writes into its statements must
// come back as they went in: a message's text, and the IDs of the rooms
// and members DirectRooms creates.
func TestNamedArgsLeaveValuesAlone(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db.WithNamedArg("tenant", "REPLACED"), nil)
		const text = `Hi ?tenant, \? ?0 ? ?tenant?`
		const receiver = `u?tenant\?`
		if err := s.AddUsers(ctx, "app", "system", receiver); err != nil {
			t.Fatal(err)
		}
		res, err := s.DirectRooms(ctx, "app", "system", []string{receiver})
		if err != nil || res[0].Err != nil {
			t.Fatalf("DirectRooms = %v, %v", res, err)
		}
		members, err := s.RoomMembers(ctx, "app", []string{res[0].Room})
		if err != nil || !slices.Contains(members[res[0].Room], receiver) {
			t.Fatalf("room %q has members %q (%v), want %q among them", res[0].Room, members[res[0].Room], err, receiver)
		}
		m := store.Message{ID: "m?tenant", AppID: "app", RoomID: res[0].Room, Receiver: receiver, Sender: "system", Type: "text", Text: text,
			CreatedAt: time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)}
		if err := s.SaveMessages(ctx, "app", []store.Message{m}); err != nil {
			t.Fatal(err)
		}
		got, err := s.RoomMessages(ctx, "app", res[0].Room, 0)
		if err != nil || len(got) != 1 {
			t.Fatalf("RoomMessages = %v, %v", got, err)
		}
		if got[0].ID != m.ID || got[0].Text != text || got[0].Receiver != receiver {
			t.Errorf("stored ID %q, text %q, receiver %q; want %q, %q, %q", got[0].ID, got[0].Text, got[0].Receiver, m.ID, text, receiver)
		}
	})
}

// TestPostgresChunkColumnsNotCompressedAgain: on PostgreSQL a chunk's
// recipients and outcomes are STORAGE EXTERNAL (schema version 13),
// whether Migrate or the host's own tool applied Migrations, so TOAST
// does not try to compress what bunstore already packed or wrote in a
// form that does not compress; and a chunk of 500 written as such is
// stored at its own size.
func TestPostgresChunkColumnsNotCompressedAgain(t *testing.T) {
	db := backends[2].get(t)
	ctx := t.Context()
	migrated := newStore(t, db, nil)
	bySQL := unmigratedStore(t, db)
	for _, m := range bySQL.Migrations() {
		for _, q := range m.Statements {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatalf("version %d: %s: %v", m.Version, q, err)
			}
		}
	}
	for name, s := range map[string]*bunstore.Store{"Migrate": migrated, "Migrations": bySQL} {
		table := strings.ToLower(s.TablePrefix() + "chunks")
		rows, err := db.QueryContext(ctx, "SELECT attname, attstorage FROM pg_attribute WHERE attrelid = ?::regclass AND attname IN ('recipients', 'outcomes') ORDER BY attname", table)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for rows.Next() {
			var col, storage string
			if err := rows.Scan(&col, &storage); err != nil {
				t.Fatal(err)
			}
			got[col] = storage
		}
		rows.Close()
		if got["recipients"] != "e" || got["outcomes"] != "e" {
			t.Errorf("%s: storage of %s's recipients and outcomes = %v; want e (EXTERNAL) for both", name, table, got)
		}
	}

	// Outcomes of 500 one-on-one rooms: stored at the size written.
	now := time.Now().UTC()
	var rs []store.Recipient
	for i := range 500 {
		rs = append(rs, store.Recipient{Receiver: fmt.Sprint("u", i)})
	}
	b := &store.Batch{AppID: "app", ID: "b", Sender: "s", Count: 500, Chunks: 1, Payload: []byte("{}"), CreatedAt: now}
	if err := migrated.CreateBatch(ctx, b, []store.Chunk{{Recipients: rs, NotBefore: now}}); err != nil {
		t.Fatal(err)
	}
	ref := store.ChunkRef{AppID: "app", BatchID: "b"}
	if _, _, err := migrated.StartChunk(ctx, &store.StartChunkParams{Ref: ref, At: now, LeaseUntil: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	os := make([]store.Outcome, 500)
	for i, r := range rs {
		os[i] = store.Outcome{Status: store.OutcomeSent, Room: store.DirectRoomID("s", r.Receiver), MessageID: fmt.Sprint("b-", i)}
	}
	if _, err := migrated.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: ref, Outcomes: os, At: now}); err != nil {
		t.Fatal(err)
	}
	var length, stored int
	if err := db.QueryRowContext(ctx, "SELECT octet_length(outcomes), pg_column_size(outcomes) FROM "+migrated.TablePrefix()+"chunks WHERE batch_id = 'b'").Scan(&length, &stored); err != nil {
		t.Fatal(err)
	}
	if length < 500*25 || stored < length {
		t.Errorf("outcomes of 500: %d bytes, stored in %d; want them written as hex room IDs (at least 25 bytes each) and not compressed", length, stored)
	}
	c, err := migrated.LoadChunk(ctx, ref)
	if err != nil || !reflect.DeepEqual(c.Outcomes, os) {
		t.Errorf("the chunk's outcomes read back: %v (equal: %v)", err, c != nil && reflect.DeepEqual(c.Outcomes, os))
	}
}

// TestMessageWriteForms checks that a message reads back byte for byte
// the same whichever way SaveMessages wrote it: a full statement of 500
// through the prepared INSERT with bind parameters (SQLite, MySQL), a
// smaller one with the values in the SQL text, or COPY (PostgreSQL). The
// values are the ones either form could get wrong: quotes, backslashes,
// placeholder look-alikes, NULL against empty, times in other zones and
// below a microsecond.
func TestMessageWriteForms(t *testing.T) {
	forEach(t, func(t *testing.T, be *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db, nil)
		const n = 500
		zone := time.FixedZone("UTC-3", -3*3600)
		msgs := func(batch string) []store.Message {
			out := make([]store.Message, n)
			for i := range out {
				m := store.Message{
					ID: fmt.Sprintf("%s-%d", batch, i), AppID: "app", RoomID: fmt.Sprintf("room-%d", i%7), Receiver: fmt.Sprintf("u'%d\\", i),
					Sender: `s"x`, Type: "text", BatchID: batch, Index: i,
					Text:      []string{"plain", `it's "quoted"`, `back\slash \' \\`, "? $1 :name %s", "", "é 日本 🎉\nline\ttab"}[i%6],
					CreatedAt: time.Date(2026, 4, 10, 17, 30, 15, 123456789+i, zone),
				}
				switch i % 4 {
				case 1:
					m.Extra = json.RawMessage(`{"k": "v\\"q\\\\", "n": 1}`)
				case 2:
					m.Extra = json.RawMessage(`{}`)
					m.Fields = map[string]json.RawMessage{}
				case 3:
					m.Fields = map[string]json.RawMessage{"x": json.RawMessage(`[1, "<&>'"]`)}
				}
				out[i] = m
			}
			return out
		}
		full := msgs("full")
		if err := s.SaveMessages(ctx, "app", full); err != nil {
			t.Fatal(err)
		}
		parts := msgs("parts")
		for _, part := range [][]store.Message{parts[:250], parts[250:]} {
			if err := s.SaveMessages(ctx, "app", part); err != nil {
				t.Fatal(err)
			}
		}
		cols := "app_id, room_id, receiver, sender, type, text, extra, fields, idx, created_at"
		if db.Dialect().Name() == dialect.SQLite {
			cols += ", typeof(extra), typeof(fields), typeof(idx), typeof(created_at)"
		}
		param := "?"
		if db.Dialect().Name() == dialect.PG {
			param = "$1"
		}
		read := func(batch string) [][]sql.NullString {
			rows, err := db.DB.QueryContext(ctx, "SELECT "+cols+" FROM "+s.TablePrefix()+"messages WHERE batch_id = "+param+" ORDER BY idx", batch)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var out [][]sql.NullString
			for rows.Next() {
				r := make([]sql.NullString, strings.Count(cols, ",")+1)
				dest := make([]any, len(r))
				for i := range r {
					dest[i] = &r[i]
				}
				if err := rows.Scan(dest...); err != nil {
					t.Fatal(err)
				}
				out = append(out, r)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			return out
		}
		a, b := read("full"), read("parts")
		if len(a) != n || len(b) != n {
			t.Fatalf("read back %d and %d rows, want %d each", len(a), len(b), n)
		}
		if !reflect.DeepEqual(a, b) {
			for i := range a {
				if !reflect.DeepEqual(a[i], b[i]) {
					t.Fatalf("row %d differs between the forms:\none statement of 500: %v\nstatements of 250:   %v", i, a[i], b[i])
				}
			}
		}
		// And through the API, against what was saved.
		got, err := s.RoomMessages(ctx, "app", "room-1", 0)
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]store.Message{}
		for _, m := range got {
			byID[m.ID] = m
		}
		for _, want := range append(full, parts...) {
			if want.RoomID != "room-1" {
				continue
			}
			m, ok := byID[want.ID]
			if !ok {
				t.Fatalf("message %s not read back", want.ID)
			}
			if m.Text != want.Text || m.Receiver != want.Receiver || m.Sender != want.Sender || string(m.Extra) != string(want.Extra) ||
				!reflect.DeepEqual(m.Fields, want.Fields) || !m.CreatedAt.Equal(want.CreatedAt.Truncate(time.Microsecond)) {
				t.Fatalf("message %s read back as %+v, saved %+v", want.ID, m, want)
			}
		}
	})
}

// TestPreparedMessageInsert: on SQLite and MySQL a full statement of 500
// messages goes through the INSERT that bunstore prepares once per
// connection, not through bun (so a bun.QueryHook does not see it), and a
// smaller one is written into the SQL and goes through bun;
// TestMessageWriteForms checks that both store the same. A repeated ID
// fails the prepared INSERT as a whole, and the retry that skips stored
// IDs stores the rest.
func TestPreparedMessageInsert(t *testing.T) {
	forEach(t, func(t *testing.T, be *backend, db *bun.DB) {
		// On PostgreSQL (pgx) bunstore writes messages with its own
		// statements, never through bun: no INSERT is seen at all.
		viaBun := 1
		if db.Dialect().Name() == dialect.PG {
			viaBun = 0
		}
		ctx := t.Context()
		hook := &insertCounter{}
		s := newStore(t, db.WithQueryHook(hook), nil)
		table := s.TablePrefix() + "messages"
		msgs := func(prefix string, n int) []store.Message {
			out := make([]store.Message, n)
			for i := range out {
				out[i] = store.Message{ID: fmt.Sprintf("%s-%d", prefix, i), AppID: "app", RoomID: "room", Sender: "s", Type: "text", Text: "hi", CreatedAt: time.Now()}
			}
			return out
		}
		count := func() int {
			var n int
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if err := s.SaveMessages(ctx, "app", msgs("small", 499)); err != nil {
			t.Fatal(err)
		}
		if got := hook.inserts(table); got != viaBun {
			t.Errorf("499 messages: %d INSERTs through bun, want %d (the values in the SQL)", got, viaBun)
		}
		full := msgs("full", 500)
		if err := s.SaveMessages(ctx, "app", full); err != nil {
			t.Fatal(err)
		}
		if got := hook.inserts(table); got != viaBun {
			t.Errorf("500 messages: %d INSERTs through bun in all, want still %d (the prepared INSERT bypasses bun)", got, viaBun)
		}
		if n := count(); n != 999 {
			t.Fatalf("%d messages stored, want 999", n)
		}
		full[0].ID = "full-new"
		if err := s.SaveMessages(ctx, "app", full); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != 1000 {
			t.Fatalf("%d messages stored after saving 499 again with one new, want 1000", n)
		}
		if got := hook.inserts(table); got != 2*viaBun {
			t.Errorf("after a repeat: %d INSERTs through bun, want %d (the retry skipping stored IDs)", got, 2*viaBun)
		}
	})
}

// insertCounter is a bun.QueryHook that counts INSERTs by table.
type insertCounter struct {
	mu      sync.Mutex
	queries []string
}

func (c *insertCounter) BeforeQuery(ctx context.Context, e *bun.QueryEvent) context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queries = append(c.queries, e.Query)
	return ctx
}

func (c *insertCounter) AfterQuery(context.Context, *bun.QueryEvent) {}

func (c *insertCounter) inserts(table string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, q := range c.queries {
		if strings.HasPrefix(q, "INSERT INTO "+table+" ") {
			n++
		}
	}
	return n
}
