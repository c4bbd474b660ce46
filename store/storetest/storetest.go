// Package storetest is the conformance suite for implementations of the
// interfaces in package store. Every implementation should pass [Run]
// before it is used in production:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			return mystore.New(...) // fresh and isolated for each call
//		}, nil)
//	}
//
// A team that implements only part of the seam (say its own Directory and
// Messages beside chatbatch's Batches) runs the matching part:
// [RunDirectory], [RunMessages], [RunBatches].
//
// newStore is called once per subtest and must return an empty store that
// no other subtest sees (a fresh schema, database, table prefix or
// in-memory instance); subtests run in parallel. Directory and Messages
// cases also need the store to implement [Inspector], so they can seed
// users and rooms and read messages back.
//
// Every Batches case runs: store.Batches is one required contract. The
// cases of the optional interfaces of a Directory or Messages store
// (DirectRoomNamer, DirectRoomResolver, MessageReader, MessageDeleter) are
// skipped, with a message saying what chatbatch does without the
// interface, when the store does not implement it; the store package's
// documentation lists them.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/store"
)

// Inspector is what the suite needs beyond the store interfaces: a way to
// seed users and rooms and to read back what was stored. memstore and
// bunstore implement it; so can a host's own adapter, usually in a few
// lines over its existing tables.
type Inspector interface {
	// AddUsers makes ids users of app; existing users are left alone.
	AddUsers(ctx context.Context, app string, ids ...string) error
	// AddRoom creates room id in app with the given members.
	AddRoom(ctx context.Context, app, id string, members ...string) error
	// UserRooms returns the IDs of the rooms user is a member of.
	UserRooms(ctx context.Context, app, user string) ([]string, error)
	// RoomMessages returns up to limit messages of a room, newest first;
	// limit <= 0 means all.
	RoomMessages(ctx context.Context, app, room string, limit int) ([]store.Message, error)
}

// Options tunes the suite to an implementation. nil means the defaults.
type Options struct {
	// TimePrecision is how much a stored time may differ from the time
	// written (a database column's resolution). Defaults to 1µs.
	TimePrecision time.Duration
}

func (o *Options) precision() time.Duration {
	if o == nil || o.TimePrecision <= 0 {
		return time.Microsecond
	}
	return o.TimePrecision
}

// Run runs every case of the suite against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) store.Store, opts *Options) {
	t.Run("Directory", func(t *testing.T) {
		RunDirectory(t, func(t *testing.T) store.Directory { return newStore(t) }, opts)
	})
	t.Run("Messages", func(t *testing.T) {
		RunMessages(t, func(t *testing.T) store.Messages { return newStore(t) }, opts)
	})
	t.Run("Batches", func(t *testing.T) {
		RunBatches(t, func(t *testing.T) store.Batches { return newStore(t) }, opts)
	})
}

type testCase[S any] struct {
	name string
	fn   func(t *testing.T, s S, opts *Options)
}

func runCases[S any](t *testing.T, newStore func(t *testing.T) S, opts *Options, cases []testCase[S]) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, newStore(t), opts)
		})
	}
}

func inspector(t *testing.T, s any) Inspector {
	t.Helper()
	in, ok := s.(Inspector)
	if !ok {
		t.Fatalf("store %T does not implement storetest.Inspector, which the Directory and Messages cases need to seed and read back data", s)
	}
	return in
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want one matching %v", what, err, target)
	}
}

func sameTime(t *testing.T, what string, got, want time.Time, opts *Options) {
	t.Helper()
	if want.IsZero() {
		if !got.IsZero() {
			t.Errorf("%s = %v, want the zero time", what, got)
		}
		return
	}
	if got.Location() != time.UTC {
		t.Errorf("%s = %v is not in UTC", what, got)
	}
	if d := got.Sub(want).Abs(); d > opts.precision() {
		t.Errorf("%s = %v, want %v (±%v)", what, got, want, opts.precision())
	}
}

// Test data that exercises encodings: multi-byte UTF-8, emoji, quotes,
// backslashes, JSON-looking text and dollar signs.
const (
	tricky      = "Hi Alice,您的訂單 ORD-001 已出貨! 🚀 \"quoted\" \\ back\\slash $name$ 'single' <b>&amp;</b>\n\ttab ŞĞÜ ?x ? $1 :name"
	trickyExtra = `{"title":"系統公告 🎉","nested":{"q":"\"x\"","bs":"a\\b","nl":"l1\nl2"},"list":[1,2.50,true,null,"$orderId$"],"empty":{}}`
)

func ctxT(t *testing.T) context.Context { return t.Context() }

// RunDirectory runs the Directory cases. The stores must implement Inspector.
func RunDirectory(t *testing.T, newStore func(t *testing.T) store.Directory, opts *Options) {
	runCases(t, newStore, opts, []testCase[store.Directory]{
		{"MissingUsers", testMissingUsers},
		{"MissingRooms", testMissingRooms},
		{"MissingManyIDs", testMissingManyIDs},
		{"DirectRoom", testDirectRoom},
		{"DirectRoomWithSelf", testDirectRoomWithSelf},
		{"DirectRoomMissingUser", testDirectRoomMissingUser},
		{"DirectRoomConcurrent", testDirectRoomConcurrent},
		{"RoomMembers", testRoomMembers},
		{"DirectoryAppIsolation", testDirectoryAppIsolation},
		{"DirectoryContextCanceled", testDirectoryContextCanceled},
		{"TrickyIDs", testTrickyIDs},
		{"DirectRoomCaseCollision", testDirectRoomCaseCollision},
		{"DirectRooms", testDirectRooms},
		{"DirectRoomsConcurrent", testDirectRoomsConcurrent},
		{"DirectRoomsMany", testDirectRoomsMany},
		{"AddRoomReplacesMembers", testAddRoomReplaces},
		{"DirectRoomNamer", testDirectRoomNamer},
		{"UnstorableIDs", testUnstorableIDs},
	})
}

// testListBatches checks ListBatches: newest first, paging that stays
// stable while batches are added, filters, apps apart.
func testListBatches(t *testing.T, s store.Batches, opts *Options) {
	ctx := ctxT(t)
	base := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	mkBy := func(app, id, createdBy string, created time.Time, chunks int) []store.Chunk {
		b, cs := newBatch(app, id, created, slices.Repeat([]int{1}, chunks)...)
		b.CreatedBy = createdBy
		must(t, s.CreateBatch(ctx, b, cs))
		return cs
	}
	mk := func(app, id string, created time.Time, chunks int) []store.Chunk {
		return mkBy(app, id, "", created, chunks)
	}
	mkBy("app1", "b-1", "alice", base, 1)
	done := mk("app1", "b-2", base.Add(time.Minute), 1)
	failedCs := mkBy("app1", "b-3", "alice", base.Add(2*time.Minute), 2)
	mkBy("app1", "b-4a", "bob", base.Add(3*time.Minute), 1)
	mk("app1", "b-4b", base.Add(3*time.Minute), 1) // same time: ID breaks the tie
	canceled := mk("app1", "b-5", base.Add(4*time.Minute), 1)
	mkBy("app2", "b-other", "alice", base.Add(5*time.Minute), 1)
	_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: done[0].ChunkRef, Outcomes: outcomes(store.OutcomeSent), At: base.Add(time.Hour)})
	must(t, err)
	_, err = s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: failedCs[0].ChunkRef, Outcomes: outcomes(store.OutcomeFailed), At: base.Add(time.Hour)})
	must(t, err)
	_, err = s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: canceled[0].BatchID, At: base.Add(time.Hour)})
	must(t, err)
	now := base.Add(2 * time.Hour)
	list := func(p store.ListBatchesParams) []string {
		t.Helper()
		p.AppID, p.Now = "app1", now
		got, err := s.ListBatches(ctx, &p)
		must(t, err)
		ids := make([]string, len(got))
		for i, b := range got {
			ids[i] = b.ID
			if b.Payload != nil || b.AppID != "app1" {
				t.Errorf("listed batch %+v: want it without payload, of app1", b)
			}
		}
		return ids
	}
	check := func(what string, got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}
	check("all", list(store.ListBatchesParams{Limit: 10}), "b-5", "b-4b", "b-4a", "b-3", "b-2", "b-1")
	// Pages of 2, continued after the last of each; a batch added in
	// between appears on none of the later pages.
	page1, err := s.ListBatches(ctx, &store.ListBatchesParams{AppID: "app1", Now: now, Limit: 2})
	must(t, err)
	mk("app1", "b-6", base.Add(6*time.Minute), 1)
	last := page1[len(page1)-1]
	check("page 2", list(store.ListBatchesParams{Limit: 2, AfterCreatedAt: last.CreatedAt, AfterID: last.ID}), "b-4a", "b-3")
	check("page 3", list(store.ListBatchesParams{Limit: 2, AfterCreatedAt: base.Add(2 * time.Minute), AfterID: "b-3"}), "b-2", "b-1")
	check("created between", list(store.ListBatchesParams{Limit: 10, CreatedAfter: base, CreatedBefore: base.Add(3 * time.Minute)}), "b-3", "b-2")
	check("completed", list(store.ListBatchesParams{Limit: 10, Statuses: []store.Status{store.StatusCompleted}}), "b-2")
	check("running or canceled", list(store.ListBatchesParams{Limit: 10, Statuses: []store.Status{store.StatusRunning, store.StatusCanceled}}), "b-5", "b-3")
	check("queued", list(store.ListBatchesParams{Limit: 10, Statuses: []store.Status{store.StatusQueued}}), "b-6", "b-4b", "b-4a", "b-1")
	check("completed with errors (none)", list(store.ListBatchesParams{Limit: 10, Statuses: []store.Status{store.StatusCompletedWithErrors}}))
	check("created by alice", list(store.ListBatchesParams{Limit: 10, CreatedBy: "alice"}), "b-3", "b-1")
	check("created by alice, page 2", list(store.ListBatchesParams{Limit: 10, CreatedBy: "alice", AfterCreatedAt: base.Add(2 * time.Minute), AfterID: "b-3"}), "b-1")
	check("created by alice, running", list(store.ListBatchesParams{Limit: 10, CreatedBy: "alice", Statuses: []store.Status{store.StatusRunning}}), "b-3")
	check("created by Alice (IDs are case-sensitive)", list(store.ListBatchesParams{Limit: 10, CreatedBy: "Alice"}))
	check("created by carol (none)", list(store.ListBatchesParams{Limit: 10, CreatedBy: "carol"}))
	got, err := s.ListBatches(ctx, &store.ListBatchesParams{AppID: "app2", Now: now, Limit: 10})
	must(t, err)
	if len(got) != 1 || got[0].ID != "b-other" {
		t.Errorf("app2's batches: %+v", got)
	}
	b, err := s.GetBatch(ctx, "app1", "b-2")
	must(t, err)
	listed := list(store.ListBatchesParams{Limit: 10, Statuses: []store.Status{store.StatusCompleted}})
	if len(listed) == 1 {
		full, err := s.ListBatches(ctx, &store.ListBatchesParams{AppID: "app1", Now: now, Limit: 10, Statuses: []store.Status{store.StatusCompleted}})
		must(t, err)
		if full[0].Sent != b.Sent || full[0].ChunksDone != b.ChunksDone || full[0].Count != b.Count {
			t.Errorf("listed %+v, GetBatch %+v: want the same counters", full[0], b)
		}
		sameTime(t, "listed FinishedAt", full[0].FinishedAt, b.FinishedAt, opts)
	}
}

// testUnstorableBatchIDs: a batch ID with a NUL byte or invalid UTF-8
// cannot exist: ErrNotFound, never a store error.
func testUnstorableBatchIDs(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	for _, id := range []string{"batch-\x00", "batch-\xff"} {
		_, err := s.GetBatch(ctx, "app1", id)
		wantErr(t, err, store.ErrNotFound, "GetBatch of an unstorable ID")
		_, err = s.LoadChunk(ctx, store.ChunkRef{AppID: "app1", BatchID: id})
		wantErr(t, err, store.ErrNotFound, "LoadChunk of an unstorable ID")
		_, err = s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: id, At: time.Now().UTC()})
		wantErr(t, err, store.ErrNotFound, "CancelBatch of an unstorable ID")
	}
}

// testDirectRoomNamer checks the optional store.DirectRoomNamer on its
// own: the name it gives is the room DirectRoom finds or creates, for
// either order of the pair, and naming creates nothing.
func testDirectRoomNamer(t *testing.T, s store.Directory, _ *Options) {
	n, ok := s.(store.DirectRoomNamer)
	if !ok {
		t.Skipf("%T does not implement store.DirectRoomNamer; dry runs then name only the receiver", s)
	}
	ctx := ctxT(t)
	must(t, inspector(t, s).AddUsers(ctx, "app1", "user-a", "user-b", "用戶-c"))
	for _, pair := range [][2]string{{"user-a", "user-b"}, {"用戶-c", "user-a"}, {"user-b", "user-b"}} {
		a, b := pair[0], pair[1]
		id := n.DirectRoomID(a, b)
		if id == "" || id != n.DirectRoomID(b, a) {
			t.Errorf("DirectRoomID(%q, %q) = %q, DirectRoomID(%q, %q) = %q; want one non-empty ID", a, b, id, b, a, n.DirectRoomID(b, a))
		}
		if missing, err := s.MissingRooms(ctx, "app1", []string{id}); err != nil || len(missing) != 1 {
			t.Errorf("naming the room of %q and %q created it (MissingRooms = %v, %v)", a, b, missing, err)
		}
		room, err := s.DirectRoom(ctx, "app1", a, b)
		must(t, err)
		if room != id {
			t.Errorf("DirectRoom(%q, %q) = %q, but DirectRoomID names %q", a, b, room, id)
		}
	}
}

// testUnstorableIDs asks for IDs that nothing can have been stored under
// (a NUL byte, invalid UTF-8): they are absent, never a store error, so
// that the API answers 404 instead of 503.
func testUnstorableIDs(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	must(t, inspector(t, s).AddUsers(ctx, "app1", "user-a"))
	bad := []string{"a\x00b", "\xff\xfe", "user-\xc3("}
	missing, err := s.MissingUsers(ctx, "app1", append([]string{"user-a"}, bad...))
	must(t, err)
	if !slices.Equal(missing, bad) {
		t.Errorf("MissingUsers over unstorable IDs = %q, want them all missing", missing)
	}
	missing, err = s.MissingRooms(ctx, "app1", bad)
	must(t, err)
	if !slices.Equal(missing, bad) {
		t.Errorf("MissingRooms over unstorable IDs = %q, want them all missing", missing)
	}
	members, err := s.RoomMembers(ctx, "app1", bad)
	must(t, err)
	if len(members) != 0 {
		t.Errorf("RoomMembers over unstorable IDs = %v, want none", members)
	}
	if _, err := s.DirectRoom(ctx, "app1", "user-a", bad[0]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DirectRoom with an unstorable user = %v, want ErrNotFound", err)
	}
}

func testMissingUsers(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	must(t, inspector(t, s).AddUsers(ctx, "app1", "user-a", "user-b", "用戶-c"))
	got, err := s.MissingUsers(ctx, "app1", []string{"user-a", "ghost", "用戶-c", "ghost", "nobody", "user-b"})
	must(t, err)
	if want := []string{"ghost", "nobody"}; !slices.Equal(got, want) {
		t.Errorf("MissingUsers = %q, want %q (each once, in order of first appearance)", got, want)
	}
	got, err = s.MissingUsers(ctx, "app1", []string{"user-a", "user-b"})
	must(t, err)
	if len(got) != 0 {
		t.Errorf("MissingUsers of existing users = %q, want none", got)
	}
	got, err = s.MissingUsers(ctx, "app1", nil)
	must(t, err)
	if len(got) != 0 {
		t.Errorf("MissingUsers(nil) = %q, want none", got)
	}
	// Case matters: user IDs are compared exactly.
	got, err = s.MissingUsers(ctx, "app1", []string{"USER-A"})
	must(t, err)
	if !slices.Equal(got, []string{"USER-A"}) {
		t.Errorf("MissingUsers(USER-A) = %q, want [USER-A]: IDs are case-sensitive", got)
	}
}

func testMissingRooms(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	in := inspector(t, s)
	must(t, in.AddUsers(ctx, "app1", "u1"))
	must(t, in.AddRoom(ctx, "app1", "room-001", "u1"))
	must(t, in.AddRoom(ctx, "app1", "房間-2", "u1"))
	got, err := s.MissingRooms(ctx, "app1", []string{"room-404", "room-001", "房間-2", "room-404", "room-x"})
	must(t, err)
	if want := []string{"room-404", "room-x"}; !slices.Equal(got, want) {
		t.Errorf("MissingRooms = %q, want %q", got, want)
	}
	// A direct room counts as a room once created.
	id, err := s.DirectRoom(ctx, "app1", "u1", "u1")
	must(t, err)
	got, err = s.MissingRooms(ctx, "app1", []string{id})
	must(t, err)
	if len(got) != 0 {
		t.Errorf("MissingRooms(direct room %q) = %q, want none", id, got)
	}
}

func testMissingManyIDs(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	const n = 12000 // beyond any single IN list or bind-parameter limit
	ids := make([]string, 0, n)
	for i := range n {
		ids = append(ids, fmt.Sprintf("user-%05d", i))
	}
	must(t, inspector(t, s).AddUsers(ctx, "app1", ids[:n-3]...))
	query := append(slices.Clone(ids), "user-00001", "user-x")
	got, err := s.MissingUsers(ctx, "app1", query)
	must(t, err)
	if want := append(slices.Clone(ids[n-3:]), "user-x"); !slices.Equal(got, want) {
		t.Errorf("MissingUsers over %d IDs = %q, want %q", len(query), got, want)
	}
}

func testDirectRoom(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	in := inspector(t, s)
	must(t, in.AddUsers(ctx, "app1", "system", "user-a", "user-b"))
	ab, err := s.DirectRoom(ctx, "app1", "system", "user-a")
	must(t, err)
	if ab == "" {
		t.Fatal("DirectRoom returned an empty room ID")
	}
	ba, err := s.DirectRoom(ctx, "app1", "user-a", "system")
	must(t, err)
	if ab != ba {
		t.Errorf("DirectRoom(system, user-a) = %q but DirectRoom(user-a, system) = %q; the pair is unordered", ab, ba)
	}
	other, err := s.DirectRoom(ctx, "app1", "system", "user-b")
	must(t, err)
	if other == ab {
		t.Errorf("two different pairs share room %q", ab)
	}
	members, err := s.RoomMembers(ctx, "app1", []string{ab})
	must(t, err)
	got := slices.Sorted(slices.Values(members[ab]))
	if want := []string{"system", "user-a"}; !slices.Equal(got, want) {
		t.Errorf("members of the direct room = %q, want %q", got, want)
	}
	rooms, err := in.UserRooms(ctx, "app1", "user-a")
	must(t, err)
	if !slices.Equal(rooms, []string{ab}) {
		t.Errorf("user-a's rooms = %q, want exactly [%s]", rooms, ab)
	}
}

func testDirectRoomWithSelf(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	must(t, inspector(t, s).AddUsers(ctx, "app1", "solo"))
	id, err := s.DirectRoom(ctx, "app1", "solo", "solo")
	must(t, err)
	members, err := s.RoomMembers(ctx, "app1", []string{id})
	must(t, err)
	if !slices.Equal(members[id], []string{"solo"}) {
		t.Errorf("members of a user's room with themself = %q, want [solo]", members[id])
	}
}

func testDirectRoomMissingUser(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	in := inspector(t, s)
	must(t, in.AddUsers(ctx, "app1", "system"))
	_, err := s.DirectRoom(ctx, "app1", "system", "ghost")
	wantErr(t, err, store.ErrNotFound, "DirectRoom with a missing receiver")
	_, err = s.DirectRoom(ctx, "app1", "ghost", "system")
	wantErr(t, err, store.ErrNotFound, "DirectRoom with a missing sender")
	rooms, err := in.UserRooms(ctx, "app1", "system")
	must(t, err)
	if len(rooms) != 0 {
		t.Errorf("a failed DirectRoom left rooms behind: %q", rooms)
	}
}

func testDirectRoomConcurrent(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	in := inspector(t, s)
	must(t, in.AddUsers(ctx, "app1", "system", "user-a"))
	const n = 16
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			a, b := "system", "user-a"
			if i%2 == 1 {
				a, b = b, a
			}
			ids[i], errs[i] = s.DirectRoom(ctx, "app1", a, b)
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		must(t, errs[i])
		if ids[i] != ids[0] {
			t.Fatalf("concurrent DirectRoom calls returned %q and %q", ids[0], ids[i])
		}
	}
	for _, u := range []string{"system", "user-a"} {
		rooms, err := in.UserRooms(ctx, "app1", u)
		must(t, err)
		if !slices.Equal(rooms, []string{ids[0]}) {
			t.Errorf("%s's rooms after %d concurrent DirectRoom calls = %q, want exactly one", u, n, rooms)
		}
	}
	members, err := s.RoomMembers(ctx, "app1", []string{ids[0]})
	must(t, err)
	if len(members[ids[0]]) != 2 {
		t.Errorf("direct room members = %q, want 2 members", members[ids[0]])
	}
}

func testRoomMembers(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	in := inspector(t, s)
	must(t, in.AddUsers(ctx, "app1", "u1", "u2", "u3"))
	must(t, in.AddRoom(ctx, "app1", "room-1", "u1", "u2", "u3"))
	must(t, in.AddRoom(ctx, "app1", "room-2", "u3"))
	must(t, in.AddRoom(ctx, "app1", "room-empty"))
	got, err := s.RoomMembers(ctx, "app1", []string{"room-1", "room-2", "room-404", "room-empty"})
	must(t, err)
	for room, want := range map[string][]string{"room-1": {"u1", "u2", "u3"}, "room-2": {"u3"}} {
		if g := slices.Sorted(slices.Values(got[room])); !slices.Equal(g, want) {
			t.Errorf("members of %s = %q, want %q", room, g, want)
		}
	}
	if _, ok := got["room-404"]; ok {
		t.Error("RoomMembers includes a room that does not exist")
	}
	if len(got["room-empty"]) != 0 {
		t.Errorf("members of an empty room = %q", got["room-empty"])
	}
}

func testDirectoryAppIsolation(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	in := inspector(t, s)
	must(t, in.AddUsers(ctx, "app-a", "user-1", "user-2"))
	must(t, in.AddRoom(ctx, "app-a", "room-1", "user-1"))
	missing, err := s.MissingUsers(ctx, "app-b", []string{"user-1"})
	must(t, err)
	if !slices.Equal(missing, []string{"user-1"}) {
		t.Errorf("app-b sees app-a's user: MissingUsers = %q", missing)
	}
	missing, err = s.MissingRooms(ctx, "app-b", []string{"room-1"})
	must(t, err)
	if !slices.Equal(missing, []string{"room-1"}) {
		t.Errorf("app-b sees app-a's room: MissingRooms = %q", missing)
	}
	members, err := s.RoomMembers(ctx, "app-b", []string{"room-1"})
	must(t, err)
	if len(members) != 0 {
		t.Errorf("app-b sees app-a's room members: %q", members)
	}
	_, err = s.DirectRoom(ctx, "app-b", "user-1", "user-2")
	wantErr(t, err, store.ErrNotFound, "DirectRoom in app-b with app-a's users")
}

func testDirectoryContextCanceled(t *testing.T, s store.Directory, _ *Options) {
	must(t, inspector(t, s).AddUsers(ctxT(t), "app1", "u1", "u2"))
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	calls := map[string]func() error{
		"MissingUsers": func() error { _, err := s.MissingUsers(ctx, "app1", []string{"u1"}); return err },
		"MissingRooms": func() error { _, err := s.MissingRooms(ctx, "app1", []string{"r1"}); return err },
		"DirectRoom":   func() error { _, err := s.DirectRoom(ctx, "app1", "u1", "u2"); return err },
		"RoomMembers":  func() error { _, err := s.RoomMembers(ctx, "app1", []string{"r1"}); return err },
	}
	checkCanceled(t, calls)
}

func checkCanceled(t *testing.T, calls map[string]func() error) {
	t.Helper()
	for name, call := range calls {
		start := time.Now()
		err := call()
		if err == nil {
			t.Errorf("%s with a canceled context returned no error", name)
		} else if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context returned %v; want an error wrapping context.Canceled", name, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s with a canceled context took %v", name, d)
		}
	}
}

// RunMessages runs the Messages cases. The stores must implement Inspector.
func RunMessages(t *testing.T, newStore func(t *testing.T) store.Messages, opts *Options) {
	runCases(t, newStore, opts, []testCase[store.Messages]{
		{"SaveRoundTrip", testSaveRoundTrip},
		{"SaveIdempotent", testSaveIdempotent},
		{"SaveOverlapping", testSaveOverlapping},
		{"SaveEmpty", testSaveEmpty},
		{"SaveLargeAndNonASCII", testSaveLarge},
		{"SaveManyMessages", testSaveMany},
		{"SaveConcurrentWriters", testSaveConcurrent},
		{"MessagesAppIsolation", testMessagesAppIsolation},
		{"MessagesContextCanceled", testMessagesContextCanceled},
		{"SameCreatedAtOrder", testSameCreatedAtOrder},
		{"NonUTCTimes", testNonUTCTimes},
		{"GetMessages", testGetMessages},
		{"DeleteMessages", testDeleteMessages},
	})
}

// testDeleteMessages checks the optional store.MessageDeleter.
func testDeleteMessages(t *testing.T, s store.Messages, _ *Options) {
	d, ok := s.(store.MessageDeleter)
	if !ok {
		t.Skipf("%T does not implement store.MessageDeleter; recalls then answer 501", s)
	}
	ctx := ctxT(t)
	at := time.Date(2026, 4, 10, 9, 30, 0, 0, time.UTC)
	var msgs []store.Message
	for i := range 3 {
		msgs = append(msgs, sampleMessage("app1", fmt.Sprintf("batch-d-%d", i), "room-1", at.Add(time.Duration(i)*time.Second)))
	}
	must(t, s.SaveMessages(ctx, "app1", msgs))
	must(t, s.SaveMessages(ctx, "app2", []store.Message{sampleMessage("app2", "batch-d-0", "room-1", at)}))
	must(t, d.DeleteMessages(ctx, "app1", []string{"batch-d-0", "batch-d-2", "not-stored", "\x00"}))
	must(t, d.DeleteMessages(ctx, "app1", []string{"batch-d-0"})) // again: no error
	if got := roomMessages(t, s, "app1", "room-1"); len(got) != 1 || got[0].ID != "batch-d-1" {
		t.Errorf("after deleting 0 and 2, room-1 holds %+v", got)
	}
	if got := roomMessages(t, s, "app2", "room-1"); len(got) != 1 {
		t.Errorf("deleting app1's messages touched app2's: %+v", got)
	}
	// A deleted ID can be saved again (a message the recall raced with).
	must(t, s.SaveMessages(ctx, "app1", msgs[:1]))
	if got := roomMessages(t, s, "app1", "room-1"); len(got) != 2 {
		t.Errorf("after saving batch-d-0 again: %d messages", len(got))
	}
}

// testGetMessages checks the optional store.MessageReader.
func testGetMessages(t *testing.T, s store.Messages, opts *Options) {
	r, ok := s.(store.MessageReader)
	if !ok {
		t.Skipf("%T does not implement store.MessageReader; GET /messages/batch?batchID= then answers 501", s)
	}
	ctx := ctxT(t)
	at := time.Date(2026, 4, 10, 9, 30, 0, 0, time.UTC)
	var msgs []store.Message
	for i := range 600 { // more than one statement's worth of IDs
		m := sampleMessage("app1", fmt.Sprintf("batch-x-%d", i), fmt.Sprintf("room-%d", i%3), at.Add(time.Duration(i)*time.Millisecond))
		m.Index = i
		msgs = append(msgs, m)
	}
	msgs[5].Extra = []byte(trickyExtra)
	msgs[5].Fields = map[string]json.RawMessage{"mentions": []byte(`["user-a"]`)}
	must(t, s.SaveMessages(ctx, "app1", msgs))
	must(t, s.SaveMessages(ctx, "app2", []store.Message{sampleMessage("app2", "batch-x-0", "room-0", at)}))

	ids := []string{"batch-x-5", "nope", "batch-x-599", "batch-x-5", "\x00bad"}
	for i := 100; i < 580; i++ {
		ids = append(ids, fmt.Sprintf("batch-x-%d", i))
	}
	got, err := r.GetMessages(ctx, "app1", ids)
	must(t, err)
	byID := map[string]store.Message{}
	for _, m := range got {
		if _, dup := byID[m.ID]; dup {
			t.Errorf("GetMessages returned %s twice", m.ID)
		}
		byID[m.ID] = m
	}
	if len(byID) != 482 {
		t.Errorf("GetMessages found %d messages, want 482 (the unknown IDs left out)", len(byID))
	}
	sameMessage(t, byID["batch-x-5"], msgs[5], opts)
	sameMessage(t, byID["batch-x-599"], msgs[599], opts)
	if other, err := r.GetMessages(ctx, "app2", []string{"batch-x-0", "batch-x-5"}); err != nil || len(other) != 1 || other[0].AppID != "app2" {
		t.Errorf("app2's GetMessages = %+v, %v; want only app2's one message", other, err)
	}
	if none, err := r.GetMessages(ctx, "app1", nil); err != nil || len(none) != 0 {
		t.Errorf("GetMessages(no IDs) = %v, %v", none, err)
	}
}

func sampleMessage(app, id, room string, at time.Time) store.Message {
	return store.Message{
		ID: id, AppID: app, RoomID: room, Receiver: "user-a", Sender: "system", Type: "text",
		Text: "hello " + id, BatchID: "batch-20260410-abc123", Index: 7, CreatedAt: at,
	}
}

func roomMessages(t *testing.T, s any, app, room string) []store.Message {
	t.Helper()
	msgs, err := inspector(t, s).RoomMessages(ctxT(t), app, room, 0)
	must(t, err)
	return msgs
}

func sameMessage(t *testing.T, got, want store.Message, opts *Options) {
	t.Helper()
	sameTime(t, "message "+want.ID+" CreatedAt", got.CreatedAt, want.CreatedAt, opts)
	got.CreatedAt, want.CreatedAt = time.Time{}, time.Time{}
	if !bytes.Equal(got.Extra, want.Extra) {
		t.Errorf("message %s Extra = %q, want byte-exact %q", want.ID, got.Extra, want.Extra)
	}
	got.Extra, want.Extra = nil, nil
	if len(got.Fields) != len(want.Fields) {
		t.Errorf("message %s Fields = %q, want %q", want.ID, got.Fields, want.Fields)
	}
	for k, v := range want.Fields {
		if !bytes.Equal(got.Fields[k], v) {
			t.Errorf("message %s Fields[%q] = %q, want byte-exact %q", want.ID, k, got.Fields[k], v)
		}
	}
	got.Fields, want.Fields = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("message round trip:\n got %+v\nwant %+v", got, want)
	}
}

func testSaveRoundTrip(t *testing.T, s store.Messages, opts *Options) {
	ctx := ctxT(t)
	at := time.Date(2026, 4, 10, 9, 30, 15, 123456000, time.UTC)
	full := sampleMessage("app1", "batch-20260410-abc123-0", "room-1", at)
	full.Text = tricky
	full.Extra = []byte(trickyExtra)
	full.Fields = map[string]json.RawMessage{"mentions": []byte(`["user-a"]`), "replyTo": []byte(`"m-1"`)}
	plain := sampleMessage("app1", "batch-20260410-abc123-1", "room-1", at.Add(time.Second))
	plain.Receiver = ""
	must(t, s.SaveMessages(ctx, "app1", []store.Message{full, plain}))
	got := roomMessages(t, s, "app1", "room-1")
	if len(got) != 2 {
		t.Fatalf("room has %d messages, want 2", len(got))
	}
	// Newest first.
	sameMessage(t, got[0], plain, opts)
	sameMessage(t, got[1], full, opts)
	if got[0].Extra != nil || got[0].Fields != nil {
		t.Errorf("a message without extra came back with Extra=%q Fields=%q; want nil", got[0].Extra, got[0].Fields)
	}
	limited, err := inspector(t, s).RoomMessages(ctx, "app1", "room-1", 1)
	must(t, err)
	if len(limited) != 1 || limited[0].ID != plain.ID {
		t.Errorf("RoomMessages(limit 1) = %d messages, want the newest only", len(limited))
	}
}

func testSaveIdempotent(t *testing.T, s store.Messages, opts *Options) {
	ctx := ctxT(t)
	at := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	msgs := []store.Message{sampleMessage("app1", "m-0", "room-1", at), sampleMessage("app1", "m-1", "room-1", at)}
	must(t, s.SaveMessages(ctx, "app1", msgs))
	again := slices.Clone(msgs)
	again[0].Text = "changed on the second attempt"
	must(t, s.SaveMessages(ctx, "app1", again))
	got := roomMessages(t, s, "app1", "room-1")
	if len(got) != 2 {
		t.Fatalf("saving the same 2 IDs twice left %d messages, want 2", len(got))
	}
	for _, m := range got {
		if m.ID == "m-0" && m.Text != msgs[0].Text {
			t.Errorf("a repeated save changed message m-0 to %q; existing messages must be left unchanged", m.Text)
		}
	}
}

func testSaveOverlapping(t *testing.T, s store.Messages, _ *Options) {
	ctx := ctxT(t)
	at := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	m := func(id string) store.Message { return sampleMessage("app1", id, "room-1", at) }
	must(t, s.SaveMessages(ctx, "app1", []store.Message{m("a"), m("b")}))
	must(t, s.SaveMessages(ctx, "app1", []store.Message{m("b"), m("c"), m("c")}))
	got := roomMessages(t, s, "app1", "room-1")
	ids := make([]string, len(got))
	for i, g := range got {
		ids[i] = g.ID
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Errorf("after overlapping saves the room holds %q, want [a b c]", ids)
	}
}

func testSaveEmpty(t *testing.T, s store.Messages, _ *Options) {
	must(t, s.SaveMessages(ctxT(t), "app1", nil))
	must(t, s.SaveMessages(ctxT(t), "app1", []store.Message{}))
}

func testSaveLarge(t *testing.T, s store.Messages, opts *Options) {
	ctx := ctxT(t)
	at := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	big := sampleMessage("app1", "big", "room-大", at)
	big.Text = strings.Repeat("訂單🚀x\"\\", 8<<10) // ~100 KiB of multi-byte text
	var extra strings.Builder
	extra.WriteString(`{"items":[`)
	for i := range 2000 {
		if i > 0 {
			extra.WriteByte(',')
		}
		fmt.Fprintf(&extra, `{"n":%d,"s":"項目 %d 🎁 \"q\" \\"}`, i, i)
	}
	extra.WriteString(`]}`)
	big.Extra = []byte(extra.String())
	big.Sender, big.Receiver, big.Type = "發送者", "接收者-😀", "custom/類型"
	must(t, s.SaveMessages(ctx, "app1", []store.Message{big}))
	got := roomMessages(t, s, "app1", "room-大")
	if len(got) != 1 {
		t.Fatalf("room has %d messages, want 1", len(got))
	}
	if got[0].Text != big.Text {
		t.Errorf("large text did not round-trip byte-exact (got %d bytes, want %d)", len(got[0].Text), len(big.Text))
	}
	sameMessage(t, got[0], big, opts)
}

func testSaveMany(t *testing.T, s store.Messages, _ *Options) {
	ctx := ctxT(t)
	at := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	// More rows than fit one statement under common bind-parameter limits.
	const n = 5000
	msgs := make([]store.Message, n)
	for i := range msgs {
		msgs[i] = sampleMessage("app1", fmt.Sprintf("m-%05d", i), "room-1", at)
		msgs[i].Index = i
		msgs[i].Extra = []byte(`{"i":` + fmt.Sprint(i) + `}`)
	}
	must(t, s.SaveMessages(ctx, "app1", msgs))
	must(t, s.SaveMessages(ctx, "app1", msgs))
	got := roomMessages(t, s, "app1", "room-1")
	if len(got) != n {
		t.Fatalf("room has %d messages, want %d", len(got), n)
	}
}

func testSaveConcurrent(t *testing.T, s store.Messages, _ *Options) {
	ctx := ctxT(t)
	at := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	const writers, perWriter = 8, 60
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for w := range writers {
		wg.Go(func() {
			// Writers overlap: writer w saves IDs [w*30, w*30+60).
			var msgs []store.Message
			for i := range perWriter {
				msgs = append(msgs, sampleMessage("app1", fmt.Sprintf("m-%04d", w*perWriter/2+i), "room-1", at))
			}
			for start := 0; start < len(msgs); start += 20 {
				if err := s.SaveMessages(ctx, "app1", msgs[start:start+20]); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		must(t, err)
	}
	got := roomMessages(t, s, "app1", "room-1")
	want := (writers-1)*perWriter/2 + perWriter
	seen := map[string]bool{}
	for _, m := range got {
		if seen[m.ID] {
			t.Fatalf("message %s stored twice", m.ID)
		}
		seen[m.ID] = true
	}
	if len(got) != want {
		t.Errorf("concurrent overlapping writers stored %d messages, want %d", len(got), want)
	}
}

func testMessagesAppIsolation(t *testing.T, s store.Messages, _ *Options) {
	ctx := ctxT(t)
	at := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	a := sampleMessage("app-a", "same-id", "room-1", at)
	b := sampleMessage("app-b", "same-id", "room-1", at)
	b.Text = "from app b"
	must(t, s.SaveMessages(ctx, "app-a", []store.Message{a}))
	must(t, s.SaveMessages(ctx, "app-b", []store.Message{b}))
	gotA := roomMessages(t, s, "app-a", "room-1")
	gotB := roomMessages(t, s, "app-b", "room-1")
	if len(gotA) != 1 || gotA[0].Text != a.Text || gotA[0].AppID != "app-a" {
		t.Errorf("app-a's room holds %+v", gotA)
	}
	if len(gotB) != 1 || gotB[0].Text != b.Text || gotB[0].AppID != "app-b" {
		t.Errorf("app-b's room holds %+v; message IDs are scoped by app", gotB)
	}
}

func testMessagesContextCanceled(t *testing.T, s store.Messages, _ *Options) {
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	checkCanceled(t, map[string]func() error{
		"SaveMessages": func() error {
			return s.SaveMessages(ctx, "app1", []store.Message{sampleMessage("app1", "m", "r", time.Now().UTC())})
		},
	})
	if got := roomMessages(t, s, "app1", "r"); len(got) != 0 {
		t.Errorf("SaveMessages with a canceled context stored %d messages", len(got))
	}
}

// RunBatches runs the Batches cases.
func RunBatches(t *testing.T, newStore func(t *testing.T) store.Batches, opts *Options) {
	runCases(t, newStore, opts, []testCase[store.Batches]{
		{"BatchRoundTrip", testBatchRoundTrip},
		{"BatchMissing", testBatchMissing},
		{"BatchDuplicateID", testBatchDuplicateID},
		{"BatchDuplicateIDConcurrent", testBatchDuplicateIDConcurrent},
		{"BatchAppIsolation", testBatchAppIsolation},
		{"CompleteChunkCounters", testCompleteChunkCounters},
		{"CompleteChunkTwice", testCompleteChunkTwice},
		{"CompleteChunkConcurrent", testCompleteChunkConcurrent},
		{"CompleteChunksInParallel", testCompleteChunksInParallel},
		{"PendingChunks", testPendingChunks},
		{"Backlog", testBacklog},
		{"PruneBatches", testPruneBatches},
		{"StartChunk", testStartChunk},
		{"CancelBatch", testCancelBatch},
		{"CancelFinishedBatch", testCancelFinished},
		{"CancelRacesStart", testCancelRacesStart},
		{"CancelAppIsolation", testCancelAppIsolation},
		{"PauseResume", testPauseResume},
		{"PauseConflicts", testPauseConflicts},
		{"PausePacedBatch", testPausePacedBatch},
		{"PauseRacesStart", testPauseRacesStart},
		{"Reads", testReads},
		{"ReadsConcurrent", testReadsConcurrent},
		{"PruneReads", testPruneReads},
		{"IdempotencyKeys", testIdempotencyKeys},
		{"IdempotencyKeyConcurrentClaims", testIdempotencyConcurrent},
		{"IdempotencyKeyExpiry", testIdempotencyExpiry},
		{"UnstorableBatchIDs", testUnstorableBatchIDs},
		{"ListBatches", testListBatches},
		{"ChunkCheckpoints", testChunkCheckpoints},
		{"Recalls", testRecalls},
		{"DoneNotifications", testDoneNotifications},
		{"DoneNotificationsConcurrent", testDoneNotificationsConcurrent},
		{"LargeBatch", testLargeBatch},
		{"BatchesContextCanceled", testBatchesContextCanceled},
	})
}

// newBatch builds a batch with sizes[i] recipients in chunk i.
func newBatch(app, id string, created time.Time, sizes ...int) (*store.Batch, []store.Chunk) {
	b := &store.Batch{
		ID: id, AppID: app, Sender: "system", Chunks: len(sizes), CreatedAt: created,
		Payload: []byte(`{"message":"Hi $name$,您的訂單 $orderId$ 已出貨!","messageType":"text"}`),
	}
	var chunks []store.Chunk
	for no, n := range sizes {
		c := store.Chunk{ChunkRef: store.ChunkRef{AppID: app, BatchID: id, No: no}, Start: b.Count, NotBefore: created}
		for i := range n {
			idx := b.Count + i
			r := store.Recipient{Receiver: fmt.Sprintf("user-%d", idx), Vars: map[string]string{"name": fmt.Sprintf("名字-%d 🚀", idx), "orderId": fmt.Sprintf("ORD-%03d", idx)}}
			if idx%3 == 2 {
				r.Room = fmt.Sprintf("room-%d", idx)
			}
			c.Recipients = append(c.Recipients, r)
		}
		b.Count += n
		chunks = append(chunks, c)
	}
	return b, chunks
}

func outcomes(statuses ...store.OutcomeStatus) []store.Outcome {
	out := make([]store.Outcome, len(statuses))
	for i, st := range statuses {
		out[i] = store.Outcome{Status: st}
		switch st {
		case store.OutcomeSent:
			out[i].Room, out[i].MessageID = fmt.Sprintf("room-%d", i), fmt.Sprintf("msg-%d", i)
		case store.OutcomeFailed:
			out[i].Error = "room 房間 was deleted: \"gone\""
		}
	}
	return out
}

func testBatchRoundTrip(t *testing.T, s store.Batches, opts *Options) {
	ctx := ctxT(t)
	created := time.Date(2026, 4, 10, 9, 30, 15, 123456000, time.UTC)
	b, chunks := newBatch("app1", "batch-20260410-abc123", created, 3, 2)
	b.SendAt = created.Add(time.Hour)
	b.Payload = append(b.Payload, 0x00, 0xff, 0xfe, '\n') // byte-exact, whatever the bytes
	b.RatePerMinute = 120
	b.CreatedBy = "créée-par 😀"
	for i := range chunks {
		chunks[i].NotBefore = b.SendAt
	}
	must(t, s.CreateBatch(ctx, b, chunks))
	listed, err := s.ListBatches(ctx, &store.ListBatchesParams{AppID: "app1", Now: created, Limit: 1})
	must(t, err)
	if len(listed) != 1 || listed[0].RatePerMinute != 120 || listed[0].Count != 5 || listed[0].CreatedBy != b.CreatedBy {
		t.Errorf("ListBatches = %+v, want the batch with RatePerMinute 120 and CreatedBy %q", listed, b.CreatedBy)
	}

	got, err := s.GetBatch(ctx, "app1", b.ID)
	must(t, err)
	sameTime(t, "CreatedAt", got.CreatedAt, b.CreatedAt, opts)
	sameTime(t, "SendAt", got.SendAt, b.SendAt, opts)
	sameTime(t, "FinishedAt", got.FinishedAt, time.Time{}, opts)
	if !bytes.Equal(got.Payload, b.Payload) {
		t.Errorf("Payload = %q, want byte-exact %q", got.Payload, b.Payload)
	}
	g, w := *got, *b
	g.CreatedAt, g.SendAt, g.Payload, w.CreatedAt, w.SendAt, w.Payload = time.Time{}, time.Time{}, nil, time.Time{}, time.Time{}, nil
	if !reflect.DeepEqual(g, w) {
		t.Errorf("batch round trip:\n got %+v\nwant %+v", g, w)
	}
	if got.Pending() != 5 || got.Status(created) != store.StatusScheduled {
		t.Errorf("new batch: pending %d status %s, want 5 scheduled", got.Pending(), got.Status(created))
	}
	for no, want := range chunks {
		c, err := s.LoadChunk(ctx, store.ChunkRef{AppID: "app1", BatchID: b.ID, No: no})
		must(t, err)
		sameTime(t, fmt.Sprintf("chunk %d NotBefore", no), c.NotBefore, want.NotBefore, opts)
		c.NotBefore, want.NotBefore = time.Time{}, time.Time{}
		if !reflect.DeepEqual(*c, want) {
			t.Errorf("chunk %d round trip:\n got %+v\nwant %+v", no, *c, want)
		}
	}
	// A batch that is not scheduled keeps a zero SendAt.
	b2, chunks2 := newBatch("app1", "batch-20260410-now", created, 1)
	must(t, s.CreateBatch(ctx, b2, chunks2))
	got2, err := s.GetBatch(ctx, "app1", b2.ID)
	must(t, err)
	sameTime(t, "unscheduled SendAt", got2.SendAt, time.Time{}, opts)
}

func testBatchMissing(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	_, err := s.GetBatch(ctx, "app1", "batch-nope")
	wantErr(t, err, store.ErrNotFound, "GetBatch of a missing batch")
	_, err = s.LoadChunk(ctx, store.ChunkRef{AppID: "app1", BatchID: "batch-nope", No: 0})
	wantErr(t, err, store.ErrNotFound, "LoadChunk of a missing batch")
	_, err = s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: store.ChunkRef{AppID: "app1", BatchID: "batch-nope"}, At: time.Now().UTC()})
	wantErr(t, err, store.ErrNotFound, "CompleteChunk of a missing batch")
	b, chunks := newBatch("app1", "batch-1", time.Now().UTC(), 2)
	must(t, s.CreateBatch(ctx, b, chunks))
	_, err = s.LoadChunk(ctx, store.ChunkRef{AppID: "app1", BatchID: "batch-1", No: 1})
	wantErr(t, err, store.ErrNotFound, "LoadChunk of a chunk number past the end")
	_, err = s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: store.ChunkRef{AppID: "app1", BatchID: "batch-1", No: 5}, Outcomes: outcomes(store.OutcomeSent), At: time.Now().UTC()})
	wantErr(t, err, store.ErrNotFound, "CompleteChunk of a chunk number past the end")
}

func testBatchDuplicateID(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	now := time.Now().UTC()
	b, chunks := newBatch("app1", "batch-dup", now, 2)
	must(t, s.CreateBatch(ctx, b, chunks))
	b2, chunks2 := newBatch("app1", "batch-dup", now, 1, 1, 1)
	b2.Sender = "someone-else"
	err := s.CreateBatch(ctx, b2, chunks2)
	wantErr(t, err, store.ErrConflict, "CreateBatch with an existing ID")
	got, err := s.GetBatch(ctx, "app1", "batch-dup")
	must(t, err)
	if got.Sender != "system" || got.Chunks != 1 || got.Count != 2 {
		t.Errorf("a refused duplicate changed the batch: %+v", got)
	}
	_, err = s.LoadChunk(ctx, store.ChunkRef{AppID: "app1", BatchID: "batch-dup", No: 2})
	wantErr(t, err, store.ErrNotFound, "a chunk of the refused duplicate")
}

func testBatchAppIsolation(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	now := time.Now().UTC()
	b, chunks := newBatch("app-a", "batch-shared-id", now, 2)
	must(t, s.CreateBatch(ctx, b, chunks))
	_, err := s.GetBatch(ctx, "app-b", b.ID)
	wantErr(t, err, store.ErrNotFound, "app-b reading app-a's batch")
	ref := store.ChunkRef{AppID: "app-b", BatchID: b.ID, No: 0}
	_, err = s.LoadChunk(ctx, ref)
	wantErr(t, err, store.ErrNotFound, "app-b loading app-a's chunk")
	_, err = s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: ref, Outcomes: outcomes(store.OutcomeSent, store.OutcomeSent), At: now})
	wantErr(t, err, store.ErrNotFound, "app-b completing app-a's chunk")
	// Batch IDs are scoped by app: app-b may use the same ID.
	bb, chunksB := newBatch("app-b", "batch-shared-id", now, 1)
	must(t, s.CreateBatch(ctx, bb, chunksB))
	gotA, err := s.GetBatch(ctx, "app-a", b.ID)
	must(t, err)
	if gotA.Count != 2 || gotA.ChunksDone != 0 {
		t.Errorf("app-a's batch changed through app-b: %+v", gotA)
	}
}

func testCompleteChunkCounters(t *testing.T, s store.Batches, opts *Options) {
	ctx := ctxT(t)
	created := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	b, chunks := newBatch("app1", "batch-counters", created, 3, 2, 1)
	must(t, s.CreateBatch(ctx, b, chunks))
	ref := func(no int) store.ChunkRef { return store.ChunkRef{AppID: "app1", BatchID: b.ID, No: no} }

	first := outcomes(store.OutcomeSent, store.OutcomeFailed, store.OutcomeSent)
	after, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: ref(0), Outcomes: first, At: created.Add(time.Minute)})
	must(t, err)
	if after.Sent != 2 || after.Failed != 1 || after.ChunksDone != 1 || after.Pending() != 3 || !after.FinishedAt.IsZero() {
		t.Errorf("after the first chunk: %+v (pending %d)", after, after.Pending())
	}
	if st := after.Status(created); st != store.StatusRunning {
		t.Errorf("status after one of three chunks = %s, want running", st)
	}
	c, err := s.LoadChunk(ctx, ref(0))
	must(t, err)
	if !c.Done || !reflect.DeepEqual(c.Outcomes, first) {
		t.Errorf("completed chunk: done=%v outcomes=%+v, want %+v", c.Done, c.Outcomes, first)
	}
	c1, err := s.LoadChunk(ctx, ref(1))
	must(t, err)
	if c1.Done || c1.Outcomes != nil {
		t.Errorf("a pending chunk reports done=%v outcomes=%+v", c1.Done, c1.Outcomes)
	}

	_, err = s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: ref(2), Outcomes: outcomes(store.OutcomeCanceled), At: created.Add(2 * time.Minute)})
	must(t, err)
	finished := created.Add(3 * time.Minute)
	last, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: ref(1), Outcomes: outcomes(store.OutcomeSent, store.OutcomeSent), At: finished})
	must(t, err)
	if last.Sent != 4 || last.Failed != 1 || last.Canceled != 1 || last.ChunksDone != 3 || last.Pending() != 0 {
		t.Errorf("after all chunks: %+v", last)
	}
	sameTime(t, "FinishedAt", last.FinishedAt, finished, opts)
	got, err := s.GetBatch(ctx, "app1", b.ID)
	must(t, err)
	if got.Sent != last.Sent || got.Failed != last.Failed || got.Canceled != last.Canceled || got.ChunksDone != last.ChunksDone {
		t.Errorf("GetBatch %+v disagrees with CompleteChunk's result %+v", got, last)
	}
	sameTime(t, "FinishedAt from GetBatch", got.FinishedAt, finished, opts)
}

// testChunkCheckpoints checks CheckpointChunk and the push states and
// PushFailed counter.
func testChunkCheckpoints(t *testing.T, s store.Batches, opts *Options) {
	ctx := ctxT(t)
	created := time.Date(2026, 5, 2, 9, 0, 0, 0, time.UTC)
	b, chunks := newBatch("app1", "batch-checkpoint", created, 3, 1)
	must(t, s.CreateBatch(ctx, b, chunks))
	ref := store.ChunkRef{AppID: "app1", BatchID: b.ID, No: 0}
	final := []store.Outcome{
		{Status: store.OutcomeSent, Room: "r1", MessageID: b.ID + "-0", Push: store.PushSent},
		{Status: store.OutcomeSent, Room: "r2", MessageID: b.ID + "-1", Push: store.PushFailed, PushError: "token unregistered"},
		{Status: store.OutcomeFailed, Error: "room gone"},
	}
	_, _, err := s.StartChunk(ctx, startParams(ref, created.Add(time.Second)))
	must(t, err)
	first := slices.Clone(final)
	first[0].Push, first[1].Push, first[1].PushError = store.PushPending, store.PushPending, ""
	must(t, s.CheckpointChunk(ctx, &store.CheckpointChunkParams{Ref: ref, Outcomes: first}))
	second := slices.Clone(final)
	second[1].Push, second[1].PushError = store.PushPending, ""
	must(t, s.CheckpointChunk(ctx, &store.CheckpointChunkParams{Ref: ref, Outcomes: second}))
	_, c, err := s.StartChunk(ctx, startParams(ref, created.Add(2*time.Second)))
	must(t, err)
	if c.Done || !reflect.DeepEqual(c.Outcomes, second) {
		t.Errorf("StartChunk after two checkpoints: done=%v outcomes=%+v, want not done with %+v", c.Done, c.Outcomes, second)
	}
	if c, err := s.LoadChunk(ctx, ref); err != nil || c.Done || !reflect.DeepEqual(c.Outcomes, second) {
		t.Errorf("LoadChunk after a checkpoint: %+v, %v", c, err)
	}
	got, err := s.GetBatch(ctx, "app1", b.ID)
	must(t, err)
	if got.Sent != 0 || got.Failed != 0 || got.PushFailed != 0 || got.ChunksDone != 0 {
		t.Errorf("a checkpoint changed the batch counters: %+v", got)
	}
	err = s.CheckpointChunk(ctx, &store.CheckpointChunkParams{Ref: store.ChunkRef{AppID: "app2", BatchID: b.ID}, Outcomes: second})
	wantErr(t, err, store.ErrNotFound, "a checkpoint of another app's chunk")
	if err := s.CheckpointChunk(ctx, &store.CheckpointChunkParams{Ref: ref, Outcomes: second[:2]}); err == nil {
		t.Errorf("a checkpoint with 2 outcomes for 3 recipients succeeded")
	}
	after, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: ref, Outcomes: final, At: created.Add(time.Minute)})
	must(t, err)
	if after.Sent != 2 || after.Failed != 1 || after.PushFailed != 1 {
		t.Errorf("after completing: sent %d failed %d pushFailed %d, want 2, 1, 1", after.Sent, after.Failed, after.PushFailed)
	}
	c, err = s.LoadChunk(ctx, ref)
	must(t, err)
	if !c.Done || !reflect.DeepEqual(c.Outcomes, final) {
		t.Errorf("completed chunk: done=%v outcomes=%+v, want %+v", c.Done, c.Outcomes, final)
	}
	if got, err := s.GetBatch(ctx, "app1", b.ID); err != nil || got.PushFailed != 1 {
		t.Errorf("GetBatch PushFailed = %+v, %v; want 1", got, err)
	}
	err = s.CheckpointChunk(ctx, &store.CheckpointChunkParams{Ref: ref, Outcomes: final})
	wantErr(t, err, store.ErrConflict, "a checkpoint of a done chunk")
}

// testRecalls checks RecallBatch, RecallChunk and PendingRecalls.
func testRecalls(t *testing.T, s store.Batches, opts *Options) {
	ctx := ctxT(t)
	created := time.Date(2026, 5, 3, 9, 0, 0, 0, time.UTC)
	b, chunks := newBatch("app1", "batch-recall", created, 2, 2, 1, 1)
	must(t, s.CreateBatch(ctx, b, chunks))
	ref := func(no int) store.ChunkRef { return store.ChunkRef{AppID: "app1", BatchID: b.ID, No: no} }
	// Chunk 0 done (one sent, one failed), chunk 1 in flight, 2 and 3 not started.
	_, _, err := s.StartChunk(ctx, startParams(ref(0), created))
	must(t, err)
	first := []store.Outcome{
		{Status: store.OutcomeSent, Room: "r", MessageID: b.ID + "-0", Push: store.PushFailed, PushError: "x"},
		{Status: store.OutcomeFailed, Room: "r", MessageID: b.ID + "-1", Error: "delivery failed"},
	}
	_, err = s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: ref(0), Outcomes: first, At: created.Add(time.Second)})
	must(t, err)
	_, _, err = s.StartChunk(ctx, startParams(ref(1), created))
	must(t, err)
	_, err = s.RecallChunk(ctx, &store.RecallChunkParams{Ref: ref(1)})
	wantErr(t, err, store.ErrConflict, "recalling a chunk that is not done")

	at := created.Add(time.Minute)
	after, err := s.RecallBatch(ctx, &store.RecallBatchParams{AppID: "app1", BatchID: b.ID, At: at})
	must(t, err)
	sameTime(t, "RecalledAt", after.RecalledAt, at, opts)
	if after.Canceled != 2 || after.ChunksDone != 3 || after.Sent != 1 || !after.CanceledAt.IsZero() || after.Status(at) != store.StatusRecalled {
		t.Errorf("after RecallBatch: %+v (status %s), want 2 canceled, 3 chunks done, canceledAt unset, recalled", after, after.Status(at))
	}
	again, err := s.RecallBatch(ctx, &store.RecallBatchParams{AppID: "app1", BatchID: b.ID, At: at.Add(time.Hour)})
	must(t, err)
	sameTime(t, "RecalledAt after a second recall", again.RecalledAt, at, opts)
	if again.Canceled != 2 || again.ChunksDone != 3 {
		t.Errorf("a second RecallBatch changed the batch: %+v", again)
	}
	_, err = s.RecallBatch(ctx, &store.RecallBatchParams{AppID: "app2", BatchID: b.ID, At: at})
	wantErr(t, err, store.ErrNotFound, "recalling another app's batch")

	pending, err := s.PendingRecalls(ctx, &store.PendingRecallsParams{RecalledBefore: at, Limit: 10})
	must(t, err)
	if len(pending) != 1 || pending[0].ID != b.ID || pending[0].AppID != "app1" {
		t.Errorf("PendingRecalls = %v, want the batch (it has a sent recipient)", pending)
	}
	if early, err := s.PendingRecalls(ctx, &store.PendingRecallsParams{RecalledBefore: at.Add(-time.Second), Limit: 10}); err != nil || len(early) != 0 {
		t.Errorf("PendingRecalls before the recall = %v, %v", early, err)
	}

	after, err = s.RecallChunk(ctx, &store.RecallChunkParams{Ref: ref(0)})
	must(t, err)
	if after.Sent != 0 || after.Recalled != 1 || after.Failed != 1 || after.PushFailed != 1 {
		t.Errorf("after RecallChunk: %+v, want sent 0, recalled 1, failed 1", after)
	}
	c, err := s.LoadChunk(ctx, ref(0))
	must(t, err)
	if c.Outcomes[0].Status != store.OutcomeRecalled || c.Outcomes[0].MessageID != b.ID+"-0" || c.Outcomes[1].Status != store.OutcomeFailed {
		t.Errorf("chunk 0's outcomes after the recall: %+v", c.Outcomes)
	}
	if again, err := s.RecallChunk(ctx, &store.RecallChunkParams{Ref: ref(0)}); err != nil || again.Recalled != 1 || again.Sent != 0 {
		t.Errorf("a second RecallChunk: %+v, %v; want no change", again, err)
	}
	// The chunk in flight completes after the recall; it is recalled then.
	last, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: ref(1), Outcomes: outcomes(store.OutcomeSent, store.OutcomeSent), At: at.Add(time.Second)})
	must(t, err)
	if last.RecalledAt.IsZero() || last.ChunksDone != 4 || last.Sent != 2 {
		t.Errorf("CompleteChunk after the recall returned %+v; want RecalledAt set, 2 sent", last)
	}
	if p, err := s.PendingRecalls(ctx, &store.PendingRecallsParams{RecalledBefore: at, Limit: 10}); err != nil || len(p) != 1 {
		t.Errorf("PendingRecalls after the late chunk = %v, %v", p, err)
	}
	final, err := s.RecallChunk(ctx, &store.RecallChunkParams{Ref: ref(1)})
	must(t, err)
	if final.Sent != 0 || final.Recalled != 3 || final.Canceled != 2 || final.Failed != 1 || final.Pending() != 0 {
		t.Errorf("final: %+v (pending %d)", final, final.Pending())
	}
	if p, err := s.PendingRecalls(ctx, &store.PendingRecallsParams{RecalledBefore: at.Add(time.Hour), Limit: 10}); err != nil || len(p) != 0 {
		t.Errorf("PendingRecalls once everything is recalled = %v, %v", p, err)
	}
	for st, want := range map[store.Status]int{store.StatusRecalled: 1, store.StatusCanceled: 0, store.StatusCompleted: 0} {
		got, err := s.ListBatches(ctx, &store.ListBatchesParams{AppID: "app1", Statuses: []store.Status{st}, Now: at, Limit: 10})
		must(t, err)
		if len(got) != want {
			t.Errorf("ListBatches(%s) = %d batches, want %d", st, len(got), want)
		}
	}
}

func testCompleteChunkTwice(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	b, chunks := newBatch("app1", "batch-twice", time.Now().UTC(), 2)
	must(t, s.CreateBatch(ctx, b, chunks))
	p := &store.CompleteChunkParams{Ref: store.ChunkRef{AppID: "app1", BatchID: b.ID}, Outcomes: outcomes(store.OutcomeSent, store.OutcomeSent), At: time.Now().UTC()}
	_, err := s.CompleteChunk(ctx, p)
	must(t, err)
	p2 := *p
	p2.Outcomes = outcomes(store.OutcomeFailed, store.OutcomeFailed)
	_, err = s.CompleteChunk(ctx, &p2)
	wantErr(t, err, store.ErrConflict, "completing a chunk a second time")
	got, err := s.GetBatch(ctx, "app1", b.ID)
	must(t, err)
	if got.Sent != 2 || got.Failed != 0 || got.ChunksDone != 1 {
		t.Errorf("a second completion changed the counters: %+v", got)
	}
	c, err := s.LoadChunk(ctx, p.Ref)
	must(t, err)
	if c.Outcomes[0].Status != store.OutcomeSent {
		t.Errorf("a second completion changed the outcomes: %+v", c.Outcomes)
	}
}

func testCompleteChunkConcurrent(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	b, chunks := newBatch("app1", "batch-race", time.Now().UTC(), 3)
	must(t, s.CreateBatch(ctx, b, chunks))
	const n = 10
	var ok, conflict atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: store.ChunkRef{AppID: "app1", BatchID: b.ID}, Outcomes: outcomes(store.OutcomeSent, store.OutcomeSent, store.OutcomeFailed), At: time.Now().UTC()})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, store.ErrConflict):
				conflict.Add(1)
			default:
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent CompleteChunk: unexpected error %v", err)
	}
	if ok.Load() != 1 || conflict.Load() != n-1 {
		t.Errorf("%d concurrent completions of one chunk: %d succeeded, %d conflicted; want exactly 1 success", n, ok.Load(), conflict.Load())
	}
	got, err := s.GetBatch(ctx, "app1", b.ID)
	must(t, err)
	if got.Sent != 2 || got.Failed != 1 || got.ChunksDone != 1 {
		t.Errorf("counters after concurrent completions: %+v", got)
	}
}

func testCompleteChunksInParallel(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	const chunksN = 12
	sizes := make([]int, chunksN)
	for i := range sizes {
		sizes[i] = 4
	}
	b, chunks := newBatch("app1", "batch-parallel", time.Now().UTC(), sizes...)
	must(t, s.CreateBatch(ctx, b, chunks))
	var finishers atomic.Int32
	var wg sync.WaitGroup
	errs := make([]error, chunksN)
	for no := range chunksN {
		wg.Go(func() {
			after, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: store.ChunkRef{AppID: "app1", BatchID: b.ID, No: no}, Outcomes: outcomes(store.OutcomeSent, store.OutcomeSent, store.OutcomeSent, store.OutcomeFailed), At: time.Now().UTC()})
			errs[no] = err
			if err == nil && after.ChunksDone == after.Chunks {
				finishers.Add(1)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		must(t, err)
	}
	if finishers.Load() != 1 {
		t.Errorf("%d CompleteChunk calls saw the batch finish; exactly one must", finishers.Load())
	}
	got, err := s.GetBatch(ctx, "app1", b.ID)
	must(t, err)
	if got.Sent != 3*chunksN || got.Failed != chunksN || got.ChunksDone != chunksN || got.Pending() != 0 || got.FinishedAt.IsZero() {
		t.Errorf("counters after parallel completion of every chunk: %+v", got)
	}
}

// startParams starts ref at at with a lease of a minute.
// testPruneBatches checks PruneBatches: finished, reported batches older
// than the bound go, oldest first and across apps, with their chunks; the
// others stay.
func testPruneBatches(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	now := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
	// finish creates a batch of one chunk of two finished at `at` (zero:
	// not finished), its end reported or not.
	finish := func(app, id string, at time.Time, reported bool, status store.OutcomeStatus) {
		t.Helper()
		b, cs := newBatch(app, id, at.Add(-time.Hour), 2)
		if at.IsZero() {
			b, cs = newBatch(app, id, now, 2)
		}
		must(t, s.CreateBatch(ctx, b, cs))
		if at.IsZero() {
			return
		}
		_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: cs[0].ChunkRef, Outcomes: outcomes(status, status), At: at})
		must(t, err)
		if reported {
			must(t, s.MarkDoneNotified(ctx, &store.MarkDoneNotifiedParams{AppID: app, BatchID: id, At: at}))
		}
	}
	old := now.Add(-40 * 24 * time.Hour)
	finish("app1", "batch-old-1", old, true, store.OutcomeSent)
	finish("app2", "batch-old-2", old.Add(time.Minute), true, store.OutcomeFailed)
	finish("app1", "batch-old-3", old.Add(2*time.Minute), true, store.OutcomeSent)
	finish("app1", "batch-old-unreported", old, false, store.OutcomeSent)
	finish("app1", "batch-recent", now.Add(-time.Hour), true, store.OutcomeSent)
	finish("app1", "batch-running", time.Time{}, false, "")
	// A recall whose messages are not all taken back yet stays; a done
	// recall goes.
	finish("app1", "batch-recalling", old, true, store.OutcomeSent)
	_, err := s.RecallBatch(ctx, &store.RecallBatchParams{AppID: "app1", BatchID: "batch-recalling", At: old})
	must(t, err)
	finish("app2", "batch-recalled", old, true, store.OutcomeSent)
	_, err = s.RecallBatch(ctx, &store.RecallBatchParams{AppID: "app2", BatchID: "batch-recalled", At: old})
	must(t, err)
	_, err = s.RecallChunk(ctx, &store.RecallChunkParams{Ref: store.ChunkRef{AppID: "app2", BatchID: "batch-recalled", No: 0}})
	must(t, err)

	bound := now.Add(-30 * 24 * time.Hour)
	n, err := s.PruneBatches(ctx, &store.PruneBatchesParams{FinishedBefore: bound, Limit: 2})
	must(t, err)
	if n != 2 {
		t.Errorf("the first PruneBatches of 2 deleted %d", n)
	}
	n, err = s.PruneBatches(ctx, &store.PruneBatchesParams{FinishedBefore: bound, Limit: 100})
	must(t, err)
	if n != 2 {
		t.Errorf("the second PruneBatches deleted %d, want the 2 prunable batches left", n)
	}
	if n, err := s.PruneBatches(ctx, &store.PruneBatchesParams{FinishedBefore: bound, Limit: 100}); err != nil || n != 0 {
		t.Errorf("a third PruneBatches = %d, %v; want nothing left to delete", n, err)
	}
	for _, b := range []struct{ app, id string }{{"app1", "batch-old-1"}, {"app2", "batch-old-2"}, {"app1", "batch-old-3"}, {"app2", "batch-recalled"}} {
		_, err := s.GetBatch(ctx, b.app, b.id)
		wantErr(t, err, store.ErrNotFound, "GetBatch of a pruned batch")
		_, err = s.LoadChunk(ctx, store.ChunkRef{AppID: b.app, BatchID: b.id, No: 0})
		wantErr(t, err, store.ErrNotFound, "LoadChunk of a pruned batch's chunk")
	}
	for _, id := range []string{"batch-old-unreported", "batch-recent", "batch-running", "batch-recalling"} {
		if _, err := s.GetBatch(ctx, "app1", id); err != nil {
			t.Errorf("%s was pruned (or lost): %v", id, err)
		}
	}
	listed, err := s.ListBatches(ctx, &store.ListBatchesParams{AppID: "app1", Now: now, Limit: 100})
	must(t, err)
	if len(listed) != 4 {
		t.Errorf("app1 lists %d batches after pruning, want the 4 kept", len(listed))
	}
	// The oldest go first: with a limit of 1, of two prunable batches the
	// one that finished first.
	finish("app3", "batch-later", old.Add(time.Hour), true, store.OutcomeSent)
	finish("app3", "batch-earlier", old, true, store.OutcomeSent)
	if n, err := s.PruneBatches(ctx, &store.PruneBatchesParams{FinishedBefore: bound, Limit: 1}); err != nil || n != 1 {
		t.Fatalf("PruneBatches with limit 1 = %d, %v", n, err)
	}
	if _, err := s.GetBatch(ctx, "app3", "batch-later"); err != nil {
		t.Errorf("the later batch went first: %v", err)
	}
}

// testBacklog checks Backlog: the due chunks not done, per app — started
// ones too, not those done, canceled or not due yet.
func testBacklog(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	now := time.Date(2026, 5, 4, 9, 0, 0, 0, time.UTC)
	backlog := func(at time.Time) map[string]store.AppBacklog {
		t.Helper()
		got, err := s.Backlog(ctx, &store.BacklogParams{DueBefore: at})
		must(t, err)
		out := map[string]store.AppBacklog{}
		for _, b := range got {
			if _, dup := out[b.AppID]; dup {
				t.Errorf("Backlog lists app %s twice: %+v", b.AppID, got)
			}
			out[b.AppID] = b
		}
		return out
	}
	if got := backlog(now); len(got) != 0 {
		t.Errorf("the backlog of an empty store: %+v", got)
	}
	running, rc := newBatch("app1", "batch-backlog-running", now.Add(-time.Minute), 3, 2, 4)
	must(t, s.CreateBatch(ctx, running, rc))
	_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: rc[0].ChunkRef, Outcomes: outcomes(store.OutcomeSent, store.OutcomeSent, store.OutcomeFailed), At: now})
	must(t, err)
	_, _, err = s.StartChunk(ctx, startParams(rc[1].ChunkRef, now)) // started, not done: still work
	must(t, err)
	later, lc := newBatch("app1", "batch-backlog-later", now, 5)
	for i := range lc {
		lc[i].NotBefore = now.Add(time.Hour) // scheduled
	}
	must(t, s.CreateBatch(ctx, later, lc))
	canceled, cc := newBatch("app1", "batch-backlog-canceled", now, 7)
	must(t, s.CreateBatch(ctx, canceled, cc))
	_, err = s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: canceled.ID, At: now})
	must(t, err)
	other, oc := newBatch("app2", "batch-backlog-other", now, 1, 1)
	must(t, s.CreateBatch(ctx, other, oc))

	got := backlog(now)
	want := map[string]store.AppBacklog{
		"app1": {AppID: "app1", Chunks: 2, Recipients: 6},
		"app2": {AppID: "app2", Chunks: 2, Recipients: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Backlog(now) = %+v, want %+v", got, want)
	}
	if got := backlog(now.Add(2 * time.Hour))["app1"]; got.Chunks != 3 || got.Recipients != 11 {
		t.Errorf("Backlog two hours on, app1 = %+v, want the scheduled chunk too (3 chunks, 11 recipients)", got)
	}
	if got := backlog(now.Add(-2 * time.Minute)); len(got) != 0 {
		t.Errorf("Backlog before anything was due = %+v, want none", got)
	}
}

func startParams(ref store.ChunkRef, at time.Time) *store.StartChunkParams {
	return &store.StartChunkParams{Ref: ref, At: at, LeaseUntil: at.Add(time.Minute)}
}

// pendingParams asks for the chunks due at t and the leases ended before t.
func pendingParams(t time.Time, limit int) *store.PendingChunksParams {
	return &store.PendingChunksParams{DueBefore: t, LeaseExpiredBefore: t, Limit: limit}
}

func refsOf(cs []store.Chunk) []store.ChunkRef {
	out := make([]store.ChunkRef, len(cs))
	for i, c := range cs {
		out[i] = c.ChunkRef
	}
	return out
}

func testPendingChunks(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	base := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	early, earlyChunks := newBatch("app-a", "batch-early", base, 1, 1)
	late, lateChunks := newBatch("app-b", "batch-late", base.Add(10*time.Minute), 1)
	sched, schedChunks := newBatch("app-a", "batch-sched", base, 1)
	sched.SendAt = base.Add(time.Hour)
	schedChunks[0].NotBefore = sched.SendAt
	for _, c := range []struct {
		b  *store.Batch
		cs []store.Chunk
	}{{early, earlyChunks}, {late, lateChunks}, {sched, schedChunks}} {
		must(t, s.CreateBatch(ctx, c.b, c.cs))
	}
	_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: earlyChunks[1].ChunkRef, Outcomes: outcomes(store.OutcomeSent), At: base})
	must(t, err)

	check := func(p *store.PendingChunksParams, want ...store.ChunkRef) {
		t.Helper()
		got, err := s.PendingChunks(ctx, p)
		must(t, err)
		if !slices.Equal(refsOf(got), want) {
			t.Errorf("PendingChunks(due %v, lease ended %v, limit %d) = %+v, want %+v",
				p.DueBefore.Format(time.TimeOnly), p.LeaseExpiredBefore.Format(time.TimeOnly), p.Limit, refsOf(got), want)
		}
		for _, c := range got {
			if c.Recipients != nil || c.Outcomes != nil || c.Done {
				t.Errorf("PendingChunks returned %+v; want the chunk without recipients and outcomes, not done", c)
			}
		}
	}
	check(pendingParams(base.Add(-time.Second), 10))
	check(pendingParams(base, 10), earlyChunks[0].ChunkRef)
	check(pendingParams(base.Add(30*time.Minute), 10), earlyChunks[0].ChunkRef, lateChunks[0].ChunkRef)
	check(pendingParams(base.Add(30*time.Minute), 1), earlyChunks[0].ChunkRef)
	check(pendingParams(base.Add(2*time.Hour), 10), earlyChunks[0].ChunkRef, lateChunks[0].ChunkRef, schedChunks[0].ChunkRef)

	// A started chunk is pending only once its lease has run out,
	// whatever DueBefore says; renewing the lease takes it out again.
	startAt := base.Add(time.Minute)
	_, c, err := s.StartChunk(ctx, &store.StartChunkParams{Ref: earlyChunks[0].ChunkRef, At: startAt, LeaseUntil: startAt.Add(10 * time.Second)})
	must(t, err)
	if c.Attempts != 1 {
		t.Errorf("Attempts after the first start = %d, want 1", c.Attempts)
	}
	check(&store.PendingChunksParams{DueBefore: base.Add(30 * time.Minute), LeaseExpiredBefore: startAt.Add(10 * time.Second), Limit: 10}, lateChunks[0].ChunkRef)
	check(&store.PendingChunksParams{DueBefore: base.Add(30 * time.Minute), LeaseExpiredBefore: startAt.Add(11 * time.Second), Limit: 10},
		earlyChunks[0].ChunkRef, lateChunks[0].ChunkRef)
	// The limit applies to both kinds together, in NotBefore order.
	check(&store.PendingChunksParams{DueBefore: base.Add(30 * time.Minute), LeaseExpiredBefore: startAt.Add(11 * time.Second), Limit: 1}, earlyChunks[0].ChunkRef)
	check(&store.PendingChunksParams{DueBefore: base.Add(30 * time.Minute), LeaseExpiredBefore: startAt.Add(11 * time.Second), Limit: -1},
		earlyChunks[0].ChunkRef, lateChunks[0].ChunkRef)
	got, err := s.PendingChunks(ctx, &store.PendingChunksParams{DueBefore: base, LeaseExpiredBefore: startAt.Add(time.Hour), Limit: 10})
	must(t, err)
	if len(got) != 1 || got[0].Attempts != 1 || got[0].StartedAt.IsZero() || got[0].LeaseUntil.IsZero() || got[0].Start != 0 {
		t.Errorf("PendingChunks of a started chunk whose lease ran out = %+v, want it with Attempts 1, StartedAt and LeaseUntil", got)
	}
	must(t, s.RenewChunkLease(ctx, &store.RenewChunkLeaseParams{Ref: earlyChunks[0].ChunkRef, Until: startAt.Add(time.Hour)}))
	check(&store.PendingChunksParams{DueBefore: base.Add(30 * time.Minute), LeaseExpiredBefore: startAt.Add(59 * time.Minute), Limit: 10}, lateChunks[0].ChunkRef)
	loaded, err := s.LoadChunk(ctx, earlyChunks[0].ChunkRef)
	must(t, err)
	if loaded.LeaseUntil.Sub(startAt.Add(time.Hour)).Abs() > time.Second || loaded.Attempts != 1 {
		t.Errorf("LoadChunk after RenewChunkLease: LeaseUntil %v, Attempts %d; want %v and 1", loaded.LeaseUntil, loaded.Attempts, startAt.Add(time.Hour))
	}
	// Renewing a done chunk is not an error and changes nothing; a
	// missing chunk is ErrNotFound.
	must(t, s.RenewChunkLease(ctx, &store.RenewChunkLeaseParams{Ref: earlyChunks[1].ChunkRef, Until: startAt}))
	wantErr(t, s.RenewChunkLease(ctx, &store.RenewChunkLeaseParams{Ref: store.ChunkRef{AppID: "app-a", BatchID: "batch-early", No: 9}, Until: startAt}), store.ErrNotFound, "RenewChunkLease of a missing chunk")
	wantErr(t, s.RenewChunkLease(ctx, &store.RenewChunkLeaseParams{Ref: store.ChunkRef{AppID: "app-b", BatchID: "batch-early"}, Until: startAt}), store.ErrNotFound, "RenewChunkLease of another app's chunk")
}

func testLargeBatch(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	// A request of 10,000 (batch.DefaultMaxRecipients) in chunks of 500
	// (batch.DefaultChunkSize), as package batch cuts it by default.
	const size, chunkCount = 500, 20
	b, chunks := newBatch("app1", "batch-10k", time.Now().UTC(), slices.Repeat([]int{size}, chunkCount)...)
	must(t, s.CreateBatch(ctx, b, chunks))
	got, err := s.GetBatch(ctx, "app1", b.ID)
	must(t, err)
	if got.Count != size*chunkCount || got.Chunks != chunkCount {
		t.Fatalf("batch of 10,000 recipients: count %d chunks %d", got.Count, got.Chunks)
	}
	ref := store.ChunkRef{AppID: "app1", BatchID: b.ID, No: chunkCount - 1}
	const start = size * (chunkCount - 1)
	last, err := s.LoadChunk(ctx, ref)
	must(t, err)
	if last.Start != start || len(last.Recipients) != size || !reflect.DeepEqual(last.Recipients, chunks[chunkCount-1].Recipients) {
		t.Errorf("last chunk: start %d, %d recipients; want %d and %d equal to the ones written", last.Start, len(last.Recipients), start, size)
	}
	// A full chunk's outcomes, as the worker completes it: sent to
	// one-on-one rooms, some failed, one with its push failed.
	os := make([]store.Outcome, size)
	for i := range os {
		os[i] = store.Outcome{Status: store.OutcomeSent, Room: store.DirectRoomID("system", fmt.Sprintf("user-%d", start+i)), MessageID: fmt.Sprintf("%s-%d", b.ID, start+i)}
		if i%97 == 3 {
			os[i] = store.Outcome{Status: store.OutcomeFailed, Error: fmt.Sprintf("user \"user-%d\" 不存在", start+i)}
		}
	}
	os[42].Push, os[42].PushError = store.PushFailed, "token expired"
	_, err = s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: ref, Outcomes: os, At: time.Now().UTC()})
	must(t, err)
	done, err := s.LoadChunk(ctx, ref)
	must(t, err)
	if !done.Done || !reflect.DeepEqual(done.Outcomes, os) {
		t.Errorf("chunk of %d completed: done=%v, %d outcomes, equal to the ones written: %v", size, done.Done, len(done.Outcomes), reflect.DeepEqual(done.Outcomes, os))
	}
}

func testBatchesContextCanceled(t *testing.T, s store.Batches, _ *Options) {
	b, chunks := newBatch("app1", "batch-ctx", time.Now().UTC(), 1)
	must(t, s.CreateBatch(ctxT(t), b, chunks))
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	b2, chunks2 := newBatch("app1", "batch-ctx-2", time.Now().UTC(), 1)
	checkCanceled(t, map[string]func() error{
		"CreateBatch": func() error { return s.CreateBatch(ctx, b2, chunks2) },
		"GetBatch":    func() error { _, err := s.GetBatch(ctx, "app1", b.ID); return err },
		"LoadChunk":   func() error { _, err := s.LoadChunk(ctx, chunks[0].ChunkRef); return err },
		"CompleteChunk": func() error {
			_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: chunks[0].ChunkRef, Outcomes: outcomes(store.OutcomeSent), At: time.Now().UTC()})
			return err
		},
		"PendingChunks": func() error { _, err := s.PendingChunks(ctx, pendingParams(time.Now(), 10)); return err },
		"RenewChunkLease": func() error {
			return s.RenewChunkLease(ctx, &store.RenewChunkLeaseParams{Ref: chunks[0].ChunkRef, Until: time.Now().UTC()})
		},
		"StartChunk": func() error {
			_, _, err := s.StartChunk(ctx, startParams(chunks[0].ChunkRef, time.Now().UTC()))
			return err
		},
		"CancelBatch": func() error {
			_, err := s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: b.ID, At: time.Now().UTC()})
			return err
		},
	})
	_, err := s.GetBatch(ctxT(t), "app1", b2.ID)
	wantErr(t, err, store.ErrNotFound, "a batch created with a canceled context")
	got, err := s.GetBatch(ctxT(t), "app1", b.ID)
	must(t, err)
	if got.ChunksDone != 0 {
		t.Errorf("CompleteChunk with a canceled context completed the chunk")
	}
}

func testStartChunk(t *testing.T, s store.Batches, opts *Options) {
	ctx := ctxT(t)
	created := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	b, chunks := newBatch("app1", "batch-start", created, 2, 1)
	b.Payload = append(b.Payload, 0x00, 0xff, '\n') // byte-exact, whatever the bytes
	must(t, s.CreateBatch(ctx, b, chunks))
	ref := chunks[0].ChunkRef
	first := created.Add(time.Second)
	gotBatch, c, err := s.StartChunk(ctx, startParams(ref, first))
	must(t, err)
	sameTime(t, "StartedAt", c.StartedAt, first, opts)
	if c.Done || len(c.Recipients) != 2 || !reflect.DeepEqual(c.Recipients, chunks[0].Recipients) || c.Start != 0 {
		t.Errorf("started chunk %+v", c)
	}
	sameTime(t, "NotBefore of the started chunk", c.NotBefore, created, opts)
	if gotBatch == nil || gotBatch.ID != b.ID || gotBatch.AppID != "app1" || gotBatch.Sender != b.Sender || gotBatch.Count != 3 ||
		gotBatch.Chunks != 2 || gotBatch.ChunksDone != 0 || !bytes.Equal(gotBatch.Payload, b.Payload) {
		t.Errorf("StartChunk's batch = %+v, want the batch as stored", gotBatch)
	} else {
		sameTime(t, "CreatedAt of StartChunk's batch", gotBatch.CreatedAt, created, opts)
		sameTime(t, "CanceledAt of StartChunk's batch", gotBatch.CanceledAt, time.Time{}, opts)
	}
	if c.Attempts != 1 {
		t.Errorf("Attempts after the first start = %d, want 1", c.Attempts)
	}
	sameTime(t, "LeaseUntil after the first start", c.LeaseUntil, first.Add(time.Minute), opts)
	_, again, err := s.StartChunk(ctx, startParams(ref, first.Add(time.Minute)))
	must(t, err)
	sameTime(t, "StartedAt after a second start", again.StartedAt, first, opts)
	sameTime(t, "LeaseUntil after a second start", again.LeaseUntil, first.Add(2*time.Minute), opts)
	if again.Attempts != 2 {
		t.Errorf("Attempts after the second start = %d, want 2", again.Attempts)
	}
	if again.Done || !reflect.DeepEqual(again.Recipients, chunks[0].Recipients) {
		t.Errorf("chunk started twice %+v", again)
	}
	loaded, err := s.LoadChunk(ctx, ref)
	must(t, err)
	sameTime(t, "StartedAt from LoadChunk", loaded.StartedAt, first, opts)
	other, err := s.LoadChunk(ctx, chunks[1].ChunkRef)
	must(t, err)
	sameTime(t, "StartedAt of a chunk never started", other.StartedAt, time.Time{}, opts)

	_, err = s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: ref, Outcomes: outcomes(store.OutcomeSent, store.OutcomeFailed), At: first})
	must(t, err)
	afterDone, done, err := s.StartChunk(ctx, startParams(ref, first.Add(time.Hour)))
	must(t, err)
	if !done.Done || len(done.Outcomes) != 2 || done.Attempts != 2 {
		t.Errorf("StartChunk of a done chunk = %+v, want it done with its outcomes, Attempts unchanged (2)", done)
	}
	if afterDone.ChunksDone != 1 || afterDone.Sent != 1 || afterDone.Failed != 1 {
		t.Errorf("StartChunk's batch after a chunk completed = %+v, want its counters", afterDone)
	}
	// The second chunk after a cancel: done (canceled), and its batch says so.
	_, err = s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: b.ID, At: first.Add(2 * time.Hour)})
	must(t, err)
	canceledBatch, canceled, err := s.StartChunk(ctx, startParams(chunks[1].ChunkRef, first.Add(3*time.Hour)))
	must(t, err)
	if !canceled.Done || !canceled.StartedAt.IsZero() || len(canceled.Outcomes) != 1 || canceled.Outcomes[0].Status != store.OutcomeCanceled {
		t.Errorf("StartChunk of a canceled chunk = %+v, want it done, never started, its recipient canceled", canceled)
	}
	sameTime(t, "CanceledAt of StartChunk's batch after a cancel", canceledBatch.CanceledAt, first.Add(2*time.Hour), opts)
	_, _, err = s.StartChunk(ctx, startParams(store.ChunkRef{AppID: "app1", BatchID: b.ID, No: 7}, first))
	wantErr(t, err, store.ErrNotFound, "StartChunk past the end")
	_, _, err = s.StartChunk(ctx, startParams(store.ChunkRef{AppID: "app2", BatchID: b.ID}, first))
	wantErr(t, err, store.ErrNotFound, "StartChunk of another app's batch")
	_, _, err = s.StartChunk(ctx, startParams(store.ChunkRef{AppID: "app1", BatchID: "batch-nope"}, first))
	wantErr(t, err, store.ErrNotFound, "StartChunk of a missing batch")
}

func testCancelBatch(t *testing.T, s store.Batches, opts *Options) {
	ctx := ctxT(t)
	created := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	b, chunks := newBatch("app1", "batch-cancel", created, 2, 3, 2, 1)
	must(t, s.CreateBatch(ctx, b, chunks))
	// Chunk 0 is done, chunk 1 is in progress, chunks 2 and 3 never started.
	_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: chunks[0].ChunkRef, Outcomes: outcomes(store.OutcomeSent, store.OutcomeFailed), At: created})
	must(t, err)
	_, _, err = s.StartChunk(ctx, startParams(chunks[1].ChunkRef, created))
	must(t, err)

	at := created.Add(time.Minute)
	after, err := s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: b.ID, At: at})
	must(t, err)
	sameTime(t, "CanceledAt", after.CanceledAt, at, opts)
	if after.Canceled != 3 || after.Sent != 1 || after.Failed != 1 || after.ChunksDone != 3 || after.Pending() != 3 || !after.FinishedAt.IsZero() {
		t.Errorf("after cancel: %+v (pending %d); want chunks 2 and 3 canceled, chunk 1 left to finish", after, after.Pending())
	}
	if st := after.Status(at); st != store.StatusCanceled {
		t.Errorf("status after cancel = %s", st)
	}
	for _, no := range []int{2, 3} {
		c, err := s.LoadChunk(ctx, chunks[no].ChunkRef)
		must(t, err)
		if !c.Done || len(c.Outcomes) != len(c.Recipients) {
			t.Fatalf("canceled chunk %d: done=%v outcomes=%d", no, c.Done, len(c.Outcomes))
		}
		for _, o := range c.Outcomes {
			if o.Status != store.OutcomeCanceled {
				t.Errorf("chunk %d outcome %+v, want canceled", no, o)
			}
		}
	}
	in, err := s.LoadChunk(ctx, chunks[1].ChunkRef)
	must(t, err)
	if in.Done {
		t.Error("cancel completed a chunk that was in progress")
	}
	// Canceling again while the chunk in progress runs changes nothing.
	again, err := s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: b.ID, At: at.Add(time.Minute)})
	must(t, err)
	sameTime(t, "CanceledAt after a second cancel", again.CanceledAt, at, opts)
	if again.Canceled != 3 || again.ChunksDone != 3 {
		t.Errorf("a second cancel changed the counters: %+v", again)
	}
	// The chunk in progress finishes; it finishes the batch.
	end := at.Add(2 * time.Minute)
	last, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: chunks[1].ChunkRef, Outcomes: outcomes(store.OutcomeSent, store.OutcomeSent, store.OutcomeSent), At: end})
	must(t, err)
	if last.ChunksDone != 4 || last.Sent != 4 || last.Canceled != 3 || last.Pending() != 0 || last.Status(end) != store.StatusCanceled {
		t.Errorf("after the last chunk: %+v", last)
	}
	sameTime(t, "FinishedAt", last.FinishedAt, end, opts)
	refs, err := s.PendingChunks(ctx, pendingParams(end.Add(time.Hour), 10))
	must(t, err)
	if len(refs) != 0 {
		t.Errorf("a canceled batch has pending chunks: %+v", refs)
	}
}

func testCancelFinished(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	now := time.Now().UTC()
	b, chunks := newBatch("app1", "batch-finished", now, 1)
	must(t, s.CreateBatch(ctx, b, chunks))
	_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: chunks[0].ChunkRef, Outcomes: outcomes(store.OutcomeSent), At: now})
	must(t, err)
	_, err = s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: b.ID, At: now})
	wantErr(t, err, store.ErrConflict, "canceling a finished batch")
	got, err := s.GetBatch(ctx, "app1", b.ID)
	must(t, err)
	if !got.CanceledAt.IsZero() || got.Status(now) != store.StatusCompleted {
		t.Errorf("a refused cancel changed the batch: %+v", got)
	}
	// A batch whose every chunk was canceled is finished by the cancel.
	b2, chunks2 := newBatch("app1", "batch-all-canceled", now, 2, 2)
	must(t, s.CreateBatch(ctx, b2, chunks2))
	after, err := s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: b2.ID, At: now})
	must(t, err)
	if after.ChunksDone != 2 || after.Canceled != 4 || after.FinishedAt.IsZero() {
		t.Errorf("canceling a batch nothing started: %+v", after)
	}
	_, err = s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: b2.ID, At: now})
	wantErr(t, err, store.ErrConflict, "canceling a batch a cancel already finished")
	_, err = s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: "batch-nope", At: now})
	wantErr(t, err, store.ErrNotFound, "canceling a missing batch")
}

// testCancelRacesStart cancels while workers start chunks: every chunk
// ends either started (and not canceled) or canceled (and never started).
func testCancelRacesStart(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	const n = 10
	sizes := make([]int, n)
	for i := range sizes {
		sizes[i] = 2
	}
	now := time.Now().UTC()
	b, chunks := newBatch("app1", "batch-race-cancel", now, sizes...)
	must(t, s.CreateBatch(ctx, b, chunks))
	started := make([]bool, n)
	var wg sync.WaitGroup
	for no := range n {
		wg.Go(func() {
			_, c, err := s.StartChunk(ctx, startParams(chunks[no].ChunkRef, now))
			if err != nil {
				t.Errorf("StartChunk: %v", err)
				return
			}
			started[no] = !c.Done
		})
	}
	var canceled *store.Batch
	wg.Go(func() {
		var err error
		if canceled, err = s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: b.ID, At: now}); err != nil {
			t.Errorf("CancelBatch: %v", err)
		}
	})
	wg.Wait()
	if canceled == nil {
		return
	}
	nStarted := 0
	for no := range n {
		c, err := s.LoadChunk(ctx, chunks[no].ChunkRef)
		must(t, err)
		if started[no] == c.Done {
			t.Errorf("chunk %d: started by a worker=%v, done by the cancel=%v; exactly one must hold", no, started[no], c.Done)
		}
		if started[no] {
			nStarted++
		}
	}
	if canceled.Canceled != 2*(n-nStarted) {
		t.Errorf("cancel counted %d canceled recipients; %d chunks were not started", canceled.Canceled, n-nStarted)
	}
}

func testCancelAppIsolation(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	now := time.Now().UTC()
	b, chunks := newBatch("app-a", "batch-iso-cancel", now, 1)
	must(t, s.CreateBatch(ctx, b, chunks))
	_, err := s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app-b", BatchID: b.ID, At: now})
	wantErr(t, err, store.ErrNotFound, "app-b canceling app-a's batch")
	got, err := s.GetBatch(ctx, "app-a", b.ID)
	must(t, err)
	if !got.CanceledAt.IsZero() || got.ChunksDone != 0 {
		t.Errorf("app-b's cancel changed app-a's batch: %+v", got)
	}
}

func claimedIDs(bs []*store.Batch) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.AppID + "/" + b.ID
	}
	return out
}

func testDoneNotifications(t *testing.T, s store.Batches, opts *Options) {
	ctx := ctxT(t)
	base := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	finish := func(app, id string, at time.Time) {
		t.Helper()
		b, chunks := newBatch(app, id, base, 1)
		must(t, s.CreateBatch(ctx, b, chunks))
		if at.IsZero() {
			return
		}
		_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: chunks[0].ChunkRef, Outcomes: outcomes(store.OutcomeSent), At: at})
		must(t, err)
	}
	finish("app1", "batch-b", base.Add(2*time.Minute))
	finish("app2", "batch-a", base.Add(time.Minute))
	finish("app1", "batch-running", time.Time{})
	claim := func(p store.ClaimDoneNotificationsParams, want ...string) []*store.Batch {
		t.Helper()
		got, err := s.ClaimDoneNotifications(ctx, &p)
		must(t, err)
		if !slices.Equal(claimedIDs(got), want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("ClaimDoneNotifications(%+v) = %q, want %q", p, claimedIDs(got), want)
		}
		return got
	}
	now := base.Add(time.Hour)
	// Only finished batches, finished at or before FinishedBefore, oldest first.
	claim(store.ClaimDoneNotificationsParams{FinishedBefore: base, At: now, Until: now.Add(time.Minute), Limit: 10})
	got := claim(store.ClaimDoneNotificationsParams{FinishedBefore: base.Add(90 * time.Second), At: now, Until: now.Add(time.Minute), Limit: 10}, "app2/batch-a")
	if len(got) == 1 && (got[0].ChunksDone != 1 || got[0].Sent != 1 || !got[0].NotifiedAt.IsZero()) {
		t.Errorf("claimed batch %+v, want it as GetBatch returns it, not notified yet", got[0])
	}
	// A live claim is not claimed again; another batch is.
	claim(store.ClaimDoneNotificationsParams{FinishedBefore: now, At: now.Add(30 * time.Second), Until: now.Add(time.Hour), Limit: 10}, "app1/batch-b")
	claim(store.ClaimDoneNotificationsParams{FinishedBefore: now, At: now.Add(59 * time.Second), Until: now.Add(time.Hour), Limit: 10})
	// An ended claim without a mark is taken over (the claimer died).
	claim(store.ClaimDoneNotificationsParams{FinishedBefore: now, At: now.Add(61 * time.Second), Until: now.Add(2 * time.Minute), Limit: 10}, "app2/batch-a")
	// Marked batches are never claimed again.
	must(t, s.MarkDoneNotified(ctx, &store.MarkDoneNotifiedParams{AppID: "app2", BatchID: "batch-a", At: now.Add(62 * time.Second)}))
	must(t, s.MarkDoneNotified(ctx, &store.MarkDoneNotifiedParams{AppID: "app2", BatchID: "batch-a", At: now.Add(63 * time.Second)})) // again: no change, no error
	b, err := s.GetBatch(ctx, "app2", "batch-a")
	must(t, err)
	sameTime(t, "NotifiedAt", b.NotifiedAt, now.Add(62*time.Second), opts)
	claim(store.ClaimDoneNotificationsParams{FinishedBefore: now, At: now.Add(time.Hour + time.Second), Until: now.Add(2 * time.Hour), Limit: 10}, "app1/batch-b")
	must(t, s.MarkDoneNotified(ctx, &store.MarkDoneNotifiedParams{AppID: "app1", BatchID: "batch-b", At: now}))
	claim(store.ClaimDoneNotificationsParams{FinishedBefore: now.Add(time.Hour), At: now.Add(10 * time.Hour), Until: now.Add(11 * time.Hour), Limit: 10})
	wantErr(t, s.MarkDoneNotified(ctx, &store.MarkDoneNotifiedParams{AppID: "app1", BatchID: "batch-a", At: now}), store.ErrNotFound, "MarkDoneNotified of another app's batch")

	// One batch by ID: only that one, only if finished and unclaimed.
	finish("app1", "batch-c", base.Add(3*time.Minute))
	finish("app1", "batch-d", base.Add(3*time.Minute))
	claim(store.ClaimDoneNotificationsParams{AppID: "app1", BatchID: "batch-running", FinishedBefore: now, At: now, Until: now.Add(time.Minute), Limit: 1})
	claim(store.ClaimDoneNotificationsParams{AppID: "app2", BatchID: "batch-c", FinishedBefore: now, At: now, Until: now.Add(time.Minute), Limit: 1})
	claim(store.ClaimDoneNotificationsParams{AppID: "app1", BatchID: "batch-c", FinishedBefore: now, At: now, Until: now.Add(time.Minute), Limit: 1}, "app1/batch-c")
	claim(store.ClaimDoneNotificationsParams{AppID: "app1", BatchID: "batch-c", FinishedBefore: now, At: now, Until: now.Add(time.Minute), Limit: 1})
	claim(store.ClaimDoneNotificationsParams{FinishedBefore: now, At: now, Until: now.Add(time.Minute), Limit: 10}, "app1/batch-d")
	// A canceled batch that the cancel finished is claimable too.
	cb, cchunks := newBatch("app1", "batch-canceled", base, 1)
	must(t, s.CreateBatch(ctx, cb, cchunks))
	_, err = s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: cb.ID, At: base.Add(4 * time.Minute)})
	must(t, err)
	claim(store.ClaimDoneNotificationsParams{FinishedBefore: now, At: now, Until: now.Add(time.Minute), Limit: 10}, "app1/batch-canceled")
}

// testDoneNotificationsConcurrent claims one batch from many goroutines
// at once: exactly one gets it.
func testDoneNotificationsConcurrent(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	now := time.Now().UTC()
	b, chunks := newBatch("app1", "batch-claim-race", now, 1)
	must(t, s.CreateBatch(ctx, b, chunks))
	_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: chunks[0].ChunkRef, Outcomes: outcomes(store.OutcomeSent), At: now})
	must(t, err)
	var claims atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			p := &store.ClaimDoneNotificationsParams{FinishedBefore: now, At: now, Until: now.Add(time.Minute), Limit: 10}
			if i%2 == 0 {
				p.AppID, p.BatchID = "app1", b.ID
			}
			got, err := s.ClaimDoneNotifications(ctx, p)
			if err != nil {
				t.Errorf("ClaimDoneNotifications: %v", err)
				return
			}
			claims.Add(int32(len(got)))
		})
	}
	wg.Wait()
	if claims.Load() != 1 {
		t.Errorf("%d concurrent claims of one batch succeeded, want exactly 1", claims.Load())
	}
}

func keyRecord(app, key, hash string, at time.Time) *store.IdempotencyRecord {
	return &store.IdempotencyRecord{AppID: app, Key: key, RequestHash: hash, CreatedAt: at, ExpiresAt: at.Add(24 * time.Hour)}
}

func testIdempotencyKeys(t *testing.T, s store.Batches, opts *Options) {
	ctx := ctxT(t)
	now := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	stale := now.Add(-time.Minute)
	const key = "order-42 retry/\"quoted\" ключ 🔑"

	existing, err := s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app1", key, "hash-1", now), StaleBefore: stale})
	must(t, err)
	if existing != nil {
		t.Fatalf("first claim returned an existing record %+v", existing)
	}
	existing, err = s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app1", key, "hash-2", now.Add(time.Second)), StaleBefore: stale})
	wantErr(t, err, store.ErrConflict, "claiming a key in progress")
	if existing == nil || existing.RequestHash != "hash-1" || existing.BatchID != "" {
		t.Fatalf("the in-progress record = %+v", existing)
	}
	// Another app has its own keys.
	other, err := s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app2", key, "hash-x", now), StaleBefore: stale})
	must(t, err)
	if other != nil {
		t.Errorf("app2's claim saw app1's record %+v", other)
	}

	b, chunks := newBatch("app1", "batch-idem", now, 2)
	b.IdempotencyKey = key
	must(t, s.CreateBatch(ctx, b, chunks))
	existing, err = s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app1", key, "hash-1", now.Add(time.Hour)), StaleBefore: now.Add(time.Hour)})
	wantErr(t, err, store.ErrConflict, "claiming a used key")
	if existing == nil || existing.BatchID != b.ID || existing.Count != 2 || existing.RequestHash != "hash-1" {
		t.Fatalf("the done record = %+v, want batch %s with count 2", existing, b.ID)
	}
	sameTime(t, "record CreatedAt", existing.CreatedAt, now, opts)
	sameTime(t, "record ExpiresAt", existing.ExpiresAt, now.Add(24*time.Hour), opts)
	// Releasing a done record keeps it.
	must(t, s.ReleaseIdempotencyKey(ctx, &store.ReleaseIdempotencyKeyParams{AppID: "app1", Key: key}))
	if _, err := s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app1", key, "hash-1", now.Add(2*time.Hour)), StaleBefore: now}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a released done record was deleted: claim = %v", err)
	}
	// A second batch under a used key is refused, and nothing is stored.
	b2, chunks2 := newBatch("app1", "batch-idem-2", now, 1)
	b2.IdempotencyKey = key
	wantErr(t, s.CreateBatch(ctx, b2, chunks2), store.ErrConflict, "CreateBatch under a used key")
	_, err = s.GetBatch(ctx, "app1", b2.ID)
	wantErr(t, err, store.ErrNotFound, "the batch of a refused CreateBatch")
	// Under a key never claimed, too.
	b3, chunks3 := newBatch("app1", "batch-idem-3", now, 1)
	b3.IdempotencyKey = "never-claimed"
	wantErr(t, s.CreateBatch(ctx, b3, chunks3), store.ErrConflict, "CreateBatch under an unclaimed key")

	// Releasing an in-progress record frees the key.
	must(t, s.ReleaseIdempotencyKey(ctx, &store.ReleaseIdempotencyKeyParams{AppID: "app2", Key: key}))
	if existing, err := s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app2", key, "hash-y", now), StaleBefore: stale}); err != nil || existing != nil {
		t.Errorf("claim after release = %+v, %v", existing, err)
	}
	must(t, s.ReleaseIdempotencyKey(ctx, &store.ReleaseIdempotencyKeyParams{AppID: "app2", Key: "missing-key"}))
}

func testIdempotencyConcurrent(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	now := time.Now().UTC()
	const n = 20
	var wins, conflicts atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			existing, err := s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app1", "same-key", fmt.Sprint("h", i), now), StaleBefore: now.Add(-time.Minute)})
			switch {
			case err == nil && existing == nil:
				wins.Add(1)
			case errors.Is(err, store.ErrConflict) && existing != nil:
				conflicts.Add(1)
			default:
				t.Errorf("claim %d: %+v, %v", i, existing, err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || conflicts.Load() != n-1 {
		t.Errorf("%d concurrent claims of one key: %d won, %d conflicted; want exactly one winner", n, wins.Load(), conflicts.Load())
	}
}

func testIdempotencyExpiry(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	now := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	// An in-progress record older than the stale limit is replaced.
	_, err := s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app1", "stale", "h1", now), StaleBefore: now.Add(-time.Minute)})
	must(t, err)
	later := now.Add(5 * time.Minute)
	if existing, err := s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app1", "stale", "h2", later), StaleBefore: later.Add(-time.Minute)}); err != nil || existing != nil {
		t.Errorf("claiming over a stale in-progress record = %+v, %v", existing, err)
	}
	// A done record lives until it expires, then is replaced.
	_, err = s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app1", "done", "h1", now), StaleBefore: now})
	must(t, err)
	b, chunks := newBatch("app1", "batch-expiry", now, 1)
	b.IdempotencyKey = "done"
	must(t, s.CreateBatch(ctx, b, chunks))
	dayLater := now.Add(24*time.Hour + time.Second)
	if existing, err := s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app1", "done", "h2", dayLater), StaleBefore: dayLater}); err != nil || existing != nil {
		t.Errorf("claiming an expired key = %+v, %v", existing, err)
	}
	// Pruning: only records that expired.
	_, err = s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app1", "old", "h", now.Add(-48*time.Hour)), StaleBefore: now.Add(-48 * time.Hour)})
	must(t, err)
	n, err := s.DeleteExpiredIdempotencyKeys(ctx, &store.DeleteExpiredIdempotencyKeysParams{Before: now, Limit: 100})
	must(t, err)
	if n != 1 {
		t.Errorf("DeleteExpiredIdempotencyKeys deleted %d records, want 1", n)
	}
	if _, err := s.ClaimIdempotencyKey(ctx, &store.ClaimIdempotencyKeyParams{Record: keyRecord("app1", "stale", "h3", later), StaleBefore: later.Add(-time.Minute)}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("pruning deleted a live record: claim = %v", err)
	}
}

// trickyIDs are IDs that break naive SQL or array-literal building.
var trickyIDs = []string{`it's`, `say "hi"`, `back\slash`, `{a,b}`, `a,b`, `NULL`, `null`, ` padded `, `用戶-🚀`, `%_wild*`, `semi;colon--`, `what?`}

func testTrickyIDs(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	in := inspector(t, s)
	must(t, in.AddUsers(ctx, "app1", append([]string{"system"}, trickyIDs...)...))
	for _, id := range trickyIDs {
		must(t, in.AddRoom(ctx, "app1", "room "+id, id))
	}
	missing, err := s.MissingUsers(ctx, "app1", append(slices.Clone(trickyIDs), `it`, `NUL`))
	must(t, err)
	if !slices.Equal(missing, []string{"it", "NUL"}) {
		t.Errorf("MissingUsers over tricky IDs = %q, want [it NUL]", missing)
	}
	rooms := make([]string, len(trickyIDs))
	for i, id := range trickyIDs {
		rooms[i] = "room " + id
	}
	missing, err = s.MissingRooms(ctx, "app1", rooms)
	must(t, err)
	if len(missing) != 0 {
		t.Errorf("MissingRooms over tricky IDs = %q", missing)
	}
	members, err := s.RoomMembers(ctx, "app1", rooms)
	must(t, err)
	for i, id := range trickyIDs {
		if !slices.Equal(members[rooms[i]], []string{id}) {
			t.Errorf("members of %q = %q, want [%q]", rooms[i], members[rooms[i]], id)
		}
		room, err := s.DirectRoom(ctx, "app1", "system", id)
		if errors.Is(err, store.ErrConflict) {
			continue // a room-ID scheme that folds case: "NULL" took it first
		}
		must(t, err)
		got, err := in.UserRooms(ctx, "app1", id)
		must(t, err)
		if !slices.Contains(got, room) || len(got) != 2 {
			t.Errorf("%q's rooms = %q, want its own room and the direct room %q", id, got, room)
		}
	}
}

// testDirectRoomCaseCollision: user IDs that differ only in case never
// share a one-on-one room, whatever the room-ID scheme.
func testDirectRoomCaseCollision(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	in := inspector(t, s)
	must(t, in.AddUsers(ctx, "app1", "system", "Ann", "ann"))
	upper, err := s.DirectRoom(ctx, "app1", "system", "Ann")
	must(t, err)
	lower, err := s.DirectRoom(ctx, "app1", "system", "ann")
	switch {
	case errors.Is(err, store.ErrConflict):
	case err != nil:
		t.Fatalf("DirectRoom(system, ann): %v", err)
	case lower == upper:
		t.Errorf("users Ann and ann share the room %q with system; messages to one would reach the other", upper)
	}
	members, err := s.RoomMembers(ctx, "app1", []string{upper})
	must(t, err)
	if slices.Contains(members[upper], "ann") {
		t.Errorf("ann was added to Ann's room: %q", members[upper])
	}
}

func testAddRoomReplaces(t *testing.T, s store.Directory, _ *Options) {
	ctx := ctxT(t)
	in := inspector(t, s)
	must(t, in.AddUsers(ctx, "app1", "u1", "u2", "u3"))
	must(t, in.AddRoom(ctx, "app1", "room-1", "u1", "u2"))
	must(t, in.AddRoom(ctx, "app1", "room-1", "u2", "u3"))
	members, err := s.RoomMembers(ctx, "app1", []string{"room-1"})
	must(t, err)
	if got := slices.Sorted(slices.Values(members["room-1"])); !slices.Equal(got, []string{"u2", "u3"}) {
		t.Errorf("members after AddRoom replaced them = %q, want [u2 u3]", got)
	}
	rooms, err := in.UserRooms(ctx, "app1", "u1")
	must(t, err)
	if len(rooms) != 0 {
		t.Errorf("u1 is still in %q after AddRoom replaced the members", rooms)
	}
}

func testSameCreatedAtOrder(t *testing.T, s store.Messages, _ *Options) {
	ctx := ctxT(t)
	at := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	// Saved in this order, all at the same time: newest first means the
	// later save first.
	for _, id := range []string{"m-b", "m-a", "m-c"} {
		must(t, s.SaveMessages(ctx, "app1", []store.Message{sampleMessage("app1", id, "room-1", at)}))
	}
	got := roomMessages(t, s, "app1", "room-1")
	var ids []string
	for _, m := range got {
		ids = append(ids, m.ID)
	}
	if !slices.Equal(ids, []string{"m-c", "m-a", "m-b"}) {
		t.Errorf("messages with equal CreatedAt come back as %q, want the later save first: [m-c m-a m-b]", ids)
	}
}

func testNonUTCTimes(t *testing.T, s store.Messages, opts *Options) {
	ctx := ctxT(t)
	taipei := time.FixedZone("UTC+8", 8*3600)
	at := time.Date(2026, 4, 10, 17, 30, 15, 123456789, taipei) // 09:30:15.123456789Z
	must(t, s.SaveMessages(ctx, "app1", []store.Message{sampleMessage("app1", "m-tz", "room-1", at)}))
	got := roomMessages(t, s, "app1", "room-1")
	if len(got) != 1 {
		t.Fatalf("%d messages", len(got))
	}
	sameTime(t, "CreatedAt given in UTC+8 with nanoseconds", got[0].CreatedAt, at.UTC(), opts)
}

func testBatchDuplicateIDConcurrent(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	const n = 8
	var ok, conflict atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			b, chunks := newBatch("app1", "batch-same-id", time.Now().UTC(), 1+i%3, 2)
			err := s.CreateBatch(ctx, b, chunks)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, store.ErrConflict):
				conflict.Add(1)
			default:
				t.Errorf("CreateBatch: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || conflict.Load() != n-1 {
		t.Errorf("%d concurrent creators of one batch ID: %d succeeded, %d conflicted; want exactly one", n, ok.Load(), conflict.Load())
	}
	got, err := s.GetBatch(ctx, "app1", "batch-same-id")
	must(t, err)
	c, err := s.LoadChunk(ctx, store.ChunkRef{AppID: "app1", BatchID: got.ID, No: 0})
	must(t, err)
	if got.Chunks != 2 || got.Count != len(c.Recipients)+2 {
		t.Errorf("the surviving batch mixes writers: %+v with chunk 0 of %d recipients", got, len(c.Recipients))
	}
}

func directRoomResolver(t *testing.T, s store.Directory) store.DirectRoomResolver {
	t.Helper()
	r, ok := s.(store.DirectRoomResolver)
	if !ok {
		t.Skipf("%T does not implement store.DirectRoomResolver; each chunk then finds its rooms with look-ups and one DirectRoom call per new room", s)
	}
	return r
}

// checkPairRoom checks that room is the one room of a and b: it has
// exactly them as members, and each of them has exactly one room.
func checkPairRoom(t *testing.T, s store.Directory, app, a, b, room string) {
	t.Helper()
	ctx := ctxT(t)
	members, err := s.RoomMembers(ctx, app, []string{room})
	must(t, err)
	want := []string{a, b}
	if a == b {
		want = want[:1]
	}
	slices.Sort(want)
	if m := slices.Sorted(slices.Values(members[room])); !slices.Equal(m, want) {
		t.Errorf("members of the room %q of %s and %s = %q, want %q", room, a, b, m, want)
	}
	if a != b {
		rooms, err := inspector(t, s).UserRooms(ctx, app, b)
		must(t, err)
		if len(rooms) != 1 || rooms[0] != room {
			t.Errorf("%s has rooms %q, want exactly %q", b, rooms, room)
		}
	}
}

func testDirectRooms(t *testing.T, s store.Directory, _ *Options) {
	r := directRoomResolver(t, s)
	ctx := ctxT(t)
	in := inspector(t, s)
	must(t, in.AddUsers(ctx, "app1", "system", "u1", "u2", "u3", "Ann", "ann", "Bob", "bob"))
	must(t, in.AddUsers(ctx, "app2", "system", "ghost-elsewhere"))
	existing, err := s.DirectRoom(ctx, "app1", "system", "u1")
	must(t, err)
	annRoom, err := s.DirectRoom(ctx, "app1", "system", "Ann")
	must(t, err)
	bs := []string{"u1", "u2", "ghost", "u3", "u2", "ann", "system", "ghost-elsewhere", "Bob", "bob"}
	got, err := r.DirectRooms(ctx, "app1", "system", bs)
	must(t, err)
	if len(got) != len(bs) {
		t.Fatalf("DirectRooms returned %d results for %d receivers", len(got), len(bs))
	}
	// Each result is what DirectRoom says for the pair, now that the rooms exist.
	for i, b := range bs {
		want, werr := s.DirectRoom(ctx, "app1", "system", b)
		switch {
		case werr != nil && errors.Is(werr, store.ErrNotFound):
			wantErr(t, got[i].Err, store.ErrNotFound, fmt.Sprintf("DirectRooms result %d (%s)", i, b))
		case werr != nil && errors.Is(werr, store.ErrConflict):
			wantErr(t, got[i].Err, store.ErrConflict, fmt.Sprintf("DirectRooms result %d (%s)", i, b))
		case werr != nil:
			t.Fatalf("DirectRoom(system, %s): %v", b, werr)
		case got[i].Err != nil || got[i].Room != want:
			t.Errorf("DirectRooms result %d (%s) = %+v, want room %q", i, b, got[i], want)
		}
		if got[i].Err != nil && got[i].Room != "" {
			t.Errorf("DirectRooms result %d (%s) = %+v: a failed pair has no room", i, b, got[i])
		}
	}
	if got[0].Room != existing {
		t.Errorf("the existing room of system and u1 is %q, DirectRooms said %q", existing, got[0].Room)
	}
	for i, b := range []string{"ghost", "ghost-elsewhere"} {
		wantErr(t, got[2+5*i].Err, store.ErrNotFound, "DirectRooms for "+b)
	}
	for _, u := range []string{"u1", "u2", "u3", "Bob"} {
		checkPairRoom(t, s, "app1", "system", u, got[slices.Index(bs, u)].Room)
	}
	checkPairRoom(t, s, "app1", "system", "system", got[6].Room)
	// Ann's room is Ann's: ann, whose ID differs only in case, is not let
	// in (a conflict under a case-folding scheme, a room of her own under
	// a case-preserving one).
	members, err := s.RoomMembers(ctx, "app1", []string{annRoom})
	must(t, err)
	if slices.Contains(members[annRoom], "ann") {
		t.Errorf("DirectRooms added ann to Ann's room: %q", members[annRoom])
	}
	if got[5].Err == nil && got[5].Room == annRoom {
		t.Errorf("DirectRooms gave ann Ann's room %q", annRoom)
	}
	// Bob and bob in one call: never one room for both.
	if got[8].Err == nil && got[9].Err == nil && got[8].Room == got[9].Room {
		t.Errorf("Bob and bob share room %q", got[8].Room)
	}
	// Idempotent, and nothing for an empty list.
	again, err := r.DirectRooms(ctx, "app1", "system", bs)
	must(t, err)
	for i := range bs {
		if again[i].Room != got[i].Room || (again[i].Err == nil) != (got[i].Err == nil) {
			t.Errorf("second DirectRooms result %d = %+v, first %+v", i, again[i], got[i])
		}
	}
	none, err := r.DirectRooms(ctx, "app1", "system", nil)
	must(t, err)
	if len(none) != 0 {
		t.Errorf("DirectRooms of no receivers = %+v", none)
	}
	// A sender who is not a user: every pair is ErrNotFound, no room made.
	lost, err := r.DirectRooms(ctx, "app1", "nobody", []string{"u1", "u2"})
	must(t, err)
	for i := range lost {
		wantErr(t, lost[i].Err, store.ErrNotFound, "DirectRooms from a sender who is not a user")
	}
	rooms, err := in.UserRooms(ctx, "app1", "u2")
	must(t, err)
	if len(rooms) != 1 {
		t.Errorf("u2 has rooms %q after DirectRooms from a missing sender", rooms)
	}
	// The other app saw nothing.
	other, err := r.DirectRooms(ctx, "app2", "system", []string{"u1"})
	must(t, err)
	wantErr(t, other[0].Err, store.ErrNotFound, "DirectRooms for a user of another app")
}

// testDirectRoomsMany resolves a chunk-sized list in which some rooms
// exist, some must be created and some receivers do not exist.
func testDirectRoomsMany(t *testing.T, s store.Directory, _ *Options) {
	r := directRoomResolver(t, s)
	ctx := ctxT(t)
	in := inspector(t, s)
	const n = 1200
	var users, bs []string
	for i := range n {
		u := fmt.Sprintf("user-%04d", i)
		bs = append(bs, u)
		if i%10 != 7 {
			users = append(users, u)
		}
	}
	must(t, in.AddUsers(ctx, "app1", append(users, "system")...))
	for i := 0; i < n; i += 3 {
		if i%10 != 7 {
			_, err := s.DirectRoom(ctx, "app1", "system", bs[i])
			must(t, err)
		}
	}
	got, err := r.DirectRooms(ctx, "app1", "system", bs)
	must(t, err)
	for i, b := range bs {
		if i%10 == 7 {
			wantErr(t, got[i].Err, store.ErrNotFound, "DirectRooms for "+b)
			continue
		}
		if got[i].Err != nil {
			t.Fatalf("DirectRooms for %s: %v", b, got[i].Err)
		}
		if i%97 == 0 {
			checkPairRoom(t, s, "app1", "system", b, got[i].Room)
		}
	}
	members, err := s.RoomMembers(ctx, "app1", []string{got[1].Room, got[3].Room})
	must(t, err)
	if len(members[got[1].Room]) != 2 || len(members[got[3].Room]) != 2 {
		t.Errorf("members %q", members)
	}
}

func testDirectRoomsConcurrent(t *testing.T, s store.Directory, _ *Options) {
	r := directRoomResolver(t, s)
	ctx := ctxT(t)
	in := inspector(t, s)
	users := []string{"system"}
	for i := range 40 {
		users = append(users, fmt.Sprintf("user-%02d", i))
	}
	must(t, in.AddUsers(ctx, "app1", users...))
	results := make([][]store.DirectRoomResult, 6)
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			if w%2 == 0 {
				res, err := r.DirectRooms(ctx, "app1", "system", users[1+w:])
				if err != nil {
					t.Errorf("DirectRooms: %v", err)
				}
				results[w] = res
				return
			}
			for _, u := range users[1+w*5:] {
				if _, err := s.DirectRoom(ctx, "app1", "system", u); err != nil {
					t.Errorf("DirectRoom: %v", err)
				}
			}
		})
	}
	wg.Wait()
	for _, u := range users[1:] {
		rooms, err := in.UserRooms(ctx, "app1", u)
		must(t, err)
		if len(rooms) != 1 {
			t.Fatalf("%s has rooms %q after concurrent creation, want exactly one", u, rooms)
		}
		members, err := s.RoomMembers(ctx, "app1", rooms)
		must(t, err)
		if len(members[rooms[0]]) != 2 {
			t.Errorf("room %s has members %q, want system and %s once each", rooms[0], members[rooms[0]], u)
		}
	}
	for w, res := range results {
		for i, rr := range res {
			u := users[1+w+i]
			rooms, err := in.UserRooms(ctx, "app1", u)
			must(t, err)
			if rr.Err != nil || len(rooms) != 1 || rr.Room != rooms[0] {
				t.Errorf("concurrent DirectRooms for %s = %+v; the user's rooms are %q", u, rr, rooms)
			}
		}
	}
}

// testPauseResume: a paused batch starts no chunk it had not started
// (StartChunk hands it back unchanged), the sweep and the backlog leave
// those chunks out, a started chunk finishes; resume hands the chunks
// not started back, once.
func testPauseResume(t *testing.T, s store.Batches, opts *Options) {
	ctx := ctxT(t)
	created := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	b, chunks := newBatch("app1", "batch-pause", created, 2, 3, 2, 1)
	must(t, s.CreateBatch(ctx, b, chunks))
	_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: chunks[0].ChunkRef, Outcomes: outcomes(store.OutcomeSent, store.OutcomeSent), At: created})
	must(t, err)
	_, _, err = s.StartChunk(ctx, startParams(chunks[1].ChunkRef, created))
	must(t, err)

	at := created.Add(time.Minute)
	paused, err := s.PauseBatch(ctx, &store.PauseBatchParams{AppID: "app1", BatchID: b.ID, At: at})
	must(t, err)
	sameTime(t, "PausedAt", paused.PausedAt, at, opts)
	if st := paused.Status(at); st != store.StatusPaused || paused.ChunksDone != 1 || paused.Sent != 2 {
		t.Errorf("after pause: status %s, %+v; want paused with its counters", st, paused)
	}
	again, err := s.PauseBatch(ctx, &store.PauseBatchParams{AppID: "app1", BatchID: b.ID, At: at.Add(time.Minute)})
	must(t, err)
	sameTime(t, "PausedAt after a second pause", again.PausedAt, at, opts)

	// A worker's task for chunk 2 finds the batch paused: not started.
	gotB, c2, err := s.StartChunk(ctx, startParams(chunks[2].ChunkRef, at))
	must(t, err)
	if c2.Done || !c2.StartedAt.IsZero() || c2.Attempts != 0 || gotB.PausedAt.IsZero() {
		t.Errorf("StartChunk of a paused batch's chunk: chunk %+v, batch PausedAt %v; want it unchanged and the batch paused", c2, gotB.PausedAt)
	}
	// The chunk in flight goes on: a retry starts it again.
	_, c1, err := s.StartChunk(ctx, startParams(chunks[1].ChunkRef, at))
	must(t, err)
	if c1.Attempts != 2 {
		t.Errorf("a started chunk of a paused batch: attempts %d, want 2 (started again)", c1.Attempts)
	}
	late := at.Add(time.Hour)
	pending, err := s.PendingChunks(ctx, pendingParams(late, 10))
	must(t, err)
	if got := refsOf(pending); !slices.Equal(got, []store.ChunkRef{chunks[1].ChunkRef}) {
		t.Errorf("PendingChunks of a paused batch = %v, want only the started chunk whose lease ran out", got)
	}
	bl, err := s.Backlog(ctx, &store.BacklogParams{DueBefore: late})
	must(t, err)
	if len(bl) != 1 || bl[0].Chunks != 1 || bl[0].Recipients != 3 {
		t.Errorf("Backlog of a paused batch = %+v, want the started chunk only (1 chunk, 3 recipients)", bl)
	}
	listed, err := s.ListBatches(ctx, &store.ListBatchesParams{AppID: "app1", Now: late, Limit: 10, Statuses: []store.Status{store.StatusPaused}})
	must(t, err)
	if len(listed) != 1 || listed[0].ID != b.ID || listed[0].PausedAt.IsZero() {
		t.Errorf("ListBatches(paused) = %+v", listed)
	}
	running, err := s.ListBatches(ctx, &store.ListBatchesParams{AppID: "app1", Now: late, Limit: 10, Statuses: []store.Status{store.StatusRunning, store.StatusQueued}})
	must(t, err)
	if len(running) != 0 {
		t.Errorf("ListBatches(running, queued) lists a paused batch: %+v", running)
	}

	// Resume: the chunks not started come back, their NotBefore kept (not paced).
	resumed, rest, err := s.ResumeBatch(ctx, &store.ResumeBatchParams{AppID: "app1", BatchID: b.ID, At: late})
	must(t, err)
	if !resumed.PausedAt.IsZero() || resumed.Status(late) != store.StatusRunning {
		t.Errorf("after resume: %+v (status %s)", resumed, resumed.Status(late))
	}
	if got := refsOf(rest); !slices.Equal(got, []store.ChunkRef{chunks[2].ChunkRef, chunks[3].ChunkRef}) {
		t.Fatalf("ResumeBatch returned chunks %v, want 2 and 3", got)
	}
	for _, c := range rest {
		sameTime(t, "NotBefore of an unpaced batch's chunk after resume", c.NotBefore, created, opts)
		if c.Recipients != nil || c.Outcomes != nil {
			t.Errorf("ResumeBatch returned chunk %d with recipients or outcomes", c.No)
		}
	}
	_, rest, err = s.ResumeBatch(ctx, &store.ResumeBatchParams{AppID: "app1", BatchID: b.ID, At: late})
	must(t, err)
	if len(rest) != 0 {
		t.Errorf("resuming a batch that is not paused returned chunks %v", refsOf(rest))
	}
	_, c2, err = s.StartChunk(ctx, startParams(chunks[2].ChunkRef, late))
	must(t, err)
	if c2.StartedAt.IsZero() || c2.Attempts != 1 {
		t.Errorf("StartChunk after resume: %+v, want started", c2)
	}
	pending, err = s.PendingChunks(ctx, pendingParams(late, 10))
	must(t, err)
	if !slices.Contains(refsOf(pending), chunks[3].ChunkRef) {
		t.Errorf("PendingChunks after resume = %v, want chunk 3 due again", refsOf(pending))
	}
}

// testPauseConflicts: a finished, canceled or recalled batch is neither
// paused nor resumed (ErrConflict, nothing changed); a missing one is
// ErrNotFound; a paused batch can be canceled, which cancels its chunks
// not started.
func testPauseConflicts(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	now := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	fin, fc := newBatch("app1", "batch-pause-finished", now, 1)
	must(t, s.CreateBatch(ctx, fin, fc))
	_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: fc[0].ChunkRef, Outcomes: outcomes(store.OutcomeSent), At: now})
	must(t, err)
	_, err = s.PauseBatch(ctx, &store.PauseBatchParams{AppID: "app1", BatchID: fin.ID, At: now})
	wantErr(t, err, store.ErrConflict, "pausing a finished batch")
	_, _, err = s.ResumeBatch(ctx, &store.ResumeBatchParams{AppID: "app1", BatchID: fin.ID, At: now})
	wantErr(t, err, store.ErrConflict, "resuming a finished batch")
	got, err := s.GetBatch(ctx, "app1", fin.ID)
	must(t, err)
	if !got.PausedAt.IsZero() {
		t.Errorf("a refused pause paused the batch: %+v", got)
	}

	// Canceled while a chunk runs: not finished, but nothing to pause.
	cb, cc := newBatch("app1", "batch-pause-canceled", now, 1, 1)
	must(t, s.CreateBatch(ctx, cb, cc))
	_, _, err = s.StartChunk(ctx, startParams(cc[0].ChunkRef, now))
	must(t, err)
	_, err = s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: cb.ID, At: now})
	must(t, err)
	_, err = s.PauseBatch(ctx, &store.PauseBatchParams{AppID: "app1", BatchID: cb.ID, At: now})
	wantErr(t, err, store.ErrConflict, "pausing a canceled batch")

	_, err = s.PauseBatch(ctx, &store.PauseBatchParams{AppID: "app1", BatchID: "batch-nope", At: now})
	wantErr(t, err, store.ErrNotFound, "pausing a missing batch")
	_, _, err = s.ResumeBatch(ctx, &store.ResumeBatchParams{AppID: "app1", BatchID: "batch-nope", At: now})
	wantErr(t, err, store.ErrNotFound, "resuming a missing batch")
	_, err = s.PauseBatch(ctx, &store.PauseBatchParams{AppID: "app2", BatchID: fin.ID, At: now})
	wantErr(t, err, store.ErrNotFound, "pausing another app's batch")

	// A paused batch is canceled as any other; its chunks not started end canceled.
	pb, pc := newBatch("app1", "batch-pause-then-cancel", now, 2, 2)
	must(t, s.CreateBatch(ctx, pb, pc))
	_, err = s.PauseBatch(ctx, &store.PauseBatchParams{AppID: "app1", BatchID: pb.ID, At: now})
	must(t, err)
	after, err := s.CancelBatch(ctx, &store.CancelBatchParams{AppID: "app1", BatchID: pb.ID, At: now})
	must(t, err)
	if after.Canceled != 4 || after.ChunksDone != 2 || after.FinishedAt.IsZero() || after.Status(now) != store.StatusCanceled {
		t.Errorf("canceling a paused batch: %+v (status %s)", after, after.Status(now))
	}
	_, _, err = s.ResumeBatch(ctx, &store.ResumeBatchParams{AppID: "app1", BatchID: pb.ID, At: now})
	wantErr(t, err, store.ErrConflict, "resuming a canceled batch")
}

// testPausePacedBatch: resuming a paced batch moves its chunks not
// started later by the pause's length, so its pace goes on from where it
// stopped.
func testPausePacedBatch(t *testing.T, s store.Batches, opts *Options) {
	ctx := ctxT(t)
	created := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	b, chunks := newBatch("app1", "batch-pause-paced", created, 2, 2, 2)
	b.RatePerMinute = 2
	for i := range chunks {
		chunks[i].NotBefore = created.Add(time.Duration(i) * time.Minute)
	}
	must(t, s.CreateBatch(ctx, b, chunks))
	_, _, err := s.StartChunk(ctx, startParams(chunks[0].ChunkRef, created))
	must(t, err)
	pausedAt := created.Add(30 * time.Second)
	_, err = s.PauseBatch(ctx, &store.PauseBatchParams{AppID: "app1", BatchID: b.ID, At: pausedAt})
	must(t, err)
	resumeAt := pausedAt.Add(10 * time.Minute)
	_, rest, err := s.ResumeBatch(ctx, &store.ResumeBatchParams{AppID: "app1", BatchID: b.ID, At: resumeAt})
	must(t, err)
	if len(rest) != 2 {
		t.Fatalf("ResumeBatch returned %d chunks, want 2", len(rest))
	}
	for _, c := range rest {
		want := created.Add(time.Duration(c.No)*time.Minute + 10*time.Minute)
		sameTime(t, fmt.Sprintf("chunk %d's NotBefore returned", c.No), c.NotBefore, want, opts)
		stored, err := s.LoadChunk(ctx, c.ChunkRef)
		must(t, err)
		sameTime(t, fmt.Sprintf("chunk %d's NotBefore stored", c.No), stored.NotBefore, want, opts)
	}
	first, err := s.LoadChunk(ctx, chunks[0].ChunkRef)
	must(t, err)
	sameTime(t, "the started chunk's NotBefore", first.NotBefore, created, opts)
}

// testPauseRacesStart pauses while workers start chunks: every chunk
// ends either started (and left to finish) or not started, handed back
// with the batch paused.
func testPauseRacesStart(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	const n = 10
	now := time.Now().UTC()
	b, chunks := newBatch("app1", "batch-race-pause", now, slices.Repeat([]int{2}, n)...)
	must(t, s.CreateBatch(ctx, b, chunks))
	started := make([]bool, n)
	var wg sync.WaitGroup
	for no := range n {
		wg.Go(func() {
			gb, c, err := s.StartChunk(ctx, startParams(chunks[no].ChunkRef, now))
			if err != nil {
				t.Errorf("StartChunk: %v", err)
				return
			}
			started[no] = !c.StartedAt.IsZero()
			if !started[no] && gb.PausedAt.IsZero() {
				t.Errorf("chunk %d not started, yet its batch is not paused", no)
			}
		})
	}
	wg.Go(func() {
		if _, err := s.PauseBatch(ctx, &store.PauseBatchParams{AppID: "app1", BatchID: b.ID, At: now}); err != nil {
			t.Errorf("PauseBatch: %v", err)
		}
	})
	wg.Wait()
	for no := range n {
		c, err := s.LoadChunk(ctx, chunks[no].ChunkRef)
		must(t, err)
		if started[no] == c.StartedAt.IsZero() {
			t.Errorf("chunk %d: StartChunk said started=%v, the store has StartedAt %v", no, started[no], c.StartedAt)
		}
	}
}

// testReads: the first read of each recipient is kept, later ones (also
// within one call) skipped; reads of chunks that do not exist are
// skipped; counts and listings by batch and index range; app isolation;
// a pruned batch's reads go with it.
func testReads(t *testing.T, s store.Batches, opts *Options) {
	ctx := ctxT(t)
	now := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
	b, chunks := newBatch("app1", "batch-reads", now.Add(-time.Hour), 2, 2, 1)
	must(t, s.CreateBatch(ctx, b, chunks))
	other, oc := newBatch("app1", "batch-reads-other", now.Add(-time.Hour), 1)
	must(t, s.CreateBatch(ctx, other, oc))
	t1, t2 := now, now.Add(time.Minute)
	rd := func(batch string, chunk, idx int, at time.Time) store.Read {
		return store.Read{BatchID: batch, Chunk: chunk, Index: idx, At: at}
	}
	n, err := s.RecordReads(ctx, &store.RecordReadsParams{AppID: "app1", Reads: []store.Read{
		rd(b.ID, 0, 0, t1), rd(b.ID, 0, 1, t1), rd(b.ID, 0, 0, t2), rd(b.ID, 1, 3, t1),
		rd("batch-nope", 0, 0, t1), rd(b.ID, 7, 14, t1), rd(other.ID, 0, 0, t1),
	}})
	must(t, err)
	if n != 4 {
		t.Errorf("RecordReads recorded %d, want 4 (a repeat and two of chunks that do not exist skipped)", n)
	}
	n, err = s.RecordReads(ctx, &store.RecordReadsParams{AppID: "app1", Reads: []store.Read{rd(b.ID, 0, 0, t2), rd(b.ID, 2, 4, t2)}})
	must(t, err)
	if n != 1 {
		t.Errorf("the second RecordReads recorded %d, want 1 (index 0 was read before)", n)
	}
	n, err = s.RecordReads(ctx, &store.RecordReadsParams{AppID: "app2", Reads: []store.Read{rd(b.ID, 0, 1, t2)}})
	must(t, err)
	if n != 0 {
		t.Errorf("a read of another app's batch was recorded (%d)", n)
	}
	counts, err := s.ReadCounts(ctx, &store.ReadCountsParams{AppID: "app1", BatchIDs: []string{b.ID, other.ID, "batch-nope", "bad\x00id"}})
	must(t, err)
	if !reflect.DeepEqual(counts, map[string]int{b.ID: 4, other.ID: 1}) {
		t.Errorf("ReadCounts = %v, want %s: 4, %s: 1", counts, b.ID, other.ID)
	}
	counts, err = s.ReadCounts(ctx, &store.ReadCountsParams{AppID: "app2", BatchIDs: []string{b.ID}})
	must(t, err)
	if len(counts) != 0 {
		t.Errorf("another app's ReadCounts = %v, want none", counts)
	}
	list := func(from, to int) []store.Read {
		t.Helper()
		got, err := s.ListReads(ctx, &store.ListReadsParams{AppID: "app1", BatchID: b.ID, From: from, To: to})
		must(t, err)
		return got
	}
	all := list(0, 5)
	var idx []int
	for _, r := range all {
		idx = append(idx, r.Index)
	}
	if !slices.Equal(idx, []int{0, 1, 3, 4}) {
		t.Fatalf("ListReads(0, 5) indexes %v, want [0 1 3 4]", idx)
	}
	sameTime(t, "the first read of index 0", all[0].At, t1, opts)
	sameTime(t, "the read of index 4", all[3].At, t2, opts)
	if got := list(1, 4); len(got) != 2 || got[0].Index != 1 || got[1].Index != 3 || got[0].BatchID != b.ID {
		t.Errorf("ListReads(1, 4) = %+v, want indexes 1 and 3", got)
	}
	if got, err := s.ListReads(ctx, &store.ListReadsParams{AppID: "app2", BatchID: b.ID, From: 0, To: 5}); err != nil || len(got) != 0 {
		t.Errorf("another app's ListReads = %+v, %v", got, err)
	}

	// A pruned batch's reads go with it.
	for i, c := range chunks {
		_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: c.ChunkRef, Outcomes: outcomes(slices.Repeat([]store.OutcomeStatus{store.OutcomeSent}, len(c.Recipients))...), At: now.Add(-time.Duration(50-i) * time.Minute)})
		must(t, err)
	}
	must(t, s.MarkDoneNotified(ctx, &store.MarkDoneNotifiedParams{AppID: "app1", BatchID: b.ID, At: now}))
	if n, err := s.PruneBatches(ctx, &store.PruneBatchesParams{FinishedBefore: now, Limit: 10}); err != nil || n != 1 {
		t.Fatalf("PruneBatches = %d, %v; want the finished batch", n, err)
	}
	if got := list(0, 5); len(got) != 0 {
		t.Errorf("a pruned batch's reads: %+v", got)
	}
	counts, err = s.ReadCounts(ctx, &store.ReadCountsParams{AppID: "app1", BatchIDs: []string{b.ID, other.ID}})
	must(t, err)
	if !reflect.DeepEqual(counts, map[string]int{other.ID: 1}) {
		t.Errorf("ReadCounts after the prune = %v, want only %s: 1", counts, other.ID)
	}
}

// testReadsConcurrent: callers recording the same reads at once record
// each exactly once between them.
func testReadsConcurrent(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	now := time.Now().UTC()
	b, chunks := newBatch("app1", "batch-reads-race", now, 10, 10, 10, 10, 10)
	must(t, s.CreateBatch(ctx, b, chunks))
	var reads []store.Read
	for i := range 50 {
		reads = append(reads, store.Read{BatchID: b.ID, Chunk: i / 10, Index: i, At: now})
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			mine := slices.Clone(reads)
			if w%2 == 1 {
				slices.Reverse(mine)
			}
			n, err := s.RecordReads(ctx, &store.RecordReadsParams{AppID: "app1", Reads: mine})
			if err != nil {
				t.Errorf("RecordReads: %v", err)
			}
			total.Add(int64(n))
		})
	}
	wg.Wait()
	if total.Load() != 50 {
		t.Errorf("concurrent RecordReads recorded %d in all, want 50", total.Load())
	}
	counts, err := s.ReadCounts(ctx, &store.ReadCountsParams{AppID: "app1", BatchIDs: []string{b.ID}})
	must(t, err)
	if counts[b.ID] != 50 {
		t.Errorf("ReadCounts = %v, want 50", counts)
	}
}

// testPruneReads: a batch whose every one of 4,500 recipients read is
// pruned with all its reads.
func testPruneReads(t *testing.T, s store.Batches, _ *Options) {
	ctx := ctxT(t)
	now := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
	b, chunks := newBatch("app1", "batch-prune-reads", now.Add(-time.Hour), slices.Repeat([]int{500}, 9)...)
	must(t, s.CreateBatch(ctx, b, chunks))
	var reads []store.Read
	for _, c := range chunks {
		_, err := s.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: c.ChunkRef, Outcomes: outcomes(slices.Repeat([]store.OutcomeStatus{store.OutcomeSent}, 500)...), At: now.Add(-time.Minute)})
		must(t, err)
		for i := range 500 {
			reads = append(reads, store.Read{BatchID: b.ID, Chunk: c.No, Index: c.Start + i, At: now})
		}
	}
	n, err := s.RecordReads(ctx, &store.RecordReadsParams{AppID: "app1", Reads: reads})
	must(t, err)
	if n != 4500 {
		t.Fatalf("RecordReads recorded %d, want 4500", n)
	}
	must(t, s.MarkDoneNotified(ctx, &store.MarkDoneNotifiedParams{AppID: "app1", BatchID: b.ID, At: now}))
	if n, err := s.PruneBatches(ctx, &store.PruneBatchesParams{FinishedBefore: now, Limit: 10}); err != nil || n != 1 {
		t.Fatalf("PruneBatches = %d, %v", n, err)
	}
	left, err := s.ListReads(ctx, &store.ListReadsParams{AppID: "app1", BatchID: b.ID, From: 0, To: 4500})
	must(t, err)
	if len(left) != 0 {
		t.Errorf("%d reads of the pruned batch left", len(left))
	}
}
