package batch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hibiken/asynq"

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

// pushBody asks for a push to two users directly and to room-002 (members
// user-b, user-c and the sender).
const pushBody = `{"message":"hi $n$","messageType":"text","push":true,"paras":[
	{"receiver":"user-a","$n$":"a"},{"receiver":"user-b","$n$":"b"},{"room":"room-002","$n$":"room"}]}`

// failingPushes fails, on its first call only, user-a's notification
// transiently and user-c's permanently.
func failingPushes(calls *atomic.Int32) func(context.Context, []delivery.Notification) error {
	return func(_ context.Context, ns []delivery.Notification) error {
		if calls.Add(1) > 1 {
			return nil
		}
		failed := map[int]error{}
		for i, n := range ns {
			switch n.UserID {
			case "user-a":
				failed[i] = errors.New("push provider unavailable")
			case "user-c":
				failed[i] = fmt.Errorf("token of user-c: %w", delivery.ErrUnregistered)
			}
		}
		return &delivery.PartialError{Failed: failed}
	}
}

func pushOf(t *testing.T, e *bt.Env, id string) map[string]string {
	t.Helper()
	_, page := e.Recipients(t, id, "")
	out := map[string]string{}
	for _, r := range page.Recipients {
		who := r.Receiver
		if who == "" {
			who = r.Room
		}
		out[who] = r.Status + "/" + r.Push
		if r.Push == "failed" && r.PushError == "" {
			t.Errorf("recipient %s: push failed without a pushError", who)
		}
	}
	return out
}

// A push that fails transiently after the messages were delivered is
// retried alone: the retry delivers nothing again and pushes only what
// failed.
func TestPushFailureRetriesOnlyThePush(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	var calls atomic.Int32
	e.Rec.PushHook = failingPushes(&calls)
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, pushBody))
	task := e.Enq.All()[0].Task
	err := e.Svc.Processor().ProcessTask(t.Context(), task)
	if err == nil || delivery.IsPermanent(err) {
		t.Fatalf("a transient push failure returned %v, want a retryable error", err)
	}
	if n := len(e.Rec.Messages()); n != 3 {
		t.Fatalf("%d messages delivered by the first attempt, want 3", n)
	}
	if _, st := e.Status(t, bt.AdminKey, res.BatchID); st.Pending != 3 || st.Sent != 0 {
		t.Errorf("between the attempts: %+v, want all pending", st)
	}
	bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), task))

	if n, calls := len(e.Rec.Messages()), e.Rec.DeliverCalls(); n != 3 || calls != 1 {
		t.Errorf("after the retry: %d messages in %d Deliver calls, want 3 in 1 (never delivered again)", n, calls)
	}
	var pushed []string
	for _, n := range e.Rec.Notifications() {
		pushed = append(pushed, n.UserID+"@"+n.RoomID)
	}
	slices.Sort(pushed)
	want := []string{"user-a@" + store.DirectRoomID("system", "user-a"), "user-b@" + store.DirectRoomID("system", "user-b"), "user-b@room-002"}
	if !slices.Equal(pushed, want) {
		t.Errorf("pushed %q, want each once: %q", pushed, want)
	}
	if c := e.Rec.PushCalls(); c != 2 {
		t.Errorf("%d Push calls, want 2", c)
	}
	_, st := e.Status(t, bt.AdminKey, res.BatchID)
	if st.Status != "completed" || st.Sent != 3 || st.Failed != 0 || st.PushFailed != 1 {
		t.Errorf("status %+v, want completed, 3 sent, 1 push failed", st)
	}
	got := pushOf(t, e, res.BatchID)
	wantPush := map[string]string{"user-a": "sent/sent", "user-b": "sent/sent", "room-002": "sent/failed"}
	if !maps.Equal(got, wantPush) {
		t.Errorf("recipients' push states %v, want %v", got, wantPush)
	}
	_, page := e.Recipients(t, res.BatchID, "")
	if pe := page.Recipients[2].PushError; !strings.Contains(pe, "unregistered") {
		t.Errorf("room-002's pushError %q does not say why", pe)
	}
}

// A push that keeps failing ends failed on the last attempt; the messages
// stay sent and are delivered once.
func TestPushFailureGivesUp(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.MaxRetry = 1 })
	e.Rec.PushHook = func(context.Context, []delivery.Notification) error { return errors.New("push provider down") }
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, pushBody))
	task := e.Enq.All()[0].Task
	if err := e.Svc.Processor().ProcessTask(t.Context(), task); err == nil {
		t.Fatal("the first attempt succeeded although every push failed")
	}
	bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), task)) // the last attempt
	_, st := e.Status(t, bt.AdminKey, res.BatchID)
	if st.Status != "completed" || st.Sent != 3 || st.PushFailed != 3 {
		t.Errorf("status %+v, want completed with 3 sent, 3 push failed", st)
	}
	if n := len(e.Rec.Messages()); n != 3 {
		t.Errorf("%d messages delivered, want 3 (once each)", n)
	}
	for who, s := range pushOf(t, e, res.BatchID) {
		if s != "sent/failed" {
			t.Errorf("%s: %s, want sent/failed", who, s)
		}
	}
}

// The retries of a chunk are bounded by the smaller of two MaxRetry
// values: the enqueuing process's, which asynq keeps with the task, and
// the worker's, which bounds the attempts the store counts. Here the API
// side allows 10 and the worker 1: the worker's second attempt is the
// last, and it records the recipients failed.
func TestMaxRetryOfEnqueuerAndWorker(t *testing.T) {
	t.Parallel()
	api := bt.NewEnv(t, func(c *batch.Config) { c.MaxRetry = 10 })
	res := bt.Accepted(t, api.Post(t, bt.AdminKey, `{"messageType":"text","message":"m","paras":[{"room":"room-001"}]}`))
	queued := api.Enq.All()[0]
	if !slices.ContainsFunc(queued.Opts, func(o asynq.Option) bool { return o.Type() == asynq.MaxRetryOpt && o.Value() == 10 }) {
		t.Fatalf("the task was enqueued with %v, want the API's MaxRetry(10)", queued.Opts)
	}
	worker := bt.NewEnvOn(t, api.St, func(c *batch.Config) { c.MaxRetry = 1 })
	worker.Rec.DeliverHook = func(context.Context, []store.Message) error { return errors.New("hub down") }
	if err := worker.Svc.Processor().ProcessTask(t.Context(), queued.Task); err == nil {
		t.Fatal("the first attempt succeeded although delivery failed")
	}
	if _, st := api.Status(t, bt.AdminKey, res.BatchID); st.Pending != 1 {
		t.Fatalf("after the first attempt: %+v, want the recipient still pending", st)
	}
	bt.Must(t, worker.Svc.Processor().ProcessTask(t.Context(), queued.Task)) // attempt 2 > the worker's MaxRetry 1: the last
	if _, st := api.Status(t, bt.AdminKey, res.BatchID); st.Status != "completed_with_errors" || st.Failed != 1 {
		t.Errorf("after the worker's last attempt: %+v, want completed_with_errors with 1 failed", st)
	}
}
