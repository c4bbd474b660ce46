package batch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

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

func TestDryRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	roomsBefore, err := e.st.UserRooms(t.Context(), testApp, "user-b")
	must(t, err)
	body := `{"message":"Hi $name$","messageType":"text","extra":{"o":"$id$"},"paras":[
		{"receiver":"user-a","$name$":"A","$id$":1},{"room":"room-001","$name$":"room"},{"receiver":"user-b","$name$":"B"},{"receiver":"user-c","$name$":"C"}]}`
	r := e.do(t, http.MethodPost, "/messages/batch?dryRun=true", adminKey, jsonCT, strings.NewReader(body))
	if r.status != 200 {
		t.Fatalf("dry run = %d %s", r.status, r.raw)
	}
	var res struct {
		DryRun  bool
		Count   int
		Preview []struct {
			Index                   int
			Receiver, Room, Message string
			Extra                   json.RawMessage
		}
	}
	must(t, json.Unmarshal(r.Result, &res))
	if !res.DryRun || res.Count != 4 || len(res.Preview) != 3 {
		t.Fatalf("dry run result %s", r.Result)
	}
	p0 := res.Preview[0]
	if p0.Message != "Hi A" || p0.Receiver != "user-a" || p0.Room != store.DirectRoomID("system", "user-a") || string(p0.Extra) != `{"o":"1"}` {
		t.Errorf("preview 0 = %+v", p0)
	}
	if p1 := res.Preview[1]; p1.Room != "room-001" || p1.Message != "Hi room" || string(p1.Extra) != `{"o":"$id$"}` {
		t.Errorf("preview 1 = %+v", p1)
	}
	e.assertNothingHappened(t)
	// Not even the one-on-one rooms are created.
	if rooms, _ := e.st.UserRooms(t.Context(), testApp, "user-b"); len(rooms) != len(roomsBefore) {
		t.Errorf("a dry run changed user-b's rooms: %q", rooms)
	}

	r = e.do(t, http.MethodPost, "/messages/batch?dryRun=true&previewLimit=50", adminKey, jsonCT, strings.NewReader(body))
	must(t, json.Unmarshal(r.Result, &res))
	if len(res.Preview) != 4 {
		t.Errorf("previewLimit 50 (capped to 20) shows %d of 4", len(res.Preview))
	}
	// Every check still runs.
	r = e.do(t, http.MethodPost, "/messages/batch?dryRun=true", adminKey, jsonCT, strings.NewReader(`{"message":"m","messageType":"text","paras":[{"receiver":"ghost"}]}`))
	if r.status != 404 || r.Error.Code != "CLIENT_NOT_FOUND" {
		t.Errorf("dry run with a missing receiver = %d %s", r.status, r.raw)
	}
	for _, q := range []string{"?dryRun=yes", "?previewLimit=-1", "?dry=true"} {
		r = e.do(t, http.MethodPost, "/messages/batch"+q, adminKey, jsonCT, strings.NewReader(body))
		if r.status != 400 || r.Error.Code != "INVALID_PARAMETER" {
			t.Errorf("POST %s = %d %s, want 400 INVALID_PARAMETER", q, r.status, r.raw)
		}
	}
	e.assertNothingHappened(t)
}

func TestStrictVariablesField(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	r := e.post(t, adminKey, `{"message":"Hi $name$","messageType":"text","strictVariables":true,"paras":[{"receiver":"user-a"}]}`)
	if r.status != 400 || r.Error.Code != "MISSING_VARIABLE" || !strings.Contains(r.raw, `"$name$"`) {
		t.Errorf("strictVariables in the body = %d %s", r.status, r.raw)
	}
	e.assertNothingHappened(t)
	accepted(t, e.post(t, adminKey, `{"message":"Hi $name$","messageType":"text","strictVariables":false,"paras":[{"receiver":"user-a"}]}`))
}

func TestSendAt(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	e := newEnv(t, func(c *batch.Config) { c.Now = func() time.Time { return now } })
	at := now.Add(2 * time.Hour)
	for _, sendAt := range []string{`"` + at.Format(time.RFC3339) + `"`, `"` + at.In(time.FixedZone("TPE", 8*3600)).Format(time.RFC3339) + `"`, fmt.Sprint(at.UnixMilli())} {
		res := accepted(t, e.post(t, adminKey, `{"message":"m","messageType":"text","sendAt":`+sendAt+`,"paras":[{"receiver":"user-a"}]}`))
		r, st := e.status(t, adminKey, res.BatchID)
		var raw struct{ SendAt time.Time }
		must(t, json.Unmarshal(r.Result, &raw))
		if st.Status != "scheduled" || !raw.SendAt.Equal(at) {
			t.Errorf("sendAt %s: status %s at %v, want scheduled at %v", sendAt, st.Status, raw.SendAt, at)
		}
		tasks := e.enq.all()
		last := tasks[len(tasks)-1]
		var processAt time.Time
		for _, o := range last.opts {
			if o.Type() == asynq.ProcessAtOpt {
				processAt = o.Value().(time.Time)
			}
		}
		if !processAt.Equal(at) {
			t.Errorf("sendAt %s: task ProcessAt %v, want %v", sendAt, processAt, at)
		}
	}
	// In the past: sent now.
	res := accepted(t, e.post(t, adminKey, `{"message":"m","messageType":"text","sendAt":"2020-01-01T00:00:00Z","paras":[{"receiver":"user-a"}]}`))
	if _, st := e.status(t, adminKey, res.BatchID); st.Status != "queued" {
		t.Errorf("sendAt in the past: status %s, want queued", st.Status)
	}
	for _, c := range []struct{ sendAt, want string }{
		{`"` + now.Add(31*24*time.Hour).Format(time.RFC3339) + `"`, "more than 720h0m0s ahead"},
		{`"tomorrow"`, `sendAt: "tomorrow" is not an RFC 3339 time`},
		{`"2026-04-10 14:00"`, "not an RFC 3339 time"},
		{`1.5`, "sendAt: 1.5 is not a time in Unix milliseconds"},
		{`true`, "sendAt: must be an RFC 3339 string or Unix milliseconds, not a boolean"},
	} {
		r := e.post(t, adminKey, `{"message":"m","messageType":"text","sendAt":`+c.sendAt+`,"paras":[{"receiver":"user-a"}]}`)
		if r.status != 400 || r.Error.Code != "INVALID_BODY" || !strings.Contains(r.Error.Message, c.want) {
			t.Errorf("sendAt %s = %d %s, want 400 naming %q", c.sendAt, r.status, r.raw, c.want)
		}
	}
}

// TestScheduledBatchRuns sends a batch scheduled a second ahead through
// a real asynq server.
func TestScheduledBatchRuns(t *testing.T) {
	t.Parallel()
	e := newQueuedEnv(t, miniRedis(t), nil)
	at := time.Now().Add(1500 * time.Millisecond).UTC()
	res := accepted(t, e.post(t, adminKey, `{"message":"later","messageType":"text","sendAt":"`+at.Format(time.RFC3339Nano)+`","paras":[{"receiver":"user-a"}]}`))
	if _, st := e.status(t, adminKey, res.BatchID); st.Status != "scheduled" {
		t.Errorf("status before sendAt = %s", st.Status)
	}
	e.waitFinished(t, adminKey, res.BatchID)
	// asynq keeps scheduled times in whole seconds and may fire up to a
	// second early.
	if msgs := e.rec.Messages(); len(msgs) != 1 || msgs[0].CreatedAt.Before(at.Add(-time.Second)) {
		t.Errorf("the scheduled message was sent at %v, sendAt %v", msgs, at)
	}
}

// TestOnBatchDoneOnce runs two processors (two Services on one store and
// one Redis queue, as two worker processes would be) and checks that the
// completion callback fires exactly once per batch.
func TestOnBatchDoneOnce(t *testing.T) {
	t.Parallel()
	redisBackends(t, func(t *testing.T, redis asynq.RedisConnOpt) {
		var mu sync.Mutex
		calls := map[string][]batch.BatchSummary{}
		var callers [2]atomic.Int32
		onDone := func(worker int) func(context.Context, batch.BatchSummary) {
			return func(_ context.Context, s batch.BatchSummary) {
				callers[worker].Add(1)
				mu.Lock()
				defer mu.Unlock()
				calls[s.BatchID] = append(calls[s.BatchID], s)
			}
		}
		e := newQueuedEnv(t, redis, func(c *batch.Config) {
			c.ChunkSize = 2
			c.Concurrency = 3
			c.OnBatchDone = onDone(0)
		})
		second := e.cfg
		second.OnBatchDone = onDone(1)
		startService(t, second)

		const batches = 6
		var ids []string
		for range batches {
			res := accepted(t, e.post(t, adminKey, `{"message":"m","messageType":"text","paras":[
				{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"room":"room-001"},{"room":"room-002"},{"room":"room-003"},{"receiver":"user-d"}]}`))
			ids = append(ids, res.BatchID)
		}
		for _, id := range ids {
			e.waitFinished(t, adminKey, id)
		}
		time.Sleep(100 * time.Millisecond) // a duplicate call would come right after the last chunk
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			got := calls[id]
			if len(got) != 1 {
				t.Errorf("OnBatchDone for %s ran %d times, want once", id, len(got))
				continue
			}
			if s := got[0]; s.Status != store.StatusCompleted || s.Sent != 7 || s.Count != 7 || s.AppID != testApp || s.FinishedAt.IsZero() {
				t.Errorf("summary %+v", s)
			}
		}
		t.Logf("callbacks by worker: %d, %d", callers[0].Load(), callers[1].Load())
	})
}
