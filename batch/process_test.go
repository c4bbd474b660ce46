package batch_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

func TestRerunStoresNothingTwice(t *testing.T) {
	t.Parallel()
	var fs *failingStore
	e := newEnv(t, func(c *batch.Config) {
		// The first completion fails, as if the worker died after
		// delivering: the task is retried and does everything again.
		fs = &failingStore{Store: c.Store, fail: map[string]int{"CompleteChunk": 1}}
		c.Store = fs
	})
	res := accepted(t, e.post(t, adminKey, seedTemplate))
	task := e.enq.all()[0].task
	if err := e.svc.Processor().ProcessTask(t.Context(), task); err == nil {
		t.Fatal("the first attempt did not report the failed completion")
	}
	for range 2 { // the retry, then a duplicate task
		must(t, e.svc.Processor().ProcessTask(t.Context(), task))
	}
	for _, u := range []string{"user-a", "user-b"} {
		msgs := roomMessages(t, e.st, testApp, store.DirectRoomID("system", u))
		if len(msgs) != 1 {
			t.Errorf("%s's room holds %d messages after a re-run, want 1", u, len(msgs))
		}
	}
	// Delivery is at-least-once with stable IDs: two deliveries, same IDs.
	delivered := e.rec.Messages()
	if len(delivered) != 4 || delivered[0].ID != delivered[2].ID || delivered[0].ID != res.BatchID+"-0" {
		t.Errorf("delivered %d messages; want 2 attempts of the same 2 IDs", len(delivered))
	}
	if _, st := e.status(t, adminKey, res.BatchID); st.Sent != 2 || st.Status != "completed" {
		t.Errorf("status %+v, want 2 sent", st)
	}
}

func TestRecipientGoneAfterAccept(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	res := accepted(t, e.post(t, adminKey, `{"message":"m","messageType":"text","paras":[
		{"room":"room-001"},{"room":"room-003"},{"receiver":"user-a"},{"receiver":"user-d"}]}`))
	must(t, e.st.DeleteRoom(t.Context(), testApp, "room-003"))
	must(t, e.st.DeleteUser(t.Context(), testApp, "user-d"))
	e.processAll(t)
	_, st := e.status(t, adminKey, res.BatchID)
	if st.Status != "completed_with_errors" || st.Sent != 2 || st.Failed != 2 || st.Pending != 0 {
		t.Errorf("status %+v, want completed_with_errors with 2 sent, 2 failed", st)
	}
	c, err := e.st.LoadChunk(t.Context(), store.ChunkRef{AppID: testApp, BatchID: res.BatchID})
	must(t, err)
	got := []store.OutcomeStatus{c.Outcomes[0].Status, c.Outcomes[1].Status, c.Outcomes[2].Status, c.Outcomes[3].Status}
	if !slices.Equal(got, []store.OutcomeStatus{"sent", "failed", "sent", "failed"}) ||
		!strings.Contains(c.Outcomes[1].Error, `room "room-003" no longer exists`) ||
		!strings.Contains(c.Outcomes[3].Error, `"user-d"`) {
		t.Errorf("outcomes %+v", c.Outcomes)
	}
	if c.Outcomes[0].MessageID != res.BatchID+"-0" || c.Outcomes[0].Room != "room-001" {
		t.Errorf("sent outcome %+v lacks its message and room", c.Outcomes[0])
	}
	if n := len(e.rec.Messages()); n != 2 {
		t.Errorf("%d messages delivered, want 2", n)
	}
}

func TestDeliveryFailures(t *testing.T) {
	t.Parallel()
	t.Run("permanent for one message", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil)
		e.rec.DeliverHook = func(_ context.Context, msgs []store.Message) error {
			for i, m := range msgs {
				if m.Receiver == "user-b" {
					return &delivery.PartialError{Failed: map[int]error{i: delivery.Permanent(errors.New("user-b blocked the sender"))}}
				}
			}
			return nil
		}
		res := accepted(t, e.post(t, adminKey, seedBroadcast))
		e.processAll(t)
		_, st := e.status(t, adminKey, res.BatchID)
		if st.Sent != 2 || st.Failed != 1 || st.Status != "completed_with_errors" {
			t.Errorf("status %+v", st)
		}
		// A failed delivery is not pushed.
		for _, n := range e.rec.Notifications() {
			if n.UserID == "user-b" {
				t.Errorf("user-b was pushed although delivery failed permanently")
			}
		}
	})
	t.Run("transient is retried", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil)
		var calls atomic.Int32
		e.rec.DeliverHook = func(context.Context, []store.Message) error {
			if calls.Add(1) == 1 {
				return errors.New("hub unreachable")
			}
			return nil
		}
		res := accepted(t, e.post(t, adminKey, seedBroadcast))
		task := e.enq.all()[0].task
		if err := e.svc.Processor().ProcessTask(t.Context(), task); err == nil || delivery.IsPermanent(err) {
			t.Fatalf("a transient delivery failure returned %v, want a retryable error", err)
		}
		if _, st := e.status(t, adminKey, res.BatchID); st.Pending != 3 {
			t.Errorf("after a transient failure: %+v, want all pending", st)
		}
		must(t, e.svc.Processor().ProcessTask(t.Context(), task))
		if _, st := e.status(t, adminKey, res.BatchID); st.Sent != 3 {
			t.Errorf("after the retry: %+v", st)
		}
	})
}

// TestRetriesExhausted runs a chunk whose delivery always fails through
// a real asynq server: after MaxRetry retries its recipients are failed.
func TestRetriesExhausted(t *testing.T) {
	t.Parallel()
	e := newQueuedEnv(t, miniRedis(t), func(c *batch.Config) { c.MaxRetry = 1 })
	var calls atomic.Int32
	e.rec.DeliverHook = func(context.Context, []store.Message) error {
		calls.Add(1)
		return errors.New("hub unreachable")
	}
	res := accepted(t, e.post(t, adminKey, seedTemplate))
	st := e.waitFinished(t, adminKey, res.BatchID)
	if st.Status != "completed_with_errors" || st.Failed != 2 || st.Sent != 0 {
		t.Errorf("status %+v, want 2 failed", st)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("delivery was attempted %d times, want 2 (1 + MaxRetry 1)", n)
	}
	c, err := e.st.LoadChunk(t.Context(), store.ChunkRef{AppID: testApp, BatchID: res.BatchID})
	must(t, err)
	if !strings.Contains(c.Outcomes[0].Error, "gave up after repeated failures") {
		t.Errorf("outcome %+v", c.Outcomes[0])
	}
	// Messages were stored before delivery failed: exactly once each.
	for _, u := range []string{"user-a", "user-b"} {
		if n := len(roomMessages(t, e.st, testApp, store.DirectRoomID("system", u))); n != 1 {
			t.Errorf("%s's room holds %d messages", u, n)
		}
	}
}

func TestPushTargets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	res := accepted(t, e.post(t, adminKey, `{"message":"hello $n$","messageType":"text","push":true,"skipTotalBadge":true,"paras":[
		{"room":"room-002","$n$":"room"},{"receiver":"user-a","$n$":"a"}]}`))
	e.processAll(t)
	var got []string
	for _, n := range e.rec.Notifications() {
		got = append(got, n.UserID+"@"+n.RoomID+":"+n.Text)
		if n.Badge {
			t.Errorf("skipTotalBadge=true but notification %+v asks for the badge", n)
		}
		if !strings.HasPrefix(n.MessageID, res.BatchID) || n.Sender != "system" || n.AppID != testApp {
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
	np := newEnv(t, func(c *batch.Config) { c.Pusher = nil })
	accepted(t, np.post(t, adminKey, seedBroadcast))
	np.processAll(t)
	if len(np.rec.Messages()) != 3 || len(np.rec.Notifications()) != 0 {
		t.Errorf("without a Pusher: %d messages, %d notifications", len(np.rec.Messages()), len(np.rec.Notifications()))
	}
}

func TestExtraAndFields(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *batch.Config) { c.ExtraFields = []string{"mentions", "replyTo"} })
	body := `{"message":"Hi $name$","messageType":"text","mentions":["user-a"],"replyTo":null,
		"extra":{"title":"訂單 $orderId$","link":{"href":"/o/$orderId$?u=$name$"},"tags":["$name$",1,true,null],"n":1.50},
		"paras":[{"receiver":"user-a","$name$":"A \"quoted\" \\ 🚀","$orderId$":"ORD-001"},{"receiver":"user-b","$name$":"$orderId$","$orderId$":"X"}]}`
	res := accepted(t, e.post(t, adminKey, body))
	e.processAll(t)
	msgs := e.rec.Messages()
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
	must(t, json.Unmarshal(msgs[0].Extra, &a))
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
	e := newEnv(t, nil)
	must(t, e.st.AddUsers(t.Context(), testApp, "Ann", "ann"))
	res := accepted(t, e.post(t, adminKey, `{"message":"for $who$","messageType":"text","paras":[{"receiver":"Ann","$who$":"Ann"},{"receiver":"ann","$who$":"ann"}]}`))
	e.processAll(t)
	_, st := e.status(t, adminKey, res.BatchID)
	if st.Sent != 1 || st.Failed != 1 {
		t.Errorf("status %+v, want Ann sent and ann failed", st)
	}
	msgs := roomMessages(t, e.st, testApp, store.DirectRoomID("system", "Ann"))
	if len(msgs) != 1 || msgs[0].Text != "for Ann" {
		t.Errorf("Ann's room holds %+v", msgs)
	}
	_, page := e.recipients(t, res.BatchID, "?status=failed")
	if len(page.Recipients) != 1 || !strings.Contains(page.Recipients[0].Error, "differ only in case") {
		t.Errorf("failed recipients %+v", page)
	}
}
