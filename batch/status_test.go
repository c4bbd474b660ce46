package batch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/internal/seed"
	"github.com/chatbatch/chatbatch/store"
)

func TestRecipients(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.ChunkSize = 3 })
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
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","paras":[`+strings.Join(paras, ",")+`]}`))

	// Before processing, everyone is pending, in para order.
	_, page := e.Recipients(t, res.BatchID, "")
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

	bt.Must(t, e.St.DeleteRoom(t.Context(), bt.TestApp, "room-003"))
	tasks := e.Enq.All()
	// Process chunks 0 and 2 only: the batch is half done.
	for _, no := range []int{0, 2} {
		bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), tasks[no].Task))
	}
	_, page = e.Recipients(t, res.BatchID, "?status=pending")
	if page.Total != 4 || len(page.Recipients) != 4 || page.Recipients[0].Index != 3 {
		t.Errorf("pending while running: %+v", page)
	}

	// Paging with a status filter stays stable while the batch runs: the
	// cursor is a para index.
	_, p1 := e.Recipients(t, res.BatchID, "?status=sent&limit=2")
	if len(p1.Recipients) != 2 || p1.NextOffset == nil || p1.Recipients[0].Index != 0 || p1.Recipients[1].Index != 1 {
		t.Fatalf("sent page 1 %+v", p1)
	}
	bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), tasks[1].Task))
	_, p2 := e.Recipients(t, res.BatchID, fmt.Sprintf("?status=sent&limit=2&offset=%d", *p1.NextOffset))
	if len(p2.Recipients) != 2 || p2.Recipients[0].Index != 2 || p2.Recipients[1].Index != 3 {
		t.Errorf("sent page 2 after more chunks finished: %+v", p2)
	}
	bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), tasks[3].Task))

	_, failed := e.Recipients(t, res.BatchID, "?status=failed")
	if failed.Total != 1 || len(failed.Recipients) != 1 || failed.Recipients[0].Index != 4 ||
		!strings.Contains(failed.Recipients[0].Error, "room-003") {
		t.Errorf("failed recipients %+v", failed)
	}
	_, all := e.Recipients(t, res.BatchID, "?offset=6&limit=3")
	if len(all.Recipients) != 3 || all.Recipients[0].Index != 6 || all.NextOffset == nil || *all.NextOffset != 9 {
		t.Errorf("offset 6 limit 3: %+v", all)
	}
	r0 := all.Recipients[1] // index 7: room wins
	if r0.Room != "room-001" || r0.MessageID != res.BatchID+"-7" || r0.Status != "sent" {
		t.Errorf("recipient 7 after sending: %+v", r0)
	}
	_, direct := e.Recipients(t, res.BatchID, "?limit=1")
	if direct.Recipients[0].Room != store.DirectRoomID("system", "user-a") {
		t.Errorf("a receiver's room is the one-on-one room: %+v", direct.Recipients[0])
	}
	_, end := e.Recipients(t, res.BatchID, "?offset=10")
	if len(end.Recipients) != 0 || end.NextOffset != nil {
		t.Errorf("past the end: %+v", end)
	}
	_, capped := e.Recipients(t, res.BatchID, "?limit=5000")
	if capped.Limit != 1000 {
		t.Errorf("limit 5000 is capped to %d, want 1000", capped.Limit)
	}

	for _, c := range []struct{ query, want string }{
		{"?limit=0", "limit"}, {"?limit=x", "limit"}, {"?offset=-1", "offset"}, {"?offset=", "offset"},
		{"?status=done", "status"}, {"?page=2", `unknown query parameter "page"`}, {"?limit=1&limit=2", "limit"},
		{"?limit=%zz", "malformed"}, {"?offset=%%%x", "malformed"}, {"?limit=5&status=%", "malformed"},
	} {
		r, _ := e.Recipients(t, res.BatchID, c.query)
		if r.Status != 400 || r.Error.Code != "INVALID_PARAMETER" || !strings.Contains(r.Error.Message, c.want) {
			t.Errorf("recipients%s = %d %s, want 400 INVALID_PARAMETER naming %s", c.query, r.Status, r.Raw, c.want)
		}
	}
	if r := e.Do(t, http.MethodGet, "/messages/batch/"+res.BatchID+"/recipients", bt.OtherKey, "", nil); r.Status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
		t.Errorf("another app's recipients = %d %s", r.Status, r.Raw)
	}
	if r := e.Do(t, http.MethodGet, "/messages/batch/"+res.BatchID+"?verbose=1", bt.AdminKey, "", nil); r.Status != 400 || r.Error.Code != "INVALID_PARAMETER" {
		t.Errorf("status with an unknown parameter = %d %s", r.Status, r.Raw)
	}
	// A query string that does not decode is refused everywhere, not
	// read as if the broken part were absent.
	for _, path := range []string{"/messages/batch?cursor=%%%x", "/messages/batch?limit=%zz", "/messages/batch/" + res.BatchID + "?%zz"} {
		if r := e.Do(t, http.MethodGet, path, bt.AdminKey, "", nil); r.Status != 400 || r.Error.Code != "INVALID_PARAMETER" || !strings.Contains(r.Error.Message, "malformed") {
			t.Errorf("GET %s = %d %s, want 400 INVALID_PARAMETER (malformed)", path, r.Status, r.Raw)
		}
	}
	if r := e.Do(t, http.MethodPost, "/messages/batch?dryRun=%zz", bt.AdminKey, bt.JSONContentType, strings.NewReader(seed.Rooms)); r.Status != 400 || r.Error.Code != "INVALID_PARAMETER" {
		t.Errorf("POST with a malformed query = %d %s", r.Status, r.Raw)
	}
}

// TestCancel cancels a batch while one chunk is being delivered: that
// chunk finishes, the chunks not started are never sent.
func TestCancel(t *testing.T) {
	t.Parallel()
	var done []batch.BatchSummary
	var mu sync.Mutex
	e := bt.NewEnv(t, func(c *batch.Config) {
		c.ChunkSize = 2
		c.OnBatchDone = func(_ context.Context, s batch.BatchSummary) {
			mu.Lock()
			defer mu.Unlock()
			done = append(done, s)
		}
	})
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.EightRecipients))
	tasks := e.Enq.All()
	bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), tasks[0].Task))

	inDeliver, release := make(chan struct{}), make(chan struct{})
	e.Rec.DeliverHook = func(context.Context, []store.Message) error {
		close(inDeliver)
		<-release
		return nil
	}
	chunk1 := make(chan error, 1)
	go func() { chunk1 <- e.Svc.Processor().ProcessTask(context.Background(), tasks[1].Task) }()
	<-inDeliver

	r, st := e.Cancel(t, bt.AdminKey, res.BatchID)
	if r.Status != 200 || st.Status != "canceled" || st.Canceled != 4 || st.Sent != 2 || st.Pending != 2 {
		t.Fatalf("DELETE while chunk 1 is delivered = %d %s", r.Status, r.Raw)
	}
	close(release)
	bt.Must(t, <-chunk1)
	e.Rec.DeliverHook = nil
	for _, q := range tasks[2:] {
		bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), q.Task))
	}
	_, st = e.Status(t, bt.AdminKey, res.BatchID)
	if st.Status != "canceled" || st.Sent != 4 || st.Canceled != 4 || st.Failed != 0 || st.Pending != 0 || st.FinishedAt == nil {
		t.Errorf("final status %+v, want 4 sent (chunks 0 and 1), 4 canceled", st)
	}
	if n := len(e.Rec.Messages()); n != 4 {
		t.Errorf("%d messages delivered, want the 4 of chunks 0 and 1", n)
	}
	_, page := e.Recipients(t, res.BatchID, "?status=canceled")
	if len(page.Recipients) != 4 || page.Recipients[0].Index != 4 {
		t.Errorf("canceled recipients %+v", page)
	}
	mu.Lock()
	if len(done) != 1 || done[0].Status != store.StatusCanceled || done[0].Canceled != 4 {
		t.Errorf("OnBatchDone calls %+v, want one with status canceled", done)
	}
	mu.Unlock()

	r, _ = e.Cancel(t, bt.AdminKey, res.BatchID)
	if r.Status != 409 || r.Error.Code != "BATCH_FINISHED" || !strings.Contains(r.Error.Message, "canceled") {
		t.Errorf("canceling a finished batch = %d %s", r.Status, r.Raw)
	}
}

func TestCancelErrors(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, validBody))
	if r, _ := e.Cancel(t, bt.OtherKey, res.BatchID); r.Status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
		t.Errorf("another app's DELETE = %d %s", r.Status, r.Raw)
	}
	if r, _ := e.Cancel(t, bt.AdminKey, "batch-nope"); r.Status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
		t.Errorf("DELETE of an unknown batch = %d %s", r.Status, r.Raw)
	}
	if r := e.Do(t, http.MethodDelete, "/messages/batch/"+res.BatchID+"?force=1", bt.AdminKey, "", nil); r.Status != 400 || r.Error.Code != "INVALID_PARAMETER" {
		t.Errorf("DELETE with an unknown parameter = %d %s", r.Status, r.Raw)
	}
	e.ProcessAll(t)
	if r, _ := e.Cancel(t, bt.AdminKey, res.BatchID); r.Status != 409 || r.Error.Code != "BATCH_FINISHED" || !strings.Contains(r.Error.Message, "completed") {
		t.Errorf("canceling a completed batch = %d %s", r.Status, r.Raw)
	}
}

func TestCancelScheduled(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	e := bt.NewEnv(t, func(c *batch.Config) {
		c.OnBatchDone = func(context.Context, batch.BatchSummary) { calls.Add(1) }
	})
	at := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","sendAt":"`+at+`","paras":[{"receiver":"user-a"},{"room":"room-001"}]}`))
	if _, st := e.Status(t, bt.AdminKey, res.BatchID); st.Status != "scheduled" {
		t.Fatalf("status %s, want scheduled", st.Status)
	}
	r, st := e.Cancel(t, bt.AdminKey, res.BatchID)
	if r.Status != 200 || st.Status != "canceled" || st.Canceled != 2 || st.Pending != 0 || st.FinishedAt == nil {
		t.Errorf("DELETE of a scheduled batch = %d %s", r.Status, r.Raw)
	}
	// When its time comes, the task finds nothing to do.
	e.ProcessAll(t)
	if n := len(e.Rec.Messages()); n != 0 {
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
	e := bt.NewEnv(t, nil)
	e.Rec.DeliverHook = func(context.Context, []store.Message) error { return errors.New("hub down") }
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, seed.Template))
	task := e.Enq.All()[0].Task
	if err := e.Svc.Processor().ProcessTask(t.Context(), task); err == nil {
		t.Fatal("the first attempt succeeded")
	}
	e.Rec.DeliverHook = nil
	if r, st := e.Cancel(t, bt.AdminKey, res.BatchID); r.Status != 200 || st.Pending != 2 {
		t.Fatalf("cancel = %d %s; the started chunk should still be pending", r.Status, r.Raw)
	}
	bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), task))
	if _, st := e.Status(t, bt.AdminKey, res.BatchID); st.Canceled != 2 || st.Sent != 0 || st.Status != "canceled" {
		t.Errorf("after the retry: %+v", st)
	}
	if n := len(e.Rec.Messages()); n != 0 {
		t.Errorf("the retry delivered %d messages after the cancel", n)
	}
}

// TestListBatches: the app's batches newest first, filtered, paged with
// a cursor that holds while new batches arrive; another app's are not
// listed; a store that cannot list answers 501.
func TestListBatches(t *testing.T) {
	t.Parallel()
	var clock atomic.Pointer[time.Time]
	now := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	clock.Store(&now)
	e := bt.NewEnv(t, func(c *batch.Config) { c.Now = func() time.Time { return *clock.Load() } })
	var ids []string
	for i := range 5 {
		at := now.Add(time.Duration(i) * time.Minute)
		clock.Store(&at)
		ids = append(ids, bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","paras":[{"receiver":"user-a"}]}`)).BatchID)
	}
	bt.Accepted(t, e.Post(t, bt.OtherKey, `{"message":"m","messageType":"text","paras":[{"receiver":"user-a"}]}`))
	e.Cancel(t, bt.AdminKey, ids[1])
	list := func(query string) ([]string, string) {
		t.Helper()
		r := e.Do(t, http.MethodGet, "/messages/batch"+query, bt.AdminKey, "", nil)
		if r.Status != 200 {
			t.Fatalf("GET /messages/batch%s = %d %s", query, r.Status, r.Raw)
		}
		var res struct {
			Batches    []bt.BatchStatus `json:"batches"`
			NextCursor string           `json:"nextCursor"`
		}
		bt.Must(t, json.Unmarshal(r.Result, &res))
		var got []string
		for _, b := range res.Batches {
			got = append(got, b.BatchID)
		}
		return got, res.NextCursor
	}
	got, next := list("")
	if !slices.Equal(got, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}) || next != "" {
		t.Errorf("all: %v (next %q)", got, next)
	}
	page1, next := list("?limit=2")
	later := now.Add(time.Hour)
	clock.Store(&later)
	newest := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","paras":[{"receiver":"user-a"}]}`)).BatchID
	page2, next2 := list("?limit=2&cursor=" + next)
	page3, next3 := list("?limit=2&cursor=" + next2)
	if !slices.Equal(page1, []string{ids[4], ids[3]}) || !slices.Equal(page2, []string{ids[2], ids[1]}) || !slices.Equal(page3, []string{ids[0]}) || next3 != "" {
		t.Errorf("pages %v %v %v (next %q)", page1, page2, page3, next3)
	}
	if got, _ := list("?limit=1"); !slices.Equal(got, []string{newest}) {
		t.Errorf("the newest batch first: %v", got)
	}
	if got, _ := list("?status=canceled&status=completed"); !slices.Equal(got, []string{ids[1]}) {
		t.Errorf("canceled or completed: %v", got)
	}
	if got, _ := list("?createdAfter=2026-04-10T09:00:30Z&createdBefore=2026-04-10T09:03:00Z"); !slices.Equal(got, []string{ids[2], ids[1]}) {
		t.Errorf("created between: %v", got)
	}

	failing := bt.NewEnv(t, func(c *batch.Config) {
		c.Store = &bt.FailingStore{Store: c.Store, Fail: map[string]int{"ListBatches": -1}}
	})
	if r := failing.Do(t, http.MethodGet, "/messages/batch", bt.AdminKey, "", nil); r.Status != 503 || r.Error == nil || r.Error.Code != "UNAVAILABLE" || r.Header.Get("Retry-After") == "" {
		t.Errorf("listing on a store that fails = %d %s, want 503 UNAVAILABLE with Retry-After", r.Status, r.Raw)
	}
}

// batchMessagesPage is the result of GET /messages/batch?batchID=.
type batchMessagesPage struct {
	Count int `json:"count"`
	Data  []struct {
		ID     string `json:"_id"`
		Room   string `json:"room"`
		Sender struct {
			ID string `json:"_id"`
		} `json:"sender"`
		Receiver    string          `json:"receiver"`
		Message     string          `json:"message"`
		MessageType string          `json:"messageType"`
		Extra       json.RawMessage `json:"extra"`
		CreatedAtMS int64           `json:"createdAtMS"`
		BatchID     string          `json:"batchID"`
		Index       int             `json:"index"`
		Mentions    []string        `json:"mentions"`
	} `json:"data"`
	NextCursor string `json:"nextCursor"`
}

// TestBatchMessages: IMKit's older GET /messages/batch?batchID= lists
// the batch's messages newest first in pages; recipients without a
// message are skipped.
func TestBatchMessages(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.ChunkSize = 2; c.ExtraFields = []string{"mentions"} })
	body := `{"message":"Hi $n$","messageType":"text","mentions":["user-a"],"extra":{"k":"$n$"},"paras":[
		{"receiver":"user-a","$n$":"0"},{"receiver":"user-b","$n$":"1"},{"room":"room-001","$n$":"2"},
		{"receiver":"user-c","$n$":"3"},{"room":"room-002","$n$":"4"},{"receiver":"user-a","$n$":"5"},{"room":"room-003","$n$":"6"}]}`
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, body))
	bt.Must(t, e.St.DeleteRoom(t.Context(), bt.TestApp, "room-002")) // para 4 will fail
	e.ProcessAll(t)
	get := func(query string) batchMessagesPage {
		t.Helper()
		r := e.Do(t, http.MethodGet, "/messages/batch?batchID="+res.BatchID+query, bt.AdminKey, "", nil)
		if r.Status != 200 || r.RC != 0 {
			t.Fatalf("GET ?batchID=%s%s = %d %s", res.BatchID, query, r.Status, r.Raw)
		}
		var p batchMessagesPage
		bt.Must(t, json.Unmarshal(r.Result, &p))
		if p.Count != len(p.Data) {
			t.Errorf("count %d for %d messages", p.Count, len(p.Data))
		}
		return p
	}
	var got []int
	cursor, pages := "", 0
	for {
		p := get("&limit=2" + cursor)
		pages++
		for _, m := range p.Data {
			got = append(got, m.Index)
		}
		if p.NextCursor == "" || pages > 5 {
			break
		}
		cursor = "&cursor=" + p.NextCursor
	}
	if !slices.Equal(got, []int{6, 5, 3, 2, 1, 0}) {
		t.Errorf("indexes over the pages %v, want 6 5 3 2 1 0 (4 failed)", got)
	}
	all := get("")
	if len(all.Data) != 6 || all.NextCursor != "" {
		t.Fatalf("one page: %d messages, next %q", len(all.Data), all.NextCursor)
	}
	m := all.Data[5] // para 0
	if m.ID != res.BatchID+"-0" || m.Room != store.DirectRoomID("system", "user-a") || m.Sender.ID != "system" || m.Receiver != "user-a" ||
		m.Message != "Hi 0" || m.MessageType != "text" || string(m.Extra) != `{"k":"0"}` || m.BatchID != res.BatchID ||
		m.CreatedAtMS == 0 || !slices.Equal(m.Mentions, []string{"user-a"}) {
		t.Errorf("message %+v", m)
	}
	if all.Data[0].Room != "room-003" || all.Data[0].Receiver != "" {
		t.Errorf("room message %+v", all.Data[0])
	}

	for _, c := range []struct {
		query, key string
		status     int
		code       string
	}{
		{"?batchID=batch-20260101-nope", bt.AdminKey, 404, "BATCH_NOT_FOUND"},
		{"?batchID=" + res.BatchID, bt.OtherKey, 404, "BATCH_NOT_FOUND"},
		{"?batchID=", bt.AdminKey, 400, "INVALID_PARAMETER"},
		{"?batchID=" + res.BatchID + "&cursor=bm90LWEtY3Vyc29y", bt.AdminKey, 400, "INVALID_PARAMETER"},
		{"?batchID=" + res.BatchID + "&limit=0", bt.AdminKey, 400, "INVALID_PARAMETER"},
		{"?batchID=" + res.BatchID + "&status=sent", bt.AdminKey, 400, "INVALID_PARAMETER"},
		{"?batchID=" + res.BatchID + "&batchID=x", bt.AdminKey, 400, "INVALID_PARAMETER"},
	} {
		r := e.Do(t, http.MethodGet, "/messages/batch"+c.query, c.key, "", nil)
		if r.Status != c.status || r.Error == nil || r.Error.Code != c.code {
			t.Errorf("GET %s = %d %s, want %d %s", c.query, r.Status, r.Raw, c.status, c.code)
		}
	}

	// A store that cannot read messages back: 501.
	plain := bt.NewEnv(t, func(c *batch.Config) { c.Messages = messagesOnly{c.Store} })
	id := bt.Accepted(t, plain.Post(t, bt.AdminKey, seed.Broadcast)).BatchID
	if r := plain.Do(t, http.MethodGet, "/messages/batch?batchID="+id, bt.AdminKey, "", nil); r.Status != 501 || r.Error.Code != "NOT_SUPPORTED" {
		t.Errorf("without a MessageReader: %d %s", r.Status, r.Raw)
	}
}

// messagesOnly hides every method of a store but store.Messages'.
type messagesOnly struct{ store.Messages }

// TestStatusShowsContent: the answers about one batch (GET, DELETE,
// recall) carry what it sends — the template, messageType, push, extra,
// the allow-listed fields — and every answer, the list's too, who sends
// it, who created it and its pace; the list leaves the content out.
func TestStatusShowsContent(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) {
		c.ExtraFields = []string{"originalUrl"}
		c.AuthenticateRequest = bt.UserHeaderAuth
	})
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	body := fmt.Sprintf(`{"message":"Hi $name$","messageType":"image","sender":"user-d","push":true,"extra":{"coupon":"$code$"},`+
		`"originalUrl":"https://example.com/a.png","sendAt":%q,"ratePerMinute":60,"paras":[{"receiver":"user-a","$name$":"A","$code$":"C1"}]}`, at.Format(time.RFC3339))
	id := bt.Accepted(t, e.Post(t, bt.AdminKey, body)).BatchID
	type content struct {
		Sender, CreatedBy, Message, MessageType string
		Push                                    *bool
		Extra                                   map[string]any
		Fields                                  map[string]any
		RatePerMinute                           int
		SendAt                                  *time.Time
	}
	get := func(r *bt.Response) content {
		t.Helper()
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		var c content
		bt.Must(t, json.Unmarshal(r.Result, &c))
		return c
	}
	c := get(e.Do(t, "GET", "/messages/batch/"+id, bt.AdminKey, "", nil))
	if c.Sender != "user-d" || c.CreatedBy != "" || c.Message != "Hi $name$" || c.MessageType != "image" || c.Push == nil || !*c.Push ||
		c.Extra["coupon"] != "$code$" || c.Fields["originalUrl"] != "https://example.com/a.png" || c.RatePerMinute != 60 || c.SendAt == nil || !c.SendAt.Equal(at) {
		t.Errorf("GET: %+v", c)
	}
	if c := get(e.Do(t, "DELETE", "/messages/batch/"+id, bt.AdminKey, "", nil)); c.Message != "Hi $name$" || c.Sender != "user-d" {
		t.Errorf("DELETE: %+v", c)
	}
	// A user principal's batch: created by that user, sent as that user;
	// no push is false, not absent.
	r := e.DoWith(t, "POST", "/messages/batch", "", strings.NewReader(`{"message":"m","messageType":"text","paras":[{"receiver":"user-b"}]}`), map[string]string{"X-Test-User": "user-a"})
	uid := bt.Accepted(t, r).BatchID
	c = get(e.DoWith(t, "GET", "/messages/batch/"+uid, "", nil, map[string]string{"X-Test-User": "user-a"}))
	if c.Sender != "user-a" || c.CreatedBy != "user-a" || c.Push == nil || *c.Push || c.Extra != nil || c.Fields != nil || c.RatePerMinute != 0 {
		t.Errorf("user's batch: %+v", c)
	}
	e.ProcessAll(t)
	if _, rc := e.Recall(t, bt.AdminKey, uid); rc.Status != "recalled" {
		t.Errorf("recall: %+v", rc)
	}
	if c := get(e.Do(t, "POST", "/messages/batch/"+uid+"/recall", bt.AdminKey, "", nil)); c.Message != "m" || c.CreatedBy != "user-a" {
		t.Errorf("recall: %+v", c)
	}
	// The list: who and how fast, not what.
	var list struct{ Batches []map[string]any }
	bt.Must(t, json.Unmarshal(e.Do(t, "GET", "/messages/batch", bt.AdminKey, "", nil).Result, &list))
	if len(list.Batches) != 2 {
		t.Fatalf("list %+v", list)
	}
	for _, b := range list.Batches {
		for _, k := range []string{"message", "messageType", "push", "extra", "fields"} {
			if _, ok := b[k]; ok {
				t.Errorf("the list shows %s: %v", k, b)
			}
		}
		if b["batchID"] == id && (b["sender"] != "user-d" || b["ratePerMinute"] != 60.0 || b["createdBy"] != nil) {
			t.Errorf("list entry %v", b)
		}
		if b["batchID"] == uid && (b["sender"] != "user-a" || b["createdBy"] != "user-a") {
			t.Errorf("list entry %v", b)
		}
	}
}
