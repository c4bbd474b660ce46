package batch_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
)

// TestMarkRead: the first read of each recipient counts, by its receiver
// (one-on-one) or by anyone but the sender (a room); the sender's reads,
// other users' reads of a one-on-one message, repeats, IDs that are no
// chatbatch message and reads after a recall do not; status, list and
// recipients report them.
func TestMarkRead(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.ChunkSize = 3 })
	id := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.EightRecipients)).BatchID
	msg := func(i int) string { return id + "-" + strconv.Itoa(i) }
	ctx := t.Context()
	if n, err := e.Svc.MarkRead(ctx, bt.TestApp, "user-a", msg(0)); err != nil || n != 0 {
		t.Errorf("a read before the message was sent: %d, %v; want 0, nil", n, err)
	}
	e.ProcessAll(t)

	mark := func(user string, want int, ids ...string) {
		t.Helper()
		n, err := e.Svc.MarkRead(ctx, bt.TestApp, user, ids...)
		if err != nil || n != want {
			t.Errorf("MarkRead(%s, %v) = %d, %v; want %d", user, ids, n, err, want)
		}
	}
	// 0 user-a, 1 user-b, 4 room-001, 5 room-002, 7 user-a: paras of EightRecipients.
	mark("user-a", 3, msg(0), msg(1), msg(4), msg(7), msg(0), "not-a-chatbatch-id", "batch-20260101-nosuchbatc-1", msg(99), id+"-01", id+"--1", "")
	mark("user-a", 0, msg(0), msg(4))
	mark("system", 0, msg(5)) // the sender
	mark("user-b", 1, msg(1), msg(4))
	if n, err := e.Svc.MarkRead(ctx, bt.OtherApp, "user-c", msg(2)); err != nil || n != 0 {
		t.Errorf("another app's read of the batch: %d, %v", n, err)
	}
	if _, err := e.Svc.MarkRead(ctx, bt.TestApp, "", msg(2)); err == nil {
		t.Error("MarkRead without a userID: no error")
	}

	_, st := e.Status(t, bt.AdminKey, id)
	if st.Read == nil || *st.Read != 4 || st.ReadRate == nil || *st.ReadRate != 0.5 {
		t.Errorf("status read %v, readRate %v; want 4 and 0.5", st.Read, st.ReadRate)
	}
	r := e.Do(t, http.MethodGet, "/messages/batch", bt.AdminKey, "", nil)
	var list struct {
		Batches []bt.BatchStatus `json:"batches"`
	}
	bt.Must(t, json.Unmarshal(r.Result, &list))
	if len(list.Batches) != 1 || list.Batches[0].Read == nil || *list.Batches[0].Read != 4 || *list.Batches[0].ReadRate != 0.5 {
		t.Errorf("the list's read and readRate: %s", r.Raw)
	}
	_, page := e.Recipients(t, id, "?read=true")
	var idx []int
	for _, rc := range page.Recipients {
		idx = append(idx, rc.Index)
		if rc.ReadAt == nil {
			t.Errorf("recipient %d listed as read without readAt", rc.Index)
		}
	}
	if page.Total != 4 || len(idx) != 4 || idx[0] != 0 || idx[1] != 1 || idx[2] != 4 || idx[3] != 7 {
		t.Errorf("read=true: total %d, indexes %v; want 4: [0 1 4 7]", page.Total, idx)
	}
	_, page = e.Recipients(t, id, "?read=false&limit=2")
	if page.Total != 4 || len(page.Recipients) != 2 || page.Recipients[0].Index != 2 || page.Recipients[0].ReadAt != nil || page.NextOffset == nil {
		t.Errorf("read=false: %+v; want the 4 sent and unread, from index 2", page)
	}
	_, page = e.Recipients(t, id, "")
	if page.Recipients[0].ReadAt == nil || page.Recipients[2].ReadAt != nil {
		t.Errorf("recipients without a filter: readAt of 0 %v, of 2 %v", page.Recipients[0].ReadAt, page.Recipients[2].ReadAt)
	}
	if r, _ := e.Recipients(t, id, "?read=true&status=sent"); r.Status != 400 || r.Error.Code != "INVALID_PARAMETER" {
		t.Errorf("read with status = %d %s", r.Status, r.Raw)
	}
	if r, _ := e.Recipients(t, id, "?read=maybe"); r.Status != 400 {
		t.Errorf("read=maybe = %d %s", r.Status, r.Raw)
	}

	// After a recall the reads before it stay counted; reads after it do not.
	if r, _ := e.Recall(t, bt.AdminKey, id); r.Status != 200 {
		t.Fatalf("recall = %d %s", r.Status, r.Raw)
	}
	mark("user-c", 0, msg(2))
	_, st = e.Status(t, bt.AdminKey, id)
	if *st.Read != 4 || *st.ReadRate != 0.5 {
		t.Errorf("after the recall: read %d, readRate %v; want 4 and 0.5 (of the 8 delivered)", *st.Read, *st.ReadRate)
	}
}

// TestReadsEndpoint: POST BasePath/-/reads records reads like MarkRead;
// an operator names the user, a signed-in user reports only its own.
func TestReadsEndpoint(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.AuthenticateRequest = bt.UserHeaderAuth })
	id := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.EightRecipients)).BatchID
	e.ProcessAll(t)
	recorded := func(r *bt.Response) int {
		t.Helper()
		if r.Status != 200 {
			t.Fatalf("reads = %d %s", r.Status, r.Raw)
		}
		var res struct{ Recorded int }
		bt.Must(t, json.Unmarshal(r.Result, &res))
		return res.Recorded
	}
	if n := recorded(e.Reads(t, bt.AdminKey, "user-a", id+"-0", id+"-1", "m-1")); n != 1 {
		t.Errorf("an operator's report for user-a recorded %d, want 1", n)
	}
	asUser := func(user, body string) *bt.Response {
		return e.DoWith(t, http.MethodPost, "/messages/batch/-/reads", "", strings.NewReader(body), map[string]string{"X-Test-User": user})
	}
	if n := recorded(asUser("user-b", `{"messageIDs":["`+id+`-1"]}`)); n != 1 {
		t.Errorf("user-b's own read recorded %d, want 1", n)
	}
	if r := asUser("user-b", `{"userID":"user-c","messageIDs":["`+id+`-2"]}`); r.Status != 403 || r.Error.Code != "INSUFFICIENT_PERMISSIONS" {
		t.Errorf("a user reporting another's read = %d %s", r.Status, r.Raw)
	}
	if r := e.Reads(t, bt.AdminKey, "", id+"-2"); r.Status != 400 || r.Error.Code != "MISSING_PARAMETER" {
		t.Errorf("an operator's report without userID = %d %s", r.Status, r.Raw)
	}
	many := make([]string, 1001)
	for i := range many {
		many[i] = id + "-0"
	}
	if r := e.Reads(t, bt.AdminKey, "user-a", many...); r.Status != 400 || r.Error.Code != "INVALID_PARAMETER" {
		t.Errorf("1001 IDs = %d %s", r.Status, r.Raw)
	}
	for _, body := range []string{`{"userID":"user-a","messageIDs":"x"}`, `{"userID":"user-a","ids":[]}`, `[]`, `{"userID":"user-a"} {}`} {
		if r := e.Do(t, http.MethodPost, "/messages/batch/-/reads", bt.AdminKey, bt.JSONContentType, strings.NewReader(body)); r.Status != 400 || r.Error.Code != "INVALID_BODY" {
			t.Errorf("body %s = %d %s", body, r.Status, r.Raw)
		}
	}
	if r := e.Do(t, http.MethodPost, "/messages/batch/-/reads", bt.AdminKey, "text/plain", strings.NewReader(`{}`)); r.Status != 415 {
		t.Errorf("text/plain = %d %s", r.Status, r.Raw)
	}
	if r := e.Do(t, http.MethodGet, "/messages/batch/-/reads", bt.AdminKey, "", nil); r.Status != 405 || r.Error.Code != "METHOD_NOT_ALLOWED" {
		t.Errorf("GET = %d %s", r.Status, r.Raw)
	}
	if r := e.Reads(t, "wrong", "user-a", id+"-0"); r.Status != 401 {
		t.Errorf("a wrong key = %d %s", r.Status, r.Raw)
	}
	if _, st := e.Status(t, bt.AdminKey, id); st.Read == nil || *st.Read != 2 {
		t.Errorf("read after the endpoint's reports: %v, want 2", st.Read)
	}
}

// TestMarkReads: the reads of several users in one call, each with the
// time the host saw it; reads without a user are ignored.
func TestMarkReads(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.ChunkSize = 3 })
	id := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.EightRecipients)).BatchID
	e.ProcessAll(t)
	at := time.Date(2026, 6, 1, 9, 30, 0, 0, time.FixedZone("UTC+8", 8*3600))
	n, err := e.Svc.MarkReads(t.Context(), bt.TestApp, []batch.ReadReceipt{
		{UserID: "user-c", MessageID: id + "-2", At: at},
		{UserID: "user-d", MessageID: id + "-3"},
		{UserID: "user-c", MessageID: id + "-6"}, // room-003, user-c's
		{UserID: "", MessageID: id + "-0"},
		{UserID: "user-a", MessageID: id + "-3"}, // user-d's message
	})
	if err != nil || n != 3 {
		t.Fatalf("MarkReads = %d, %v; want 3", n, err)
	}
	_, page := e.Recipients(t, id, "?read=true")
	if page.Total != 3 || len(page.Recipients) != 3 || page.Recipients[0].Index != 2 || !page.Recipients[0].ReadAt.Equal(at) || page.Recipients[0].ReadAt.Location() != time.UTC {
		t.Errorf("read=true: %+v; want indexes 2, 3, 6, the first read at %v in UTC", page, at)
	}
}
