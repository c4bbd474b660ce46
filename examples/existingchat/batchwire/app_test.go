package batchwire_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/examples/existingchat/batchwire"
	"github.com/chatbatch/chatbatch/examples/existingchat/internal/pgtest"
	"github.com/chatbatch/chatbatch/store"
)

// The chat server serves one app: another app sees no users, rooms or
// messages and cannot write any (the suite's app-isolation cases run on
// one schema per app, see conformance_test.go).
func TestOtherAppSeesNothing(t *testing.T) {
	db := pgtest.DB(t, 2)
	ctx := t.Context()
	st := batchwire.NewStore(db, "chat")
	if _, err := db.CreateAccount(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateAccount(ctx, "system"); err != nil {
		t.Fatal(err)
	}
	room, err := st.DirectRoom(ctx, "chat", "system", "alice")
	if err != nil {
		t.Fatal(err)
	}
	msg := store.Message{ID: "b-0", AppID: "chat", RoomID: room, Sender: "system", Type: "text", Text: "hi", CreatedAt: time.Now().UTC()}
	if err := st.SaveMessages(ctx, "chat", []store.Message{msg}); err != nil {
		t.Fatal(err)
	}
	if m, err := st.MissingUsers(ctx, "other", []string{"alice"}); err != nil || !slices.Equal(m, []string{"alice"}) {
		t.Errorf("MissingUsers in another app = %q, %v", m, err)
	}
	if m, err := st.MissingRooms(ctx, "other", []string{room}); err != nil || !slices.Equal(m, []string{room}) {
		t.Errorf("MissingRooms in another app = %q, %v", m, err)
	}
	if m, err := st.RoomMembers(ctx, "other", []string{room}); err != nil || len(m) != 0 {
		t.Errorf("RoomMembers in another app = %v, %v", m, err)
	}
	if _, err := st.DirectRoom(ctx, "other", "system", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DirectRoom in another app: %v", err)
	}
	if rs, err := st.DirectRooms(ctx, "other", "system", []string{"alice"}); err != nil || !errors.Is(rs[0].Err, store.ErrNotFound) {
		t.Errorf("DirectRooms in another app: %+v, %v", rs, err)
	}
	if ms, err := st.GetMessages(ctx, "other", []string{"b-0"}); err != nil || len(ms) != 0 {
		t.Errorf("GetMessages in another app = %+v, %v", ms, err)
	}
	msg.AppID = "other"
	if err := st.SaveMessages(ctx, "other", []store.Message{msg}); err == nil {
		t.Error("SaveMessages into another app succeeded")
	}
	if err := st.DeleteMessages(ctx, "other", []string{"b-0"}); err != nil {
		t.Fatal(err)
	}
	if ms, err := st.GetMessages(ctx, "chat", []string{"b-0"}); err != nil || len(ms) != 1 || ms[0].Text != "hi" || ms[0].Receiver != "" {
		t.Errorf("the app's message after another app's delete: %+v, %v", ms, err)
	}
}
