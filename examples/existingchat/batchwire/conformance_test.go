package batchwire_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/chatbatch/chatbatch/examples/existingchat/batchwire"
	"github.com/chatbatch/chatbatch/examples/existingchat/chat"
	"github.com/chatbatch/chatbatch/examples/existingchat/internal/pgtest"
	"github.com/chatbatch/chatbatch/store"
	"github.com/chatbatch/chatbatch/store/storetest"
)

// The chat server's Directory and Messages pass chatbatch's conformance
// suite on real PostgreSQL.
//
// The suite speaks of several apps and of rooms named "room-1"; the chat
// server serves one app, and its rooms are conversations with UUIDs. So
// the harness below gives every app of a test its own schema (its own
// chat server) and renames rooms: a suite room name becomes a group
// conversation, and results come back under the suite's names. Messages
// the suite saves into rooms or from senders it never created (it does
// not seed them for Messages cases) get the conversation and the account
// created first, with the sender a member, as they would exist in a real
// chat server (where only members write in a conversation). Everything
// else goes to batchwire.Store unchanged.

func TestDirectory(t *testing.T) {
	pgtest.DSN(t)
	storetest.RunDirectory(t, func(t *testing.T) store.Directory { return newSuiteStore(t) }, nil)
}

func TestMessages(t *testing.T) {
	pgtest.DSN(t)
	storetest.RunMessages(t, func(t *testing.T) store.Messages { return newSuiteStore(t) }, nil)
}

type suiteStore struct {
	t    *testing.T
	mu   sync.Mutex
	apps map[string]*suiteApp
}

type suiteApp struct {
	db *chat.DB
	st *batchwire.Store

	mu     sync.Mutex
	byName map[string]string // suite room name → conversation ID
	byID   map[string]string
}

var (
	_ storetest.Inspector      = (*suiteStore)(nil)
	_ store.DirectRoomResolver = (*suiteStore)(nil)
	_ store.MessageReader      = (*suiteStore)(nil)
	_ store.MessageDeleter     = (*suiteStore)(nil)
)

func newSuiteStore(t *testing.T) *suiteStore {
	return &suiteStore{t: t, apps: map[string]*suiteApp{}}
}

// app returns app's chat server, made on first use.
func (s *suiteStore) app(app string) *suiteApp {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.apps[app]; ok {
		return a
	}
	db := pgtest.DB(s.t, 4)
	a := &suiteApp{db: db, st: batchwire.NewStore(db, app), byName: map[string]string{}, byID: map[string]string{}}
	s.apps[app] = a
	return a
}

// room maps a suite room name to a conversation ID; names it does not
// know (a direct conversation's UUID, a room that does not exist) pass
// through.
func (a *suiteApp) room(name string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if id, ok := a.byName[name]; ok {
		return id
	}
	return name
}

func (a *suiteApp) rooms(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = a.room(n)
	}
	return out
}

func (a *suiteApp) name(id string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n, ok := a.byID[id]; ok {
		return n
	}
	return id
}

// ensureRoom returns the conversation of a suite room name, creating an
// empty group conversation for a name never seen.
func (a *suiteApp) ensureRoom(ctx context.Context, name string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if id, ok := a.byName[name]; ok {
		return id, nil
	}
	if _, ok := chat.ParseConversationID(name); ok {
		return name, nil
	}
	id, err := a.db.CreateGroup(ctx, name, nil)
	if err != nil {
		return "", err
	}
	a.byName[name], a.byID[id] = id, name
	return id, nil
}

func (s *suiteStore) MissingUsers(ctx context.Context, app string, ids []string) ([]string, error) {
	return s.app(app).st.MissingUsers(ctx, app, ids)
}

func (s *suiteStore) MissingRooms(ctx context.Context, app string, ids []string) ([]string, error) {
	a := s.app(app)
	missing, err := a.st.MissingRooms(ctx, app, a.rooms(ids))
	for i, id := range missing {
		missing[i] = a.name(id)
	}
	return missing, err
}

func (s *suiteStore) DirectRoom(ctx context.Context, app, x, y string) (string, error) {
	return s.app(app).st.DirectRoom(ctx, app, x, y)
}

func (s *suiteStore) DirectRooms(ctx context.Context, app, x string, ys []string) ([]store.DirectRoomResult, error) {
	return s.app(app).st.DirectRooms(ctx, app, x, ys)
}

func (s *suiteStore) RoomMembers(ctx context.Context, app string, ids []string) (map[string][]string, error) {
	a := s.app(app)
	got, err := a.st.RoomMembers(ctx, app, a.rooms(ids))
	out := map[string][]string{}
	for id, m := range got {
		out[a.name(id)] = m
	}
	return out, err
}

func (s *suiteStore) SaveMessages(ctx context.Context, app string, msgs []store.Message) error {
	a := s.app(app)
	setup := context.WithoutCancel(ctx)
	msgs = slices.Clone(msgs)
	var senders []string
	for i := range msgs {
		id, err := a.ensureRoom(setup, msgs[i].RoomID)
		if err != nil {
			return err
		}
		msgs[i].RoomID = id
		senders = append(senders, msgs[i].Sender)
	}
	if err := s.AddUsers(setup, app, senders...); err != nil {
		return err
	}
	// Only members write in a conversation (SaveMessages keeps that rule).
	rooms := make([]string, len(msgs))
	for i, m := range msgs {
		rooms[i] = m.RoomID
	}
	if _, err := a.db.Pool.Exec(setup, `INSERT INTO conversation_members (conversation_id, account_id)
		SELECT v.conv, a.id FROM unnest($1::uuid[], $2::text[]) AS v(conv, sender) JOIN accounts a ON a.handle = v.sender
		ON CONFLICT DO NOTHING`, rooms, senders); err != nil {
		return err
	}
	return a.st.SaveMessages(ctx, app, msgs)
}

func (s *suiteStore) GetMessages(ctx context.Context, app string, ids []string) ([]store.Message, error) {
	a := s.app(app)
	msgs, err := a.st.GetMessages(ctx, app, ids)
	for i := range msgs {
		msgs[i].RoomID = a.name(msgs[i].RoomID)
	}
	return msgs, err
}

func (s *suiteStore) DeleteMessages(ctx context.Context, app string, ids []string) error {
	return s.app(app).st.DeleteMessages(ctx, app, ids)
}

// Inspector.

func (s *suiteStore) AddUsers(ctx context.Context, app string, ids ...string) error {
	_, err := s.app(app).db.Pool.Exec(ctx, `INSERT INTO accounts (handle) SELECT DISTINCT unnest($1::text[]) ON CONFLICT (handle) DO NOTHING`, ids)
	return err
}

func (s *suiteStore) AddRoom(ctx context.Context, app, name string, members ...string) error {
	a := s.app(app)
	id, err := a.ensureRoom(ctx, name)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, a.db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM conversation_members WHERE conversation_id = $1`, id); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO conversation_members (conversation_id, account_id)
			SELECT $1, id FROM accounts WHERE handle = ANY($2::text[])`, id, members)
		if err == nil && int(tag.RowsAffected()) != len(members) {
			err = fmt.Errorf("AddRoom %s: some of %q are not accounts", name, members)
		}
		return err
	})
}

func (s *suiteStore) UserRooms(ctx context.Context, app, user string) ([]string, error) {
	a := s.app(app)
	rows, err := a.db.Pool.Query(ctx, `SELECT m.conversation_id::text FROM conversation_members m
		JOIN accounts a ON a.id = m.account_id WHERE a.handle = $1`, user)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	for i, id := range ids {
		ids[i] = a.name(id)
	}
	return ids, err
}

// RoomMessages reads the room with the chat server's own history query.
func (s *suiteStore) RoomMessages(ctx context.Context, app, room string, limit int) ([]store.Message, error) {
	a := s.app(app)
	id := a.room(room)
	if _, ok := chat.ParseConversationID(id); !ok {
		return nil, nil
	}
	cms, err := a.db.History(ctx, id, limit)
	if err != nil {
		return nil, err
	}
	out := make([]store.Message, len(cms))
	for i, m := range cms {
		out[i] = batchwire.FromChat(app, m)
		out[i].RoomID = room
	}
	return out, nil
}
