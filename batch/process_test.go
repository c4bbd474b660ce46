package batch_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/internal/seed"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

func TestRerunStoresNothingTwice(t *testing.T) {
	t.Parallel()
	var fs *bt.FailingStore
	e := bt.NewEnv(t, func(c *batch.Config) {
		// The first completion fails, as if the worker died after
		// delivering: the task is retried and does everything again.
		fs = &bt.FailingStore{Store: c.Store, Fail: map[string]int{"CompleteChunk": 1}}
		c.Store = fs
	})
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, seed.Template))
	task := e.Enq.All()[0].Task
	if err := e.Svc.Processor().ProcessTask(t.Context(), task); err == nil {
		t.Fatal("the first attempt did not report the failed completion")
	}
	for range 2 { // the retry, then a duplicate task
		bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), task))
	}
	for _, u := range []string{"user-a", "user-b"} {
		msgs := bt.RoomMessages(t, e.St, bt.TestApp, store.DirectRoomID("system", u))
		if len(msgs) != 1 {
			t.Errorf("%s's room holds %d messages after a re-run, want 1", u, len(msgs))
		}
	}
	// Delivery is at-least-once with stable IDs: two deliveries, same IDs.
	delivered := e.Rec.Messages()
	if len(delivered) != 4 || delivered[0].ID != delivered[2].ID || delivered[0].ID != res.BatchID+"-0" {
		t.Errorf("delivered %d messages; want 2 attempts of the same 2 IDs", len(delivered))
	}
	if _, st := e.Status(t, bt.AdminKey, res.BatchID); st.Sent != 2 || st.Status != "completed" {
		t.Errorf("status %+v, want 2 sent", st)
	}
}

func TestRecipientGoneAfterAccept(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","paras":[
		{"room":"room-001"},{"room":"room-003"},{"receiver":"user-a"},{"receiver":"user-d"}]}`))
	bt.Must(t, e.St.DeleteRoom(t.Context(), bt.TestApp, "room-003"))
	bt.Must(t, e.St.DeleteUser(t.Context(), bt.TestApp, "user-d"))
	e.ProcessAll(t)
	_, st := e.Status(t, bt.AdminKey, res.BatchID)
	if st.Status != "completed_with_errors" || st.Sent != 2 || st.Failed != 2 || st.Pending != 0 {
		t.Errorf("status %+v, want completed_with_errors with 2 sent, 2 failed", st)
	}
	c, err := e.St.LoadChunk(t.Context(), store.ChunkRef{AppID: bt.TestApp, BatchID: res.BatchID})
	bt.Must(t, err)
	got := []store.OutcomeStatus{c.Outcomes[0].Status, c.Outcomes[1].Status, c.Outcomes[2].Status, c.Outcomes[3].Status}
	if !slices.Equal(got, []store.OutcomeStatus{"sent", "failed", "sent", "failed"}) ||
		!strings.Contains(c.Outcomes[1].Error, `room "room-003" no longer exists`) ||
		!strings.Contains(c.Outcomes[3].Error, `"user-d"`) {
		t.Errorf("outcomes %+v", c.Outcomes)
	}
	if c.Outcomes[0].MessageID != res.BatchID+"-0" || c.Outcomes[0].Room != "room-001" {
		t.Errorf("sent outcome %+v lacks its message and room", c.Outcomes[0])
	}
	if n := len(e.Rec.Messages()); n != 2 {
		t.Errorf("%d messages delivered, want 2", n)
	}
}

func TestDeliveryFailures(t *testing.T) {
	t.Parallel()
	t.Run("permanent for one message", func(t *testing.T) {
		t.Parallel()
		e := bt.NewEnv(t, nil)
		e.Rec.DeliverHook = func(_ context.Context, msgs []store.Message) error {
			for i, m := range msgs {
				if m.Receiver == "user-b" {
					return &delivery.PartialError{Failed: map[int]error{i: delivery.Permanent(errors.New("user-b blocked the sender"))}}
				}
			}
			return nil
		}
		res := bt.Accepted(t, e.Post(t, bt.AdminKey, seed.Broadcast))
		e.ProcessAll(t)
		_, st := e.Status(t, bt.AdminKey, res.BatchID)
		if st.Sent != 2 || st.Failed != 1 || st.Status != "completed_with_errors" {
			t.Errorf("status %+v", st)
		}
		// A failed delivery is not pushed.
		for _, n := range e.Rec.Notifications() {
			if n.UserID == "user-b" {
				t.Errorf("user-b was pushed although delivery failed permanently")
			}
		}
	})
	t.Run("transient is retried", func(t *testing.T) {
		t.Parallel()
		e := bt.NewEnv(t, nil)
		var calls atomic.Int32
		e.Rec.DeliverHook = func(context.Context, []store.Message) error {
			if calls.Add(1) == 1 {
				return errors.New("hub unreachable")
			}
			return nil
		}
		res := bt.Accepted(t, e.Post(t, bt.AdminKey, seed.Broadcast))
		task := e.Enq.All()[0].Task
		if err := e.Svc.Processor().ProcessTask(t.Context(), task); err == nil || delivery.IsPermanent(err) {
			t.Fatalf("a transient delivery failure returned %v, want a retryable error", err)
		}
		if _, st := e.Status(t, bt.AdminKey, res.BatchID); st.Pending != 3 {
			t.Errorf("after a transient failure: %+v, want all pending", st)
		}
		bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), task))
		if _, st := e.Status(t, bt.AdminKey, res.BatchID); st.Sent != 3 {
			t.Errorf("after the retry: %+v", st)
		}
	})
}

func TestPushTargets(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"hello $n$","messageType":"text","push":true,"skipTotalBadge":true,"paras":[
		{"room":"room-002","$n$":"room"},{"receiver":"user-a","$n$":"a"}]}`))
	e.ProcessAll(t)
	var got []string
	for _, n := range e.Rec.Notifications() {
		got = append(got, n.UserID+"@"+n.RoomID+":"+n.Text)
		if n.Badge {
			t.Errorf("skipTotalBadge=true but notification %+v asks for the badge", n)
		}
		if !strings.HasPrefix(n.MessageID, res.BatchID) || n.Sender != "system" || n.AppID != bt.TestApp {
			t.Errorf("notification %+v", n)
		}
	}
	slices.Sort(got)
	// room-002's members are user-b, user-c and system; the sender is not notified.
	want := []string{"user-a@" + store.DirectRoomID("system", "user-a") + ":hello a", "user-b@room-002:hello room", "user-c@room-002:hello room"}
	if !slices.Equal(got, want) {
		t.Errorf("notifications %q\nwant %q", got, want)
	}

	// Without a Pusher, push requests are accepted and nothing breaks.
	np := bt.NewEnv(t, func(c *batch.Config) { c.Pusher = nil })
	bt.Accepted(t, np.Post(t, bt.AdminKey, seed.Broadcast))
	np.ProcessAll(t)
	if len(np.Rec.Messages()) != 3 || len(np.Rec.Notifications()) != 0 {
		t.Errorf("without a Pusher: %d messages, %d notifications", len(np.Rec.Messages()), len(np.Rec.Notifications()))
	}
}

func TestExtraAndFields(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.ExtraFields = []string{"mentions", "replyTo"} })
	body := `{"message":"Hi $name$","messageType":"text","mentions":["user-a"],"replyTo":null,
		"extra":{"title":"訂單 $orderId$","link":{"href":"/o/$orderId$?u=$name$"},"tags":["$name$",1,true,null],"n":1.50},
		"paras":[{"receiver":"user-a","$name$":"A \"quoted\" \\ 🚀","$orderId$":"ORD-001"},{"receiver":"user-b","$name$":"$orderId$","$orderId$":"X"}]}`
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, body))
	e.ProcessAll(t)
	msgs := e.Rec.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	for _, m := range msgs {
		if !json.Valid(m.Extra) {
			t.Errorf("extra is not valid JSON: %s", m.Extra)
		}
		if string(m.Fields["mentions"]) != `["user-a"]` || len(m.Fields) != 1 {
			t.Errorf("fields = %q, want mentions only (null counts as absent)", m.Fields)
		}
		if m.BatchID != res.BatchID {
			t.Errorf("message %s of batch %s", m.ID, m.BatchID)
		}
	}
	var a struct {
		Title string `json:"title"`
		Link  struct{ Href string }
		Tags  []any
		N     json.Number
	}
	bt.Must(t, json.Unmarshal(msgs[0].Extra, &a))
	if a.Title != "訂單 ORD-001" || a.Link.Href != `/o/ORD-001?u=A "quoted" \ 🚀` || a.Tags[0] != `A "quoted" \ 🚀` || len(a.Tags) != 4 {
		t.Errorf("rendered extra %s", msgs[0].Extra)
	}
	// One pass: a value that looks like a token stays literal.
	if msgs[1].Text != "Hi $orderId$" {
		t.Errorf("inserted text was expanded again: %q", msgs[1].Text)
	}
	if !strings.Contains(string(msgs[0].Extra), `"n":1.50`) {
		t.Errorf("numbers must keep their text: %s", msgs[0].Extra)
	}
}

// TestDirectRoomCollision: with the default (case-folding) room IDs, user
// IDs that differ only in case cannot share a room; the second fails
// instead of reading the first one's messages.
func TestDirectRoomCollision(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	bt.Must(t, e.St.AddUsers(t.Context(), bt.TestApp, "Ann", "ann"))
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"for $who$","messageType":"text","paras":[{"receiver":"Ann","$who$":"Ann"},{"receiver":"ann","$who$":"ann"}]}`))
	e.ProcessAll(t)
	_, st := e.Status(t, bt.AdminKey, res.BatchID)
	if st.Sent != 1 || st.Failed != 1 {
		t.Errorf("status %+v, want Ann sent and ann failed", st)
	}
	msgs := bt.RoomMessages(t, e.St, bt.TestApp, store.DirectRoomID("system", "Ann"))
	if len(msgs) != 1 || msgs[0].Text != "for Ann" {
		t.Errorf("Ann's room holds %+v", msgs)
	}
	_, page := e.Recipients(t, res.BatchID, "?status=failed")
	if len(page.Recipients) != 1 || !strings.Contains(page.Recipients[0].Error, "differ only in case") {
		t.Errorf("failed recipients %+v", page)
	}
}
