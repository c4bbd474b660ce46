package batch_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
	"github.com/hibiken/asynq"
)

func TestDryRun(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	roomsBefore, err := e.St.UserRooms(t.Context(), bt.TestApp, "user-b")
	bt.Must(t, err)
	body := `{"message":"Hi $name$","messageType":"text","extra":{"o":"$id$"},"paras":[
		{"receiver":"user-a","$name$":"A","$id$":1},{"room":"room-001","$name$":"room"},{"receiver":"user-b","$name$":"B"},{"receiver":"user-c","$name$":"C"}]}`
	r := e.Do(t, http.MethodPost, "/messages/batch?dryRun=true", bt.AdminKey, bt.JSONContentType, strings.NewReader(body))
	if r.Status != 200 {
		t.Fatalf("dry run = %d %s", r.Status, r.Raw)
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
	bt.Must(t, json.Unmarshal(r.Result, &res))
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
	e.AssertNothingHappened(t)
	// Not even the one-on-one rooms are created.
	if rooms, _ := e.St.UserRooms(t.Context(), bt.TestApp, "user-b"); len(rooms) != len(roomsBefore) {
		t.Errorf("a dry run changed user-b's rooms: %q", rooms)
	}

	r = e.Do(t, http.MethodPost, "/messages/batch?dryRun=true&previewLimit=50", bt.AdminKey, bt.JSONContentType, strings.NewReader(body))
	bt.Must(t, json.Unmarshal(r.Result, &res))
	if len(res.Preview) != 4 {
		t.Errorf("previewLimit 50 (capped to 20) shows %d of 4", len(res.Preview))
	}
	// Every check still runs.
	r = e.Do(t, http.MethodPost, "/messages/batch?dryRun=true", bt.AdminKey, bt.JSONContentType, strings.NewReader(`{"message":"m","messageType":"text","paras":[{"receiver":"ghost"}]}`))
	if r.Status != 404 || r.Error.Code != "CLIENT_NOT_FOUND" {
		t.Errorf("dry run with a missing receiver = %d %s", r.Status, r.Raw)
	}
	for _, q := range []string{"?dryRun=yes", "?previewLimit=-1", "?dry=true"} {
		r = e.Do(t, http.MethodPost, "/messages/batch"+q, bt.AdminKey, bt.JSONContentType, strings.NewReader(body))
		if r.Status != 400 || r.Error.Code != "INVALID_PARAMETER" {
			t.Errorf("POST %s = %d %s, want 400 INVALID_PARAMETER", q, r.Status, r.Raw)
		}
	}
	e.AssertNothingHappened(t)
}

func TestStrictVariablesField(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	r := e.Post(t, bt.AdminKey, `{"message":"Hi $name$","messageType":"text","strictVariables":true,"paras":[{"receiver":"user-a"}]}`)
	if r.Status != 400 || r.Error.Code != "MISSING_VARIABLE" || !strings.Contains(r.Raw, `"$name$"`) {
		t.Errorf("strictVariables in the body = %d %s", r.Status, r.Raw)
	}
	e.AssertNothingHappened(t)
	bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"Hi $name$","messageType":"text","strictVariables":false,"paras":[{"receiver":"user-a"}]}`))
}

func TestSendAt(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	e := bt.NewEnv(t, func(c *batch.Config) { c.Now = func() time.Time { return now } })
	at := now.Add(2 * time.Hour)
	for _, sendAt := range []string{`"` + at.Format(time.RFC3339) + `"`, `"` + at.In(time.FixedZone("TPE", 8*3600)).Format(time.RFC3339) + `"`, fmt.Sprint(at.UnixMilli())} {
		res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","sendAt":`+sendAt+`,"paras":[{"receiver":"user-a"}]}`))
		r, st := e.Status(t, bt.AdminKey, res.BatchID)
		var raw struct{ SendAt time.Time }
		bt.Must(t, json.Unmarshal(r.Result, &raw))
		if st.Status != "scheduled" || !raw.SendAt.Equal(at) {
			t.Errorf("sendAt %s: status %s at %v, want scheduled at %v", sendAt, st.Status, raw.SendAt, at)
		}
		tasks := e.Enq.All()
		last := tasks[len(tasks)-1]
		var processAt time.Time
		for _, o := range last.Opts {
			if o.Type() == asynq.ProcessAtOpt {
				processAt = o.Value().(time.Time)
			}
		}
		if !processAt.Equal(at) {
			t.Errorf("sendAt %s: task ProcessAt %v, want %v", sendAt, processAt, at)
		}
	}
	// In the past: sent now.
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","sendAt":"2020-01-01T00:00:00Z","paras":[{"receiver":"user-a"}]}`))
	if _, st := e.Status(t, bt.AdminKey, res.BatchID); st.Status != "queued" {
		t.Errorf("sendAt in the past: status %s, want queued", st.Status)
	}
	for _, c := range []struct{ sendAt, want string }{
		{`"` + now.Add(31*24*time.Hour).Format(time.RFC3339) + `"`, "more than 720h0m0s ahead"},
		{`"tomorrow"`, `sendAt: "tomorrow" is not an RFC 3339 time`},
		{`"2026-04-10 14:00"`, "not an RFC 3339 time"},
		{`1.5`, "sendAt: 1.5 is not a time in Unix milliseconds"},
		{`true`, "sendAt: must be an RFC 3339 string or Unix milliseconds, not a boolean"},
	} {
		r := e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","sendAt":`+c.sendAt+`,"paras":[{"receiver":"user-a"}]}`)
		if r.Status != 400 || r.Error.Code != "INVALID_BODY" || !strings.Contains(r.Error.Message, c.want) {
			t.Errorf("sendAt %s = %d %s, want 400 naming %q", c.sendAt, r.Status, r.Raw, c.want)
		}
	}
}

func TestAcceptChunksAndTaskIDs(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.ChunkSize = 2 })
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","paras":[
		{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"room":"room-001"},{"room":"room-002"}]}`))
	if !regexp.MustCompile(`^batch-\d{8}-[a-z2-7]{10}$`).MatchString(res.BatchID) {
		t.Errorf("batch ID %q does not look like batch-YYYYMMDD-xxxxxxxxxx", res.BatchID)
	}
	if today := time.Now().UTC().Format("20060102"); !strings.Contains(res.BatchID, today) {
		t.Errorf("batch ID %q does not carry today's date %s", res.BatchID, today)
	}
	if res.Count != 5 {
		t.Errorf("count = %d, want 5", res.Count)
	}
	tasks := e.Enq.All()
	var ids []string
	for _, q := range tasks {
		ids = append(ids, q.ID)
		if q.Task.Type() != batch.TaskChunk {
			t.Errorf("task type %q", q.Task.Type())
		}
	}
	want := []string{res.BatchID + ":0", res.BatchID + ":1", res.BatchID + ":2"}
	if !slices.Equal(ids, want) {
		t.Errorf("task IDs = %q, want %q", ids, want)
	}
	// The chunks are durable in the store with the recipients inline.
	c, err := e.St.LoadChunk(t.Context(), store.ChunkRef{AppID: bt.TestApp, BatchID: res.BatchID, No: 2})
	bt.Must(t, err)
	if c.Start != 4 || len(c.Recipients) != 1 || c.Recipients[0].Room != "room-002" {
		t.Errorf("chunk 2 = %+v", c)
	}
}

func TestNonAdminSendsAsDefaultSender(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.DefaultSender = "user-d" })
	bt.Accepted(t, e.Post(t, bt.UserKey, `{"message":"m","messageType":"text","paras":[{"receiver":"user-a"}]}`))
	e.ProcessAll(t)
	msgs := e.Rec.Messages()
	if len(msgs) != 1 || msgs[0].Sender != "user-d" || msgs[0].RoomID != store.DirectRoomID("user-d", "user-a") {
		t.Errorf("messages %+v, want one from the default sender user-d", msgs)
	}
}

func TestConcurrentRequests(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	const n = 20
	ids := make(chan string, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			r := e.Post(t, bt.AdminKey, fmt.Sprintf(`{"message":"#%d","messageType":"text","paras":[{"receiver":"user-a"},{"room":"room-001"}]}`, i))
			if r.Status != 200 {
				errs <- fmt.Errorf("request %d: %s", i, r.Raw)
				ids <- ""
				return
			}
			var res bt.SendResult
			_ = json.Unmarshal(r.Result, &res)
			ids <- res.BatchID
		}()
	}
	seen := map[string]bool{}
	for range n {
		id := <-ids
		if id != "" && seen[id] {
			t.Errorf("batch ID %s handed out twice", id)
		}
		seen[id] = true
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e.ProcessAll(t)
	if got := len(e.Rec.Messages()); got != 2*n {
		t.Errorf("%d messages, want %d", got, 2*n)
	}
}
