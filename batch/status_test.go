package batch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

type recipientsPage struct {
	BatchID    string `json:"batchID"`
	Total      int    `json:"total"`
	Offset     int    `json:"offset"`
	Limit      int    `json:"limit"`
	NextOffset *int   `json:"nextOffset"`
	Recipients []struct {
		Index     int    `json:"index"`
		Receiver  string `json:"receiver"`
		Room      string `json:"room"`
		MessageID string `json:"messageID"`
		Status    string `json:"status"`
		Error     string `json:"error"`
	} `json:"recipients"`
}

func (e *env) recipients(t *testing.T, id, query string) (*response, recipientsPage) {
	t.Helper()
	r := e.do(t, http.MethodGet, "/messages/batch/"+id+"/recipients"+query, adminKey, "", nil)
	var page recipientsPage
	if r.status == 200 {
		must(t, json.Unmarshal(r.Result, &page))
	}
	return r, page
}

func TestRecipients(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *batch.Config) { c.ChunkSize = 3 })
	var paras []string
	for i := range 10 {
		switch i {
		case 4:
			paras = append(paras, `{"room":"room-003"}`) // deleted before processing: fails
		case 7:
			paras = append(paras, `{"receiver":"user-b","room":"room-001"}`)
		default:
			paras = append(paras, fmt.Sprintf(`{"receiver":"user-%c"}`, 'a'+i%4))
		}
	}
	res := accepted(t, e.post(t, adminKey, `{"message":"m","messageType":"text","paras":[`+strings.Join(paras, ",")+`]}`))

	// Before processing, everyone is pending, in para order.
	_, page := e.recipients(t, res.BatchID, "")
	if page.Total != 10 || len(page.Recipients) != 10 || page.NextOffset != nil || page.Limit != 100 {
		t.Fatalf("first page %+v", page)
	}
	for i, rc := range page.Recipients {
		if rc.Index != i || rc.Status != "pending" {
			t.Errorf("recipient %d = %+v", i, rc)
		}
	}
	if rc := page.Recipients[7]; rc.Receiver != "user-b" || rc.Room != "room-001" {
		t.Errorf("recipient 7 = %+v, want its receiver and room", rc)
	}

	must(t, e.st.DeleteRoom(t.Context(), testApp, "room-003"))
	tasks := e.enq.all()
	// Process chunks 0 and 2 only: the batch is half done.
	for _, no := range []int{0, 2} {
		must(t, e.svc.Processor().ProcessTask(t.Context(), tasks[no].task))
	}
	_, page = e.recipients(t, res.BatchID, "?status=pending")
	if page.Total != 4 || len(page.Recipients) != 4 || page.Recipients[0].Index != 3 {
		t.Errorf("pending while running: %+v", page)
	}

	// Paging with a status filter stays stable while the batch runs: the
	// cursor is a para index.
	_, p1 := e.recipients(t, res.BatchID, "?status=sent&limit=2")
	if len(p1.Recipients) != 2 || p1.NextOffset == nil || p1.Recipients[0].Index != 0 || p1.Recipients[1].Index != 1 {
		t.Fatalf("sent page 1 %+v", p1)
	}
	must(t, e.svc.Processor().ProcessTask(t.Context(), tasks[1].task))
	_, p2 := e.recipients(t, res.BatchID, fmt.Sprintf("?status=sent&limit=2&offset=%d", *p1.NextOffset))
	if len(p2.Recipients) != 2 || p2.Recipients[0].Index != 2 || p2.Recipients[1].Index != 3 {
		t.Errorf("sent page 2 after more chunks finished: %+v", p2)
	}
	must(t, e.svc.Processor().ProcessTask(t.Context(), tasks[3].task))

	_, failed := e.recipients(t, res.BatchID, "?status=failed")
	if failed.Total != 1 || len(failed.Recipients) != 1 || failed.Recipients[0].Index != 4 ||
		!strings.Contains(failed.Recipients[0].Error, "room-003") {
		t.Errorf("failed recipients %+v", failed)
	}
	_, all := e.recipients(t, res.BatchID, "?offset=6&limit=3")
	if len(all.Recipients) != 3 || all.Recipients[0].Index != 6 || all.NextOffset == nil || *all.NextOffset != 9 {
		t.Errorf("offset 6 limit 3: %+v", all)
	}
	r0 := all.Recipients[1] // index 7: room wins
	if r0.Room != "room-001" || r0.MessageID != res.BatchID+"-7" || r0.Status != "sent" {
		t.Errorf("recipient 7 after sending: %+v", r0)
	}
	_, direct := e.recipients(t, res.BatchID, "?limit=1")
	if direct.Recipients[0].Room != store.DirectRoomID("system", "user-a") {
		t.Errorf("a receiver's room is the one-on-one room: %+v", direct.Recipients[0])
	}
	_, end := e.recipients(t, res.BatchID, "?offset=10")
	if len(end.Recipients) != 0 || end.NextOffset != nil {
		t.Errorf("past the end: %+v", end)
	}
	_, capped := e.recipients(t, res.BatchID, "?limit=5000")
	if capped.Limit != 1000 {
		t.Errorf("limit 5000 is capped to %d, want 1000", capped.Limit)
	}

	for _, c := range []struct{ query, want string }{
		{"?limit=0", "limit"}, {"?limit=x", "limit"}, {"?offset=-1", "offset"}, {"?offset=", "offset"},
		{"?status=done", "status"}, {"?page=2", `unknown query parameter "page"`}, {"?limit=1&limit=2", "limit"},
	} {
		r, _ := e.recipients(t, res.BatchID, c.query)
		if r.status != 400 || r.Error.Code != "INVALID_PARAMETER" || !strings.Contains(r.Error.Message, c.want) {
			t.Errorf("recipients%s = %d %s, want 400 INVALID_PARAMETER naming %s", c.query, r.status, r.raw, c.want)
		}
	}
	if r := e.do(t, http.MethodGet, "/messages/batch/"+res.BatchID+"/recipients", otherKey, "", nil); r.status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
		t.Errorf("another app's recipients = %d %s", r.status, r.raw)
	}
	if r := e.do(t, http.MethodGet, "/messages/batch/"+res.BatchID+"?verbose=1", adminKey, "", nil); r.status != 400 || r.Error.Code != "INVALID_PARAMETER" {
		t.Errorf("status with an unknown parameter = %d %s", r.status, r.raw)
	}
}

func (e *env) cancel(t *testing.T, key, id string) (*response, batchStatus) {
	t.Helper()
	r := e.do(t, http.MethodDelete, "/messages/batch/"+id, key, "", nil)
	var st batchStatus
	if r.status == 200 {
		must(t, json.Unmarshal(r.Result, &st))
	}
	return r, st
}

const eightRecipients = `{"message":"m","messageType":"text","paras":[
	{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"receiver":"user-d"},
	{"room":"room-001"},{"room":"room-002"},{"room":"room-003"},{"receiver":"user-a"}]}`

// TestCancel cancels a batch while one chunk is being delivered: that
// chunk finishes, the chunks not started are never sent.
func TestCancel(t *testing.T) {
	t.Parallel()
	var done []batch.BatchSummary
	var mu sync.Mutex
	e := newEnv(t, func(c *batch.Config) {
		c.ChunkSize = 2
		c.OnBatchDone = func(_ context.Context, s batch.BatchSummary) {
			mu.Lock()
			defer mu.Unlock()
			done = append(done, s)
		}
	})
	res := accepted(t, e.post(t, adminKey, eightRecipients))
	tasks := e.enq.all()
	must(t, e.svc.Processor().ProcessTask(t.Context(), tasks[0].task))

	inDeliver, release := make(chan struct{}), make(chan struct{})
	e.rec.DeliverHook = func(context.Context, []store.Message) error {
		close(inDeliver)
		<-release
		return nil
	}
	chunk1 := make(chan error, 1)
	go func() { chunk1 <- e.svc.Processor().ProcessTask(context.Background(), tasks[1].task) }()
	<-inDeliver

	r, st := e.cancel(t, adminKey, res.BatchID)
	if r.status != 200 || st.Status != "canceled" || st.Canceled != 4 || st.Sent != 2 || st.Pending != 2 {
		t.Fatalf("DELETE while chunk 1 is delivered = %d %s", r.status, r.raw)
	}
	close(release)
	must(t, <-chunk1)
	e.rec.DeliverHook = nil
	for _, q := range tasks[2:] {
		must(t, e.svc.Processor().ProcessTask(t.Context(), q.task))
	}
	_, st = e.status(t, adminKey, res.BatchID)
	if st.Status != "canceled" || st.Sent != 4 || st.Canceled != 4 || st.Failed != 0 || st.Pending != 0 || st.FinishedAt == nil {
		t.Errorf("final status %+v, want 4 sent (chunks 0 and 1), 4 canceled", st)
	}
	if n := len(e.rec.Messages()); n != 4 {
		t.Errorf("%d messages delivered, want the 4 of chunks 0 and 1", n)
	}
	_, page := e.recipients(t, res.BatchID, "?status=canceled")
	if len(page.Recipients) != 4 || page.Recipients[0].Index != 4 {
		t.Errorf("canceled recipients %+v", page)
	}
	mu.Lock()
	if len(done) != 1 || done[0].Status != store.StatusCanceled || done[0].Canceled != 4 {
		t.Errorf("OnBatchDone calls %+v, want one with status canceled", done)
	}
	mu.Unlock()

	r, _ = e.cancel(t, adminKey, res.BatchID)
	if r.status != 409 || r.Error.Code != "BATCH_FINISHED" || !strings.Contains(r.Error.Message, "canceled") {
		t.Errorf("canceling a finished batch = %d %s", r.status, r.raw)
	}
}

func TestCancelErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	res := accepted(t, e.post(t, adminKey, validBody))
	if r, _ := e.cancel(t, otherKey, res.BatchID); r.status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
		t.Errorf("another app's DELETE = %d %s", r.status, r.raw)
	}
	if r, _ := e.cancel(t, adminKey, "batch-nope"); r.status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
		t.Errorf("DELETE of an unknown batch = %d %s", r.status, r.raw)
	}
	if r := e.do(t, http.MethodDelete, "/messages/batch/"+res.BatchID+"?force=1", adminKey, "", nil); r.status != 400 || r.Error.Code != "INVALID_PARAMETER" {
		t.Errorf("DELETE with an unknown parameter = %d %s", r.status, r.raw)
	}
	e.processAll(t)
	if r, _ := e.cancel(t, adminKey, res.BatchID); r.status != 409 || r.Error.Code != "BATCH_FINISHED" || !strings.Contains(r.Error.Message, "completed") {
		t.Errorf("canceling a completed batch = %d %s", r.status, r.raw)
	}
}

func TestCancelScheduled(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	e := newEnv(t, func(c *batch.Config) {
		c.OnBatchDone = func(context.Context, batch.BatchSummary) { calls.Add(1) }
	})
	at := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	res := accepted(t, e.post(t, adminKey, `{"message":"m","messageType":"text","sendAt":"`+at+`","paras":[{"receiver":"user-a"},{"room":"room-001"}]}`))
	if _, st := e.status(t, adminKey, res.BatchID); st.Status != "scheduled" {
		t.Fatalf("status %s, want scheduled", st.Status)
	}
	r, st := e.cancel(t, adminKey, res.BatchID)
	if r.status != 200 || st.Status != "canceled" || st.Canceled != 2 || st.Pending != 0 || st.FinishedAt == nil {
		t.Errorf("DELETE of a scheduled batch = %d %s", r.status, r.raw)
	}
	// When its time comes, the task finds nothing to do.
	e.processAll(t)
	if n := len(e.rec.Messages()); n != 0 {
		t.Errorf("a canceled scheduled batch delivered %d messages", n)
	}
	if calls.Load() != 1 {
		t.Errorf("OnBatchDone ran %d times, want once (by the cancel)", calls.Load())
	}
}

// TestCancelStopsRetries: a chunk that failed before the cancel is not
// sent by its retry.
func TestCancelStopsRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.rec.DeliverHook = func(context.Context, []store.Message) error { return errors.New("hub down") }
	res := accepted(t, e.post(t, adminKey, seedTemplate))
	task := e.enq.all()[0].task
	if err := e.svc.Processor().ProcessTask(t.Context(), task); err == nil {
		t.Fatal("the first attempt succeeded")
	}
	e.rec.DeliverHook = nil
	if r, st := e.cancel(t, adminKey, res.BatchID); r.status != 200 || st.Pending != 2 {
		t.Fatalf("cancel = %d %s; the started chunk should still be pending", r.status, r.raw)
	}
	must(t, e.svc.Processor().ProcessTask(t.Context(), task))
	if _, st := e.status(t, adminKey, res.BatchID); st.Canceled != 2 || st.Sent != 0 || st.Status != "canceled" {
		t.Errorf("after the retry: %+v", st)
	}
	if n := len(e.rec.Messages()); n != 0 {
		t.Errorf("the retry delivered %d messages after the cancel", n)
	}
}

// TestCancelWhileRunning cancels a batch on a real asynq server mid-way;
// every recipient ends sent or canceled, none pending, none twice.
func TestCancelWhileRunning(t *testing.T) {
	t.Parallel()
	e := newQueuedEnv(t, miniRedis(t), func(c *batch.Config) { c.ChunkSize = 1; c.Concurrency = 1 })
	cancelWhileRunning(t, e)
}

// cancelWhileRunning sends eight recipients, one chunk each, holds the
// first chunk in delivery, cancels, lets it go and checks the end: some
// sent, the rest canceled, none pending, and the deliveries match.
func cancelWhileRunning(t *testing.T, e *env) {
	t.Helper()
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.rec.DeliverHook = func(context.Context, []store.Message) error {
		once.Do(func() { close(started); <-release })
		return nil
	}
	res := accepted(t, e.post(t, adminKey, eightRecipients))
	<-started
	r, _ := e.cancel(t, adminKey, res.BatchID)
	close(release)
	if r.status != 200 {
		t.Fatalf("cancel = %d %s", r.status, r.raw)
	}
	st := e.waitFinished(t, adminKey, res.BatchID)
	if st.Status != "canceled" || st.Sent+st.Canceled != 8 || st.Pending != 0 || st.Sent == 0 || st.Canceled == 0 {
		t.Errorf("final %+v, want some sent, the rest canceled", st)
	}
	if n := len(e.rec.Messages()); n != st.Sent {
		t.Errorf("%d messages delivered, %d recorded sent", n, st.Sent)
	}
	if r, _ := e.cancel(t, adminKey, res.BatchID); r.status != 409 {
		t.Errorf("second cancel = %d %s", r.status, r.raw)
	}
}
