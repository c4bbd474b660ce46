package batch_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/store"
)

// fiveParas goes to three users and two rooms.
const fiveParas = `{"message":"Hi $n$","messageType":"text","paras":[
	{"receiver":"user-a","$n$":"0"},{"receiver":"user-b","$n$":"1"},{"room":"room-001","$n$":"2"},
	{"receiver":"user-c","$n$":"3"},{"room":"room-002","$n$":"4"}]}`

// storedIDs returns the IDs of the messages of batch id still stored in
// the rooms the batch went to.
func storedIDs(t *testing.T, e *bt.Env, id string) []string {
	t.Helper()
	var out []string
	for _, room := range []string{store.DirectRoomID("system", "user-a"), store.DirectRoomID("system", "user-b"),
		store.DirectRoomID("system", "user-c"), "room-001", "room-002"} {
		for _, m := range bt.RoomMessages(t, e.St, bt.TestApp, room) {
			if m.BatchID == id {
				out = append(out, m.ID)
			}
		}
	}
	slices.Sort(out)
	return out
}

func retractedIDs(e *bt.Env) []string {
	var out []string
	for _, m := range e.Rec.Retracted() {
		out = append(out, m.ID)
	}
	slices.Sort(out)
	return out
}

// A recall takes back what was sent (deleted, retracted, recipients
// recalled) and cancels what was not; a second recall changes nothing.
func TestRecall(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.ChunkSize = 2 })
	id := bt.Accepted(t, e.Post(t, bt.AdminKey, fiveParas)).BatchID
	tasks := e.Enq.All()
	for _, q := range tasks[:2] { // chunks 0 and 1 sent, chunk 2 not started
		bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), q.Task))
	}
	if n := len(storedIDs(t, e, id)); n != 4 {
		t.Fatalf("%d messages stored before the recall, want 4", n)
	}
	r, st := e.Recall(t, bt.AdminKey, id)
	if r.Status != 200 || st.Status != "recalled" || st.Recalled != 4 || st.Canceled != 1 || st.Sent != 0 || st.Pending != 0 {
		t.Fatalf("recall = %d %s", r.Status, r.Raw)
	}
	if got := storedIDs(t, e, id); len(got) != 0 {
		t.Errorf("messages still stored after the recall: %v", got)
	}
	want := []string{id + "-0", id + "-1", id + "-2", id + "-3"}
	if got := retractedIDs(e); !slices.Equal(got, want) {
		t.Errorf("retracted %v, want %v", got, want)
	}
	for _, m := range e.Rec.Retracted() {
		if m.Text != "" || m.AppID != bt.TestApp || m.Sender != "system" || m.BatchID != id || m.RoomID == "" {
			t.Errorf("retraction %+v", m)
		}
		if (m.Index == 2) != (m.Receiver == "") {
			t.Errorf("retraction %d: receiver %q (the room message has none)", m.Index, m.Receiver)
		}
	}
	_, page := e.Recipients(t, id, "")
	var statuses []string
	for _, rc := range page.Recipients {
		statuses = append(statuses, rc.Status)
	}
	if !slices.Equal(statuses, []string{"recalled", "recalled", "recalled", "recalled", "canceled"}) {
		t.Errorf("recipients' statuses %v", statuses)
	}
	if _, p := e.Recipients(t, id, "?status=recalled"); len(p.Recipients) != 4 {
		t.Errorf("status=recalled lists %d recipients", len(p.Recipients))
	}

	// The task of the canceled chunk finds it done; a second recall is a no-op.
	bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), tasks[2].Task))
	r, again := e.Recall(t, bt.AdminKey, id)
	if r.Status != 200 || again.Recalled != 4 || len(e.Rec.Retracted()) != 4 || len(e.Rec.Messages()) != 4 {
		t.Errorf("second recall: %d %+v, %d retractions, %d deliveries", r.Status, again, len(e.Rec.Retracted()), len(e.Rec.Messages()))
	}
	if r := e.Do(t, http.MethodGet, "/messages/batch?status=recalled", bt.AdminKey, "", nil); r.Status != 200 || !strings.Contains(r.Raw, id) {
		t.Errorf("list status=recalled: %d %s", r.Status, r.Raw)
	}
}

// A recall while a worker is in the middle of a chunk: the chunk
// completes, then its worker recalls it; no message stays.
func TestRecallDuringProcessing(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.ChunkSize = 2 })
	entered, release := make(chan struct{}), make(chan struct{})
	var held atomic.Bool
	e.Rec.DeliverHook = func(ctx context.Context, _ []store.Message) error {
		if held.CompareAndSwap(false, true) {
			close(entered)
			<-release // the messages are stored; the worker waits here
		}
		return nil
	}
	id := bt.Accepted(t, e.Post(t, bt.AdminKey, fiveParas)).BatchID
	tasks := e.Enq.All()
	done := make(chan error, 1)
	go func() { done <- e.Svc.Processor().ProcessTask(context.Background(), tasks[0].Task) }()
	<-entered
	r, st := e.Recall(t, bt.AdminKey, id)
	if r.Status != 200 || st.Status != "recalled" || st.Pending != 2 || st.Canceled != 3 {
		t.Fatalf("recall while chunk 0 is in flight = %d %s", r.Status, r.Raw)
	}
	close(release)
	bt.Must(t, <-done)
	_, st = e.Status(t, bt.AdminKey, id)
	if st.Recalled != 2 || st.Sent != 0 || st.Pending != 0 || st.Canceled != 3 {
		t.Errorf("after the chunk in flight finished: %+v", st)
	}
	if got := storedIDs(t, e, id); len(got) != 0 {
		t.Errorf("messages left after the in-flight chunk: %v", got)
	}
	if got := retractedIDs(e); !slices.Equal(got, []string{id + "-0", id + "-1"}) {
		t.Errorf("retracted %v", got)
	}
	for _, q := range tasks[1:] { // canceled by the recall: nothing is sent
		bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), q.Task))
	}
	if n := len(e.Rec.Messages()); n != 2 {
		t.Errorf("%d messages delivered in all, want the 2 of the chunk in flight", n)
	}
}

// Without the capabilities a recall answers 501 and changes nothing.
func TestRecallNotSupported(t *testing.T) {
	t.Parallel()
	cases := map[string]func(c *batch.Config){
		"deliverer without Retract": func(c *batch.Config) {
			c.Deliverer = delivery.DelivererFunc(c.Deliverer.Deliver)
		},
		"store without DeleteMessages": func(c *batch.Config) { c.Messages = messagesOnly{c.Store} },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := bt.NewEnv(t, mutate)
			id := bt.Accepted(t, e.Post(t, bt.AdminKey, fiveParas)).BatchID
			e.ProcessAll(t)
			r, _ := e.Recall(t, bt.AdminKey, id)
			if r.Status != 501 || r.Error == nil || r.Error.Code != "NOT_SUPPORTED" {
				t.Errorf("recall = %d %s, want 501 NOT_SUPPORTED", r.Status, r.Raw)
			}
			if _, st := e.Status(t, bt.AdminKey, id); st.Status != "completed" || st.Sent != 5 {
				t.Errorf("the refused recall changed the batch: %+v", st)
			}
			if n := len(storedIDs(t, e, id)); n != 5 {
				t.Errorf("%d messages stored after a refused recall, want 5", n)
			}
		})
	}
}

func TestRecallErrors(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	id := bt.Accepted(t, e.Post(t, bt.AdminKey, fiveParas)).BatchID
	for _, c := range []struct {
		method, path, key string
		status            int
		code              string
	}{
		{http.MethodPost, "/messages/batch/" + id + "/recall", bt.OtherKey, 404, "BATCH_NOT_FOUND"},
		{http.MethodPost, "/messages/batch/batch-20260101-nope/recall", bt.AdminKey, 404, "BATCH_NOT_FOUND"},
		{http.MethodGet, "/messages/batch/" + id + "/recall", bt.AdminKey, 405, "METHOD_NOT_ALLOWED"},
		{http.MethodPost, "/messages/batch/" + id + "/recall?force=1", bt.AdminKey, 400, "INVALID_PARAMETER"},
		{http.MethodPost, "/messages/batch/" + id + "/recall", "", 401, "INVALID_API_KEY"},
	} {
		r := e.Do(t, c.method, c.path, c.key, "", nil)
		if r.Status != c.status || r.Error == nil || r.Error.Code != c.code {
			t.Errorf("%s %s = %d %s, want %d %s", c.method, c.path, r.Status, r.Raw, c.status, c.code)
		}
	}
	if _, st := e.Status(t, bt.AdminKey, id); st.Status != "queued" {
		t.Errorf("refused recalls changed the batch: %+v", st)
	}
}

// A recall a failure interrupted is finished by Sweep.
func TestRecallResumedBySweep(t *testing.T) {
	t.Parallel()
	var clock atomic.Pointer[time.Time]
	now := time.Now().UTC()
	clock.Store(&now)
	e := bt.NewEnvOn(t, memstore.New(nil), func(c *batch.Config) {
		c.ChunkSize = 2
		c.Now = func() time.Time { return *clock.Load() }
	})
	id := bt.Accepted(t, e.Post(t, bt.AdminKey, fiveParas)).BatchID
	e.ProcessAll(t)
	var calls atomic.Int32
	e.Rec.RetractHook = func(context.Context, []store.Message) error {
		if calls.Add(1) == 2 { // chunk 1's retraction fails once
			return errors.New("hub unreachable")
		}
		return nil
	}
	if r, _ := e.Recall(t, bt.AdminKey, id); r.Status != 503 {
		t.Errorf("an interrupted recall = %d %s, want 503", r.Status, r.Raw)
	}
	_, st := e.Status(t, bt.AdminKey, id)
	if st.Status != "recalled" || st.Recalled != 2 || st.Sent != 3 {
		t.Errorf("after the interrupted recall: %+v", st)
	}
	// Not yet a lease later: the sweep leaves it to the recall at work.
	_, err := e.Svc.Sweep(t.Context())
	bt.Must(t, err)
	if _, st := e.Status(t, bt.AdminKey, id); st.Sent != 3 {
		t.Errorf("a sweep within the lease recalled: %+v", st)
	}
	later := now.Add(batch.DefaultLease + time.Second)
	clock.Store(&later)
	_, err = e.Svc.Sweep(t.Context())
	bt.Must(t, err)
	_, st = e.Status(t, bt.AdminKey, id)
	if st.Recalled != 5 || st.Sent != 0 {
		t.Errorf("after the sweep: %+v, want all 5 recalled", st)
	}
	if got := storedIDs(t, e, id); len(got) != 0 {
		t.Errorf("messages left: %v", got)
	}
}
