package integration_test

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/internal/seed"
	"github.com/chatbatch/chatbatch/store"
)

// The three example requests of the API description.
const (
	seedBroadcast = seed.Broadcast
	seedTemplate  = seed.Template
	seedRooms     = seed.Rooms
)

// TestSeedExamples sends the three examples through the handler and lets
// a real asynq server (on miniredis, and on Redis when
// CHATBATCH_TEST_REDIS is set) process them into memstore and a Recorder.
func TestSeedExamples(t *testing.T) {
	t.Parallel()
	redisBackends(t, func(t *testing.T, redis asynq.RedisConnOpt) {
		e := bt.NewQueuedEnv(t, redis, nil)
		ctx := t.Context()
		direct := func(u string) string { return store.DirectRoomID("system", u) }

		t.Run("broadcast", func(t *testing.T) {
			res := bt.Accepted(t, e.Post(t, bt.AdminKey, seedBroadcast))
			if res.Count != 3 || !strings.HasPrefix(res.BatchID, "batch-") {
				t.Errorf("result = %+v, want count 3 and a batch- ID", res)
			}
			st := e.WaitFinished(t, bt.AdminKey, res.BatchID)
			if st.Status != "completed" || st.Sent != 3 || st.Failed != 0 || st.Pending != 0 || st.Count != 3 {
				t.Errorf("status = %+v, want completed with 3 sent", st)
			}
			for _, u := range []string{"user-a", "user-b", "user-c"} {
				msgs := bt.RoomMessages(t, e.St, bt.TestApp, direct(u))
				if len(msgs) != 1 || msgs[0].Text != "系統公告:明天將進行例行維護" || msgs[0].Sender != "system" || msgs[0].Receiver != u || msgs[0].Type != "text" {
					t.Errorf("%s's one-on-one room holds %+v", u, msgs)
				}
			}
			// push: true notifies each receiver once, with the badge.
			var pushed []string
			for _, n := range e.Rec.Notifications() {
				if strings.HasPrefix(n.MessageID, res.BatchID) {
					pushed = append(pushed, n.UserID)
					if !n.Badge || n.Text != "系統公告:明天將進行例行維護" {
						t.Errorf("notification %+v", n)
					}
				}
			}
			slices.Sort(pushed)
			if !slices.Equal(pushed, []string{"user-a", "user-b", "user-c"}) {
				t.Errorf("pushed to %q, want each receiver once", pushed)
			}
		})

		t.Run("template", func(t *testing.T) {
			res := bt.Accepted(t, e.Post(t, bt.AdminKey, seedTemplate))
			if res.Count != 2 {
				t.Errorf("count = %d, want 2", res.Count)
			}
			e.WaitFinished(t, bt.AdminKey, res.BatchID)
			want := map[string]string{"user-a": "Hi Alice,您的訂單 ORD-001 已出貨!", "user-b": "Hi Bob,您的訂單 ORD-002 已出貨!"}
			for u, text := range want {
				var got []string
				for _, m := range bt.RoomMessages(t, e.St, bt.TestApp, direct(u)) {
					if m.BatchID == res.BatchID {
						got = append(got, m.Text)
					}
				}
				if !slices.Equal(got, []string{text}) {
					t.Errorf("%s received %q, want %q", u, got, text)
				}
			}
		})

		t.Run("rooms", func(t *testing.T) {
			before := len(e.Rec.Notifications())
			res := bt.Accepted(t, e.Post(t, bt.AdminKey, seedRooms))
			st := e.WaitFinished(t, bt.AdminKey, res.BatchID)
			if st.Sent != 3 {
				t.Errorf("status = %+v", st)
			}
			for _, room := range []string{"room-001", "room-002", "room-003"} {
				msgs := bt.RoomMessages(t, e.St, bt.TestApp, room)
				if len(msgs) != 1 || msgs[0].Text != "活動提醒:明天 14:00 開始" || msgs[0].Receiver != "" {
					t.Errorf("%s holds %+v", room, msgs)
				}
			}
			// push defaults to false.
			if n := len(e.Rec.Notifications()); n != before {
				t.Errorf("a request without push sent %d notifications", n-before)
			}
		})

		t.Run("room wins over receiver", func(t *testing.T) {
			res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"messageType":"text","message":"to $who$","paras":[
				{"receiver":"user-d","room":"room-003","$who$":"the room"},
				{"receiver":"user-d","$who$":"user d"}]}`))
			e.WaitFinished(t, bt.AdminKey, res.BatchID)
			var inRoom []string
			for _, m := range bt.RoomMessages(t, e.St, bt.TestApp, "room-003") {
				if m.BatchID == res.BatchID {
					inRoom = append(inRoom, m.Text)
				}
			}
			if !slices.Equal(inRoom, []string{"to the room"}) {
				t.Errorf("room-003 got %q, want the para with both receiver and room", inRoom)
			}
			dm := bt.RoomMessages(t, e.St, bt.TestApp, direct("user-d"))
			if len(dm) != 1 || dm[0].Text != "to user d" {
				t.Errorf("user-d's one-on-one room holds %+v, want only the receiver-only para", dm)
			}
		})

		// Every delivered message was stored, and nothing twice.
		ids := map[string]bool{}
		for _, m := range e.Rec.Messages() {
			if ids[m.ID] {
				t.Errorf("message %s delivered twice", m.ID)
			}
			ids[m.ID] = true
		}
		if len(ids) != 10 {
			t.Errorf("%d messages delivered, want 10", len(ids))
		}
		_ = ctx
	})
}

// TestLargeBatchChunks runs a batch of several chunks through asynq.
func TestLargeBatchChunks(t *testing.T) {
	t.Parallel()
	redisBackends(t, func(t *testing.T, redis asynq.RedisConnOpt) {
		e := bt.NewQueuedEnv(t, redis, func(c *batch.Config) { c.ChunkSize = 40; c.Concurrency = 4 })
		users := make([]string, 250)
		paras := make([]map[string]string, len(users))
		for i := range users {
			users[i] = "bulk-" + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + "-" + strconv.Itoa(i)
			paras[i] = map[string]string{"receiver": users[i], "$n$": strconv.Itoa(i)}
		}
		bt.Must(t, e.St.AddUsers(t.Context(), bt.TestApp, users...))
		res := bt.Accepted(t, e.Post(t, bt.UserKey, bt.JSONBody(t, map[string]any{"message": "#$n$", "messageType": "text", "paras": paras})))
		st := e.WaitFinished(t, bt.UserKey, res.BatchID)
		if st.Status != "completed" || st.Sent != 250 || st.Count != 250 {
			t.Fatalf("status %+v", st)
		}
		msgs := e.Rec.Messages()
		if len(msgs) != 250 {
			t.Fatalf("%d messages delivered, want 250", len(msgs))
		}
		for _, m := range msgs {
			if m.Text != "#"+strconv.Itoa(m.Index) || m.ID != res.BatchID+"-"+strconv.Itoa(m.Index) || m.Receiver != users[m.Index] {
				t.Errorf("message %+v", m)
			}
		}
		if r := e.Do(t, http.MethodGet, "/messages/batch/"+res.BatchID, bt.OtherKey, "", nil); r.Status != 404 {
			t.Errorf("another app read the batch: %d", r.Status)
		}
	})
}
