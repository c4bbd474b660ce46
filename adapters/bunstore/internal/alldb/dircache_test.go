package alldb_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/adapters/bunstore/bunopen"
	"github.com/chatbatch/chatbatch/internal/testenv"
	"github.com/chatbatch/chatbatch/store"
)

// TestDirectoryCacheFollowsRemovals warms the directory cache (a pair's
// room, a user, a room) and then removes what it knows, each time in
// another way: the host's own SQL (DELETE, UPDATE of a key, TRUNCATE),
// and this store's methods called through a second Store on the same
// tables, as another process would. Every removal must be seen by the
// next look-up, as if there were no cache.
func TestDirectoryCacheFollowsRemovals(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db, nil)
		other, err := bunstore.New(db, &bunstore.Options{TablePrefix: s.TablePrefix()})
		if err != nil {
			t.Fatal(err)
		}
		const app, sys = "app", "sys"
		users := []string{"u-del", "u-member", "u-rekey", "u-method", "u-trunc", "u-room", "u-cascade"}
		must(t, s.AddUsers(ctx, app, append(users, sys)...))
		must(t, s.AddRoom(ctx, app, "g-del", "u-del"))
		must(t, s.AddRoom(ctx, app, "g-method", "u-del"))
		room := func(u string) string { return s.DirectRoomID(sys, u) }
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.ExecContext(ctx, q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		// warm asks twice, so that the second answer can come from the
		// cache, and checks both say the pair is fine.
		warm := func(u string) {
			t.Helper()
			for range 2 {
				rs, err := s.DirectRooms(ctx, app, sys, []string{u})
				if err != nil || rs[0].Err != nil || rs[0].Room != room(u) {
					t.Fatalf("DirectRooms(%s) before the removal = %+v, %v", u, rs, err)
				}
				if missing, err := s.MissingUsers(ctx, app, []string{u}); err != nil || len(missing) != 0 {
					t.Fatalf("MissingUsers(%s) before the removal = %q, %v", u, missing, err)
				}
			}
		}
		refused := func(what, u string, want error) {
			t.Helper()
			rs, err := s.DirectRooms(ctx, app, sys, []string{u})
			if err != nil || !errors.Is(rs[0].Err, want) {
				t.Errorf("after %s: DirectRooms(%s) = %+v, %v; want %v", what, u, rs, err, want)
			}
		}
		userGone := func(what, u string) {
			t.Helper()
			refused(what, u, store.ErrNotFound)
			if missing, err := s.MissingUsers(ctx, app, []string{u}); err != nil || !slices.Equal(missing, []string{u}) {
				t.Errorf("after %s: MissingUsers(%s) = %q, %v; want it missing", what, u, missing, err)
			}
		}

		warm("u-del")
		exec("DELETE FROM "+s.TablePrefix()+"users WHERE app_id = ? AND id = ?", app, "u-del")
		userGone("the host's DELETE of the user", "u-del")

		warm("u-member")
		exec("DELETE FROM "+s.TablePrefix()+"room_members WHERE app_id = ? AND room_id = ? AND user_id = ?", app, room("u-member"), "u-member")
		refused("the host's DELETE of a membership", "u-member", store.ErrConflict)

		warm("u-rekey")
		exec("UPDATE "+s.TablePrefix()+"users SET id = ? WHERE app_id = ? AND id = ?", "u-rekeyed", app, "u-rekey")
		userGone("the host's UPDATE of the user's ID", "u-rekey")

		// The room's deletion takes its members by cascade, which fires
		// no trigger on MySQL: the room's own deletion must count. The
		// next look-up finds the pair without a room and makes it again.
		warm("u-cascade")
		exec("DELETE FROM "+s.TablePrefix()+"rooms WHERE app_id = ? AND id = ?", app, room("u-cascade"))
		if rs, err := s.DirectRooms(ctx, app, sys, []string{"u-cascade"}); err != nil || rs[0].Err != nil {
			t.Errorf("after the host's DELETE of the pair's room: DirectRooms = %+v, %v", rs, err)
		}
		if m, err := s.RoomMembers(ctx, app, []string{room("u-cascade")}); err != nil || len(m[room("u-cascade")]) != 2 {
			t.Errorf("after the host's DELETE of the pair's room and a send: its members = %q, %v; want the room made again with both", m, err)
		}

		warm("u-method")
		must(t, other.DeleteUser(ctx, app, "u-method"))
		userGone("DeleteUser by another Store", "u-method")

		warm("u-room")
		must(t, other.AddRoom(ctx, app, room("u-room"), sys, "someone-else"))
		refused("AddRoom replacing the room's members, by another Store", "u-room", store.ErrConflict)

		for _, g := range []string{"g-del", "g-method"} {
			for range 2 {
				if missing, err := s.MissingRooms(ctx, app, []string{g}); err != nil || len(missing) != 0 {
					t.Fatalf("MissingRooms(%s) before the removal = %q, %v", g, missing, err)
				}
			}
		}
		exec("DELETE FROM "+s.TablePrefix()+"room_members WHERE app_id = ? AND room_id = ?", app, "g-del")
		exec("DELETE FROM "+s.TablePrefix()+"rooms WHERE app_id = ? AND id = ?", app, "g-del")
		must(t, other.DeleteRoom(ctx, app, "g-method"))
		if missing, err := s.MissingRooms(ctx, app, []string{"g-del", "g-method"}); err != nil || !slices.Equal(missing, []string{"g-del", "g-method"}) {
			t.Errorf("after the rooms' removal: MissingRooms = %q, %v; want both", missing, err)
		}

		warm("u-trunc")
		if db.Dialect().Name() == dialect.PG {
			exec("TRUNCATE " + s.TablePrefix() + "users")
		} else {
			exec("DELETE FROM " + s.TablePrefix() + "users")
		}
		userGone("the host's TRUNCATE of the users", "u-trunc")
	})
}

// TestDirectoryCacheAnswers shows that the cache, not a look-up, answers
// for what it knows: with the triggers that count removals switched off,
// a removed user is still believed by a store with the cache and not by
// one without it (DirectoryCache < 0).
func TestDirectoryCacheAnswers(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		cached := newStore(t, db, nil)
		uncached, err := bunstore.New(db, &bunstore.Options{TablePrefix: cached.TablePrefix(), DirectoryCache: -1})
		if err != nil {
			t.Fatal(err)
		}
		const app, sys = "app", "sys"
		must(t, cached.AddUsers(ctx, app, sys, "u"))
		for _, s := range []*bunstore.Store{cached, uncached} {
			if rs, err := s.DirectRooms(ctx, app, sys, []string{"u"}); err != nil || rs[0].Err != nil {
				t.Fatalf("DirectRooms = %+v, %v", rs, err)
			}
		}
		kind := db.Dialect().Name()
		// A removal the triggers do not see, on one connection (released
		// before the look-ups: an in-memory SQLite pool has only one).
		removeUnseen := func() error {
			conn, err := db.Conn(ctx)
			if err != nil {
				return err
			}
			defer conn.Close()
			users := cached.TablePrefix() + "users"
			switch kind {
			case dialect.PG:
				_, err = conn.ExecContext(ctx, "SET session_replication_role = replica")
				defer conn.ExecContext(context.WithoutCancel(ctx), "RESET session_replication_role")
			default:
				_, err = conn.ExecContext(ctx, "DROP TRIGGER "+users+"_deleted")
			}
			if err != nil {
				return err
			}
			_, err = conn.ExecContext(ctx, "DELETE FROM "+users+" WHERE app_id = ? AND id = ?", app, "u")
			return err
		}
		must(t, removeUnseen())
		rs, err := uncached.DirectRooms(ctx, app, sys, []string{"u"})
		if err != nil || !errors.Is(rs[0].Err, store.ErrNotFound) {
			t.Errorf("without the cache: DirectRooms = %+v, %v; want ErrNotFound", rs, err)
		}
		rs, err = cached.DirectRooms(ctx, app, sys, []string{"u"})
		if err != nil || rs[0].Err != nil {
			t.Errorf("with the cache: DirectRooms = %+v, %v; want the remembered room", rs, err)
		}
		cached.ForgetDirectory()
		if rs, err := cached.DirectRooms(ctx, app, sys, []string{"u"}); err != nil || !errors.Is(rs[0].Err, store.ErrNotFound) {
			t.Errorf("after ForgetDirectory: DirectRooms = %+v, %v; want ErrNotFound", rs, err)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDirectoryCountsOnlyRemovals reads the count the triggers keep:
// adding users, rooms and members leaves it, and so does re-adding a room
// with the members it has (AddRoom deletes only the members no longer
// listed); dropping a member, a user or a room moves it, for that app
// only.
func TestDirectoryCountsOnlyRemovals(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db, nil)
		count := func(app string) int64 {
			t.Helper()
			var n int64
			if err := db.QueryRowContext(ctx, "SELECT COALESCE(SUM(epoch), 0) FROM "+s.TablePrefix()+"directory_epochs WHERE app_id = ?", app).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		// step checks that what moved the app's count (by any amount: a
		// statement's or a row's removals count, as the database fires
		// triggers) or left it.
		last := map[string]int64{}
		step := func(what string, err error, app string, moves bool) {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			got := count(app)
			if moved := got > last[app]; moved != moves || got < last[app] {
				t.Errorf("after %s: count of %s %d → %d; want it moved: %v", what, app, last[app], got, moves)
			}
			last[app] = got
		}
		step("AddUsers", s.AddUsers(ctx, "app", "a", "b", "c"), "app", false)
		// On MySQL an existing row's INSERT … ON DUPLICATE KEY UPDATE
		// (AddUsers) fires the UPDATE trigger: only a changed key may
		// count there. (PostgreSQL's and SQLite's count every UPDATE.)
		step("AddUsers of existing users", s.AddUsers(ctx, "app", "a", "b"), "app", false)
		if db.Dialect().Name() == dialect.MySQL {
			_, err := db.ExecContext(ctx, "UPDATE "+s.TablePrefix()+"users SET id = id WHERE app_id = ?", "app")
			step("an UPDATE that leaves the keys", err, "app", false)
		}
		step("AddRoom", s.AddRoom(ctx, "app", "r", "a", "b"), "app", false)
		_, err := s.DirectRooms(ctx, "app", "a", []string{"b", "c"})
		step("DirectRooms creating rooms", err, "app", false)
		step("AddRoom with the same members", s.AddRoom(ctx, "app", "r", "b", "a"), "app", false)
		step("AddRoom with one more member", s.AddRoom(ctx, "app", "r", "a", "b", "c"), "app", false)
		step("AddRoom dropping a member", s.AddRoom(ctx, "app", "r", "a", "b"), "app", true)
		step("DeleteUser", s.DeleteUser(ctx, "app", "c"), "app", true)
		step("DeleteRoom", s.DeleteRoom(ctx, "app", "r"), "app", true)
		step("another app's users added", s.AddUsers(ctx, "other", "x"), "other", false)
		step("another app's DeleteUser", s.DeleteUser(ctx, "other", "x"), "other", true)
		step("another app's DeleteUser, seen from app", nil, "app", false)
		members, err := s.RoomMembers(ctx, "app", []string{s.DirectRoomID("a", "b")})
		if err != nil || len(members[s.DirectRoomID("a", "b")]) != 2 {
			t.Errorf("the pair's room after all that: %v, %v", members, err)
		}
	})
}

// TestMySQLTriggersRefused migrates as a user the server refuses CREATE
// TRIGGER (as a managed server with binary logging refuses it to all but
// SUPER): Migrate succeeds without the triggers, the store keeps no
// directory cache and still answers every look-up. A later Migrate by a
// user who may create them adds them, and the cache is on.
func TestMySQLTriggersRefused(t *testing.T) {
	dsn := os.Getenv(envMySQL)
	if dsn == "" {
		testenv.Skip(t, "set %s=… to run against MySQL/MariaDB", envMySQL)
	}
	ctx := t.Context()
	admin := backends[len(backends)-1].get(t)
	native, _ := mysqlForms(dsn)
	_, hostDB, _ := strings.Cut(native, "@")
	dbName, _, _ := strings.Cut(hostDB[strings.Index(hostDB, ")/")+2:], "?")
	user := "cb" + strings.TrimSuffix(randomPrefix(), "_")
	exec := func(q string) {
		t.Helper()
		if _, err := admin.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// No password: MySQL 8's caching_sha2_password would want TLS or the
	// server's RSA key for one over plain TCP.
	exec("CREATE USER '" + user + "'@'%'")
	t.Cleanup(func() { admin.ExecContext(context.Background(), "DROP USER '"+user+"'@'%'") })
	exec("GRANT ALL PRIVILEGES ON `" + dbName + "`.* TO '" + user + "'@'%'")
	exec("REVOKE TRIGGER ON `" + dbName + "`.* FROM '" + user + "'@'%'")

	db, err := bunopen.Open(ctx, user+"@"+hostDB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() }) // after newStore's Drop
	s := newStore(t, db, nil)        // Migrate as the user without TRIGGER
	if on, err := s.CachesDirectory(ctx); err != nil || on {
		t.Errorf("migrated without the TRIGGER privilege: CachesDirectory = %v, %v; want false", on, err)
	}
	var triggers int
	if err := admin.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE LIKE ?", s.TablePrefix()+"%").Scan(&triggers); err != nil || triggers != 0 {
		t.Fatalf("triggers after the refused migration: %d, %v; want none", triggers, err)
	}
	var version int
	if err := db.QueryRowContext(ctx, "SELECT MAX(version) FROM "+s.TablePrefix()+"schema_migrations").Scan(&version); err != nil || version != bunstore.SchemaVersion {
		t.Errorf("schema version after the refused triggers: %d, %v; want %d", version, err, bunstore.SchemaVersion)
	}
	// Without the cache every answer is a look-up, and right.
	const app = "app"
	must(t, s.AddUsers(ctx, app, "sys", "u"))
	for range 2 {
		if rs, err := s.DirectRooms(ctx, app, "sys", []string{"u"}); err != nil || rs[0].Err != nil {
			t.Fatalf("DirectRooms without the cache = %+v, %v", rs, err)
		}
	}
	must(t, s.DeleteUser(ctx, app, "u"))
	if rs, err := s.DirectRooms(ctx, app, "sys", []string{"u"}); err != nil || !errors.Is(rs[0].Err, store.ErrNotFound) {
		t.Errorf("after DeleteUser, without the cache: DirectRooms = %+v, %v; want ErrNotFound", rs, err)
	}

	// The administrator's Migrate adds the refused triggers.
	s2, err := bunstore.New(admin, &bunstore.Options{TablePrefix: s.TablePrefix()})
	if err != nil {
		t.Fatal(err)
	}
	must(t, s2.Migrate(ctx))
	if on, err := s2.CachesDirectory(ctx); err != nil || !on {
		t.Errorf("after Migrate by a user who may create triggers: CachesDirectory = %v, %v; want true", on, err)
	}
	if err := admin.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE LIKE ?", s.TablePrefix()+"%").Scan(&triggers); err != nil || triggers != 6 {
		t.Errorf("triggers after the administrator's Migrate: %d, %v; want 6", triggers, err)
	}
}

// TestDirectRoomsAfterAccept calls DirectRooms as the worker does after a
// request was accepted: MissingUsers has just seen the sender and the
// receivers, so the store knows them but not their pairs. (On PostgreSQL
// that is when DirectRooms first asks which pairs' rooms are complete, in
// a statement of its own.) Only a room with both of the pair as members
// may be answered: a room under the pair's ID with one of them and
// someone else, or with one of them alone, is another pair's
// (ErrConflict); a pair without a room gets one.
func TestDirectRoomsAfterAccept(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		// Also after a call whose pairs were all new, which turns the
		// PostgreSQL probe away for the next calls: the rounds alone
		// must answer the same.
		for name, afterNewPairs := range map[string]bool{"first": false, "after-new-pairs": true} {
			t.Run(name, func(t *testing.T) { testDirectRoomsAfterAccept(t, db, afterNewPairs) })
		}
	})
}

func testDirectRoomsAfterAccept(t *testing.T, db *bun.DB, afterNewPairs bool) {
	{
		ctx := t.Context()
		s := newStore(t, db, nil)
		// The rooms that exist are made through a second Store, so that
		// s has not seen them.
		other, err := bunstore.New(db, &bunstore.Options{TablePrefix: s.TablePrefix(), DirectoryCache: -1})
		if err != nil {
			t.Fatal(err)
		}
		const app, sys = "app", "sys"
		receivers := []string{"u-exists", "u-new", "u-other", "u-half", sys, "u-case", "U-CASE", "u-exists"}
		must(t, s.AddUsers(ctx, app, receivers...))
		for _, u := range []string{"u-exists", sys, "u-case"} {
			if _, err := other.DirectRoom(ctx, app, sys, u); err != nil {
				t.Fatal(err)
			}
		}
		must(t, other.AddRoom(ctx, app, s.DirectRoomID(sys, "u-other"), sys, "someone-else"))
		must(t, other.AddRoom(ctx, app, s.DirectRoomID(sys, "u-half"), "u-half"))
		if afterNewPairs {
			fresh := []string{"f-0", "f-1", "f-2", "f-3"}
			must(t, s.AddUsers(ctx, app, fresh...))
			if missing, err := s.MissingUsers(ctx, app, append([]string{sys}, fresh...)); err != nil || len(missing) != 0 {
				t.Fatalf("MissingUsers = %q, %v", missing, err)
			}
			if rs, err := s.DirectRooms(ctx, app, sys, fresh); err != nil || rs[0].Err != nil {
				t.Fatalf("DirectRooms of new pairs = %+v, %v", rs, err)
			}
		}
		if missing, err := s.MissingUsers(ctx, app, append([]string{sys}, receivers...)); err != nil || len(missing) != 0 {
			t.Fatalf("MissingUsers = %q, %v", missing, err)
		}
		rs, err := s.DirectRooms(ctx, app, sys, receivers)
		if err != nil {
			t.Fatal(err)
		}
		for i, u := range receivers {
			var want error
			switch u {
			case "u-other", "u-half", "U-CASE":
				want = store.ErrConflict
			}
			switch r := rs[i]; {
			case want != nil && !errors.Is(r.Err, want):
				t.Errorf("DirectRooms: %s → %+v; want %v", u, r, want)
			case want == nil && (r.Err != nil || r.Room != s.DirectRoomID(sys, u)):
				t.Errorf("DirectRooms: %s → %+v; want room %s", u, r, s.DirectRoomID(sys, u))
			}
		}
		m, err := s.RoomMembers(ctx, app, []string{s.DirectRoomID(sys, "u-new"), s.DirectRoomID(sys, "u-half")})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(m[s.DirectRoomID(sys, "u-new")])
		if got := m[s.DirectRoomID(sys, "u-new")]; !slices.Equal(got, []string{sys, "u-new"}) {
			t.Errorf("the new pair's room has members %q; want both", got)
		}
		if got := m[s.DirectRoomID(sys, "u-half")]; !slices.Equal(got, []string{"u-half"}) {
			t.Errorf("the conflicting room's members became %q; want it left alone", got)
		}
	}
}

// TestDirectRoomsLearnsSender: a DirectRooms call that settles its pairs
// records the sender as a user too. MissingUsers records it when a
// request is accepted, but newer facts can push it out of the cache, and
// without it every later chunk of the sender skipped the PostgreSQL
// probe for the round statement (docs/benchmarks.md). The users table is
// then renamed away: MissingUsers must answer for the sender without it,
// and a user the store has not seen must still be looked up (an error).
func TestDirectRoomsLearnsSender(t *testing.T) {
	forEach(t, func(t *testing.T, _ *backend, db *bun.DB) {
		ctx := t.Context()
		s := newStore(t, db, nil)
		const app, sys = "app", "sys"
		receivers := []string{"u-1", "u-2", "u-3"}
		must(t, s.AddUsers(ctx, app, append([]string{sys, "u-unseen"}, receivers...)...))
		rs, err := s.DirectRooms(ctx, app, sys, receivers)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rs {
			if r.Err != nil || r.Room != s.DirectRoomID(sys, receivers[i]) {
				t.Fatalf("DirectRooms: %s → %+v", receivers[i], r)
			}
		}
		users, hidden := s.TablePrefix()+"users", s.TablePrefix()+"users_hidden"
		if _, err := db.ExecContext(ctx, "ALTER TABLE "+users+" RENAME TO "+hidden); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, err := db.ExecContext(context.Background(), "ALTER TABLE "+hidden+" RENAME TO "+users); err != nil {
				t.Error(err)
			}
		})
		if missing, err := s.MissingUsers(ctx, app, []string{sys}); err != nil || len(missing) != 0 {
			t.Errorf("MissingUsers(the sender) after DirectRooms = %q, %v; want none, answered from the cache", missing, err)
		}
		if _, err := s.MissingUsers(ctx, app, []string{"u-unseen"}); err == nil {
			t.Error("MissingUsers(a user not seen) without the users table: no error, want the look-up's")
		}
	})
}
