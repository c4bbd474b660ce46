package batch_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

const validBody = `{"message":"hi $name$","messageType":"text","paras":[{"receiver":"user-a","$name$":"A"}]}`

// errCase is one request that must fail with a given status and code.
type errCase struct {
	name        string
	method      string // default POST
	path        string // default /messages/batch
	key         string // default bt.AdminKey; "-" for none
	contentType string // default application/json; charset=utf-8; "-" for none
	body        string
	Status      int
	code        string
	msg         string // a substring of error.message
	details     []batch.Detail
}

func (c errCase) run(t *testing.T, e *bt.Env) *bt.Response {
	t.Helper()
	method := cmpOr(c.method, http.MethodPost)
	path := cmpOr(c.path, "/messages/batch")
	key := cmpOr(c.key, bt.AdminKey)
	if key == "-" {
		key = ""
	}
	ct := cmpOr(c.contentType, bt.JSONContentType)
	if ct == "-" {
		ct = ""
	}
	r := e.Do(t, method, path, key, ct, strings.NewReader(c.body))
	if r.Status != c.Status || r.Error == nil || r.Error.Code != c.code {
		t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, c.Status, c.code)
	}
	if r.RC != c.Status || r.RM != http.StatusText(c.Status) {
		t.Errorf("envelope RC=%d RM=%q, want %d %q", r.RC, r.RM, c.Status, http.StatusText(c.Status))
	}
	if !strings.Contains(r.Error.Message, c.msg) {
		t.Errorf("message %q does not contain %q", r.Error.Message, c.msg)
	}
	if r.Error.Details == nil {
		t.Errorf("details is missing or null; it must always be an array: %s", r.Raw)
	}
	if c.details != nil && !sameDetails(r.Error.Details, c.details) {
		t.Errorf("details = %s\nwant %+v", r.Raw, c.details)
	}
	return r
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func sameDetails(got, want []batch.Detail) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		g, w := got[i], want[i]
		if (g.Index == nil) != (w.Index == nil) || (g.Index != nil && *g.Index != *w.Index) ||
			g.Field != w.Field || g.Value != w.Value || (w.Reason != "" && g.Reason != w.Reason) ||
			strings.Join(g.Variables, ",") != strings.Join(w.Variables, ",") {
			return false
		}
	}
	return true
}

func idx(i int) *int { return &i }

func TestErrorCodes(t *testing.T) {
	t.Parallel()
	big := `{"message":"` + strings.Repeat("x", 1<<20) + `","messageType":"text","paras":[{"receiver":"user-a"}]}`
	cases := []errCase{
		// 401
		{name: "no key", key: "-", body: validBody, Status: 401, code: "INVALID_API_KEY", msg: "IM-API-KEY header is missing"},
		{name: "wrong key", key: "nope", body: validBody, Status: 401, code: "INVALID_API_KEY", msg: "not a valid API key"},
		{name: "wrong key on status", method: "GET", path: "/messages/batch/batch-x", key: "nope", Status: 401, code: "INVALID_API_KEY"},
		// 403
		{name: "sender without admin", key: bt.UserKey, body: `{"message":"m","messageType":"text","sender":"user-b","paras":[{"receiver":"user-a"}]}`,
			Status: 403, code: "INSUFFICIENT_PERMISSIONS", msg: "only admin principals may set sender"},
		// 405
		{name: "DELETE on the collection", method: "DELETE", Status: 405, code: "METHOD_NOT_ALLOWED", msg: "use GET, HEAD, POST"},
		{name: "PUT on the collection", method: "PUT", body: validBody, Status: 405, code: "METHOD_NOT_ALLOWED"},
		{name: "list with a bad status", method: "GET", path: "/messages/batch?status=done", Status: 400, code: "INVALID_PARAMETER", msg: "status"},
		{name: "list with a bad cursor", method: "GET", path: "/messages/batch?cursor=xyz", Status: 400, code: "INVALID_PARAMETER", msg: "cursor"},
		{name: "list with a bad time", method: "GET", path: "/messages/batch?createdAfter=yesterday", Status: 400, code: "INVALID_PARAMETER", msg: "createdAfter"},
		{name: "list with an unknown parameter", method: "GET", path: "/messages/batch?batchId=1", Status: 400, code: "INVALID_PARAMETER", msg: "batchId"},
		{name: "POST on a batch", path: "/messages/batch/batch-x", body: validBody, Status: 405, code: "METHOD_NOT_ALLOWED", msg: "use GET"},
		// 404 paths and batches
		{name: "unknown sub-path", method: "GET", path: "/messages/batch/a/b/c", Status: 404, code: "NOT_FOUND"},
		{name: "unknown batch", method: "GET", path: "/messages/batch/batch-20260101-nope", Status: 404, code: "BATCH_NOT_FOUND", msg: `batch "batch-20260101-nope" does not exist`},
		{name: "NUL in a batch ID", method: "GET", path: "/messages/batch/a%00b", Status: 404, code: "BATCH_NOT_FOUND"},
		{name: "invalid UTF-8 in a batch ID", method: "GET", path: "/messages/batch/batch-%FF", Status: 404, code: "BATCH_NOT_FOUND"},
		{name: "NUL in a batch ID, recipients", method: "GET", path: "/messages/batch/%00/recipients", Status: 404, code: "BATCH_NOT_FOUND"},
		{name: "NUL in a batch ID, cancel", method: "DELETE", path: "/messages/batch/%00", Status: 404, code: "BATCH_NOT_FOUND"},
		// 415
		{name: "text/plain", contentType: "text/plain", body: validBody, Status: 415, code: "UNSUPPORTED_MEDIA_TYPE", msg: "application/json"},
		{name: "no content type", contentType: "-", body: validBody, Status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "latin1", contentType: "application/json; charset=iso-8859-1", body: validBody, Status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		{name: "form", contentType: "application/x-www-form-urlencoded", body: "message=hi", Status: 415, code: "UNSUPPORTED_MEDIA_TYPE"},
		// 413
		{name: "body too large", body: big, Status: 413, code: "PAYLOAD_TOO_LARGE", msg: "larger than"},
		// 400 INVALID_BODY
		{name: "empty body", body: "", Status: 400, code: "INVALID_BODY", msg: "the body is empty"},
		{name: "not JSON", body: `{"message": hi}`, Status: 400, code: "INVALID_BODY", msg: "invalid JSON at line 1, column 13"},
		{name: "truncated", body: `{"message":"hi"`, Status: 400, code: "INVALID_BODY", msg: "ends before"},
		{name: "array body", body: `[1,2]`, Status: 400, code: "INVALID_BODY", msg: "must be a JSON object, not an array"},
		{name: "trailing data", body: validBody + `{"x":1}`, Status: 400, code: "INVALID_BODY", msg: "unexpected data after the JSON object"},
		{name: "raw NUL", body: "{\"message\":\"a\x00\"}", Status: 400, code: "INVALID_BODY", msg: "NUL byte at offset 13"},
		{name: "escaped NUL in message", body: `{"message":"a\u0000b","messageType":"text","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: "message: contains a NUL character"},
		{name: "escaped NUL in a variable", body: `{"message":"m","messageType":"text","paras":[{"receiver":"user-a","$v$":"\u0000"}]}`, Status: 400, code: "INVALID_BODY", msg: "paras[0].$v$: contains a NUL character"},
		{name: "escaped NUL in extra", body: `{"message":"m","messageType":"text","extra":{"a":["\u0000"]},"paras":[{"receiver":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: "extra.a[0]"},
		{name: "invalid UTF-8", body: "{\"message\":\"caf\xe9\",\"messageType\":\"text\",\"paras\":[{\"receiver\":\"user-a\"}]}", Status: 400, code: "INVALID_BODY", msg: "not valid UTF-8 (first bad byte at offset 15)"},
		{name: "duplicate top-level key", body: `{"message":"a","message":"b","messageType":"text","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: `duplicate key "message"`},
		{name: "duplicate para key", body: `{"message":"a","messageType":"text","paras":[{"receiver":"user-a","receiver":"user-b"}]}`, Status: 400, code: "INVALID_BODY", msg: `paras[0].receiver: duplicate key "receiver"`},
		{name: "duplicate key in extra", body: `{"message":"a","messageType":"text","extra":{"x":{"y":1,"y":2}},"paras":[{"receiver":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: `extra.x: duplicate key "y"`},
		{name: "message is a number", body: `{"message":5,"messageType":"text","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: "message: must be a string, not a number"},
		{name: "push is a string", body: `{"message":"m","messageType":"text","push":"yes","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: "push: must be true or false, not a string"},
		{name: "extra is an array", body: `{"message":"m","messageType":"text","extra":[1],"paras":[{"receiver":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: "extra: must be a JSON object, not an array"},
		{name: "extra is a string", body: `{"message":"m","messageType":"text","extra":"{}","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: "extra: must be a JSON object, not a string"},
		{name: "paras is an object", body: `{"message":"m","messageType":"text","paras":{"receiver":"user-a"}}`, Status: 400, code: "INVALID_BODY", msg: "paras: must be an array of recipient objects, not an object"},
		{name: "para is a string", body: `{"message":"m","messageType":"text","paras":["user-a"]}`, Status: 400, code: "INVALID_BODY", msg: "paras[0]: must be an object, not a string"},
		{name: "receiver is a number", body: `{"message":"m","messageType":"text","paras":[{"receiver":1}]}`, Status: 400, code: "INVALID_BODY", msg: "paras[0].receiver: must be a string, not a number"},
		{name: "variable is null", body: `{"message":"m","messageType":"text","paras":[{"receiver":"user-a","$x$":null}]}`, Status: 400, code: "INVALID_BODY", msg: "paras[0].$x$: must be a string, number or boolean, not null"},
		{name: "variable is an object", body: `{"message":"m","messageType":"text","paras":[{"receiver":"user-a","$x$":{"a":1}}]}`, Status: 400, code: "INVALID_BODY", msg: "not an object"},
		{name: "unknown top-level field", body: `{"message":"m","messageType":"text","color":"red","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: `unknown field "color"`,
			details: []batch.Detail{{Field: "color", Reason: `unknown field "color"`}}},
		{name: "unknown field with a hint", body: `{"message":"m","type":"text","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: `unknown field "type"; did you mean "messageType"?`},
		{name: "variable at the top level", body: `{"message":"m","messageType":"text","$name$":"x","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: "template variables go in each element of paras"},
		{name: "para key without dollars", body: `{"message":"m","messageType":"text","paras":[{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"receiver":"user-a","name":"x"}]}`,
			Status: 400, code: "INVALID_BODY", msg: `paras[3]: unknown key "name"; template variables are written "$name$"`},
		{name: "para key with a hint", body: `{"message":"m","messageType":"text","paras":[{"userId":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: `paras[0]: unknown key "userId"; did you mean "receiver"?`},
		{name: "receiver too long", body: `{"message":"m","messageType":"text","paras":[{"receiver":"` + strings.Repeat("u", 256) + `"}]}`, Status: 400, code: "INVALID_BODY", msg: "paras[0].receiver must be at most 255 bytes"},
		{name: "room with a newline", body: `{"message":"m","messageType":"text","paras":[{"room":"room\n1"}]}`, Status: 400, code: "INVALID_BODY", msg: "no control characters"},
		{name: "messageType too long", body: `{"message":"m","messageType":"` + strings.Repeat("t", 65) + `","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "INVALID_BODY", msg: "messageType must be at most 64 bytes"},
		// 400 MISSING_PARAMETER
		{name: "no message", body: `{"messageType":"text","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "MISSING_PARAMETER", msg: "message is required",
			details: []batch.Detail{{Field: "message", Reason: "is required"}}},
		{name: "empty message", body: `{"message":"","messageType":"text","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "MISSING_PARAMETER", msg: "message must not be empty"},
		{name: "null message", body: `{"message":null,"messageType":"text","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "MISSING_PARAMETER", msg: "message is required"},
		{name: "no messageType", body: `{"message":"m","paras":[{"receiver":"user-a"}]}`, Status: 400, code: "MISSING_PARAMETER", msg: "messageType is required"},
		{name: "no paras", body: `{"message":"m","messageType":"text"}`, Status: 400, code: "MISSING_PARAMETER", msg: "paras is required"},
		{name: "empty paras", body: `{"message":"m","messageType":"text","paras":[]}`, Status: 400, code: "MISSING_PARAMETER", msg: "paras must contain at least one recipient"},
		{name: "para without receiver or room", body: `{"message":"m","messageType":"text","paras":[{"receiver":"user-a"},{"$x$":"1"}]}`, Status: 400, code: "MISSING_PARAMETER", msg: `paras[1] needs a "receiver" or a "room"`,
			details: []batch.Detail{{Index: idx(1), Field: "paras[1]"}}},
		{name: "everything missing", body: `{}`, Status: 400, code: "MISSING_PARAMETER", msg: "and 2 more problems",
			details: []batch.Detail{{Field: "message"}, {Field: "messageType"}, {Field: "paras"}}},
		// 404 recipients
		{name: "missing receivers", body: `{"message":"m","messageType":"text","paras":[{"receiver":"ghost"},{"receiver":"user-a"},{"receiver":"ghost"},{"receiver":"nobody"}]}`,
			Status: 404, code: "CLIENT_NOT_FOUND", msg: "3 receivers do not exist",
			details: []batch.Detail{
				{Index: idx(0), Field: "paras[0].receiver", Value: "ghost"},
				{Index: idx(2), Field: "paras[2].receiver", Value: "ghost"},
				{Index: idx(3), Field: "paras[3].receiver", Value: "nobody"},
			}},
		{name: "missing rooms", body: `{"message":"m","messageType":"text","paras":[{"room":"room-001"},{"room":"room-404"},{"receiver":"ghost","room":"room-002"}]}`,
			Status: 404, code: "ROOM_NOT_FOUND", msg: "1 rooms do not exist",
			details: []batch.Detail{{Index: idx(1), Field: "paras[1].room", Value: "room-404"}}},
		{name: "missing receiver and room", body: `{"message":"m","messageType":"text","paras":[{"room":"room-404"},{"receiver":"ghost"}]}`,
			Status: 404, code: "CLIENT_NOT_FOUND", msg: "1 receivers do not exist, and 1 rooms do not exist",
			details: []batch.Detail{{Index: idx(0), Field: "paras[0].room", Value: "room-404"}, {Index: idx(1), Field: "paras[1].receiver", Value: "ghost"}}},
		{name: "missing sender", body: `{"message":"m","messageType":"text","sender":"ghost-sender","paras":[{"receiver":"user-a"}]}`,
			Status: 404, code: "CLIENT_NOT_FOUND", msg: `the sender "ghost-sender" does not exist`,
			details: []batch.Detail{{Field: "sender", Value: "ghost-sender"}}},
		{name: "another app's users", key: bt.OtherKey, body: `{"message":"m","messageType":"text","paras":[{"receiver":"only-in-app1"}]}`,
			Status: 404, code: "CLIENT_NOT_FOUND"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := bt.NewEnv(t, func(cfg *batch.Config) { cfg.MaxBodyBytes = 1 << 20 })
			bt.Must(t, e.St.AddUsers(t.Context(), bt.TestApp, "only-in-app1"))
			r := c.run(t, e)
			e.AssertNothingHappened(t)
			if c.Status == 405 && r.Header.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
		})
	}
}

func TestTooManyRecipients(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.MaxRecipients = 3; c.ChunkSize = 2 })
	errCase{body: `{"message":"m","messageType":"text","paras":[{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"receiver":"user-d"}]}`,
		Status: 413, code: "PAYLOAD_TOO_LARGE", msg: "paras has more than 3 recipients"}.run(t, e)
	e.AssertNothingHappened(t)
	bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","paras":[{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"}]}`))
}

// A fresh directory without the default sender: the 404 says what the
// sender is and how to fix it, not only that it is missing.
func TestMissingDefaultSender(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.DefaultSender = "not-created-yet" })
	errCase{body: `{"message":"m","messageType":"text","paras":[{"receiver":"user-a"}]}`,
		Status: 404, code: "CLIENT_NOT_FOUND", msg: `the sender "not-created-yet" does not exist (it is the default sender, Config.DefaultSender, used when a request names none: create that user in the directory, or name a sender that exists)`,
		details: []batch.Detail{{Field: "sender", Value: "not-created-yet"}}}.run(t, e)
	e.AssertNothingHappened(t)
}

func TestMissingVariableStrict(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.StrictVariables = true })
	body := `{"message":"Hi $name$, order $orderId$","messageType":"text","extra":{"url":"/o/$orderId$","who":"$nick$"},"paras":[
		{"receiver":"user-a","$name$":"A","$orderId$":"1","$nick$":"a"},
		{"receiver":"user-b","$name$":"B"},
		{"room":"room-003","receiver":"user-c","$orderId$":"3","$nick$":"c"}]}`
	errCase{body: body, Status: 400, code: "MISSING_VARIABLE", msg: `2 recipients have no value for some template variables (first: paras[1], receiver "user-b", lacks [$orderId$ $nick$])`,
		details: []batch.Detail{
			{Index: idx(1), Field: "paras[1]", Variables: []string{"$orderId$", "$nick$"}, Receiver: "user-b"},
			{Index: idx(2), Field: "paras[2]", Variables: []string{"$name$"}, Room: "room-003"},
		}}.run(t, e)
	e.AssertNothingHappened(t)

	// Without strict mode the same request is accepted and the token stays.
	lax := bt.NewEnv(t, nil)
	bt.Accepted(t, lax.Post(t, bt.AdminKey, body))
	lax.ProcessAll(t)
	for _, m := range lax.Rec.Messages() {
		if m.Receiver == "user-b" && (m.Text != "Hi B, order $orderId$" || string(m.Extra) != `{"url":"/o/$orderId$","who":"$nick$"}`) {
			t.Errorf("lax rendering: %q %s", m.Text, m.Extra)
		}
	}
}

func TestStoreDown(t *testing.T) {
	t.Parallel()
	for _, method := range []string{"MissingUsers", "CreateBatch"} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			var fs *bt.FailingStore
			e := bt.NewEnv(t, func(c *batch.Config) {
				fs = &bt.FailingStore{Store: c.Store, Fail: map[string]int{method: -1}}
				c.Store = fs
			})
			r := errCase{body: validBody, Status: 503, code: "UNAVAILABLE", msg: "retry later"}.run(t, e)
			if r.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if strings.Contains(r.Raw, "connection refused") {
				t.Errorf("the response leaks the internal error: %s", r.Raw)
			}
			e.AssertNothingHappened(t)
		})
	}
	t.Run("status", func(t *testing.T) {
		t.Parallel()
		e := bt.NewEnv(t, func(c *batch.Config) {
			c.Store = &bt.FailingStore{Store: c.Store, Fail: map[string]int{"GetBatch": -1}}
		})
		errCase{method: "GET", path: "/messages/batch/batch-x", Status: 503, code: "UNAVAILABLE"}.run(t, e)
	})
	t.Run("authenticator", func(t *testing.T) {
		t.Parallel()
		e := bt.NewEnv(t, func(c *batch.Config) {
			c.Authenticator = batch.AuthenticatorFunc(func(context.Context, string) (batch.Principal, error) {
				return batch.Principal{}, errors.New("key service down")
			})
		})
		errCase{body: validBody, Status: 503, code: "UNAVAILABLE"}.run(t, e)
	})
}

// hangingStore is a store whose database stopped answering (a network
// partition that drops packets): the named methods wait until their
// context ends.
type hangingStore struct {
	store.Store
	hang map[string]bool
}

func (h *hangingStore) wait(ctx context.Context, method string) error {
	if !h.hang[method] {
		return nil
	}
	<-ctx.Done()
	return fmt.Errorf("%s: read tcp: i/o timeout: %w", method, ctx.Err())
}

func (h *hangingStore) MissingUsers(ctx context.Context, app string, ids []string) ([]string, error) {
	if err := h.wait(ctx, "MissingUsers"); err != nil {
		return nil, err
	}
	return h.Store.MissingUsers(ctx, app, ids)
}

func (h *hangingStore) GetBatch(ctx context.Context, app, id string) (*store.Batch, error) {
	if err := h.wait(ctx, "GetBatch"); err != nil {
		return nil, err
	}
	return h.Store.GetBatch(ctx, app, id)
}

func (h *hangingStore) CancelBatch(ctx context.Context, p *store.CancelBatchParams) (*store.Batch, error) {
	if err := h.wait(ctx, "CancelBatch"); err != nil {
		return nil, err
	}
	return h.Store.CancelBatch(ctx, p)
}

// TestStoreHangs: a database that does not answer gives 503 with
// Retry-After within Config.StoreTimeout, for POST, GET and DELETE.
func TestStoreHangs(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	e := bt.NewEnv(t, func(c *batch.Config) {
		c.Store = &hangingStore{Store: c.Store, hang: map[string]bool{"MissingUsers": true, "GetBatch": true, "CancelBatch": true}}
		c.StoreTimeout = timeout
	})
	for _, c := range []errCase{
		{name: "POST", body: validBody},
		{name: "GET", method: "GET", path: "/messages/batch/batch-x"},
		{name: "DELETE", method: "DELETE", path: "/messages/batch/batch-x"},
	} {
		c.Status, c.code, c.msg = 503, "UNAVAILABLE", "retry later"
		start := time.Now()
		r := c.run(t, e)
		if took := time.Since(start); took < timeout || took > timeout+2*time.Second {
			t.Errorf("%s answered after %v, want just after the store timeout (%v)", c.name, took, timeout)
		}
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", c.name)
		}
		if strings.Contains(r.Raw, "i/o timeout") {
			t.Errorf("%s: the response leaks the internal error: %s", c.name, r.Raw)
		}
	}
	e.AssertNothingHappened(t)
}

func TestInternalError(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) {
		c.Authenticator = batch.AuthenticatorFunc(func(context.Context, string) (batch.Principal, error) {
			panic("bug in the host's authenticator")
		})
	})
	r := errCase{body: validBody, Status: 500, code: "INTERNAL_ERROR", msg: "unexpected error"}.run(t, e)
	if strings.Contains(r.Raw, "bug in") {
		t.Errorf("the response leaks the panic: %s", r.Raw)
	}
}

func TestOtherAppsBatchIsNotFound(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, validBody))
	r, _ := e.Status(t, bt.OtherKey, res.BatchID)
	if r.Status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
		t.Errorf("another app's GET = %d %s, want 404 BATCH_NOT_FOUND", r.Status, r.Raw)
	}
	if r, st := e.Status(t, bt.AdminKey, res.BatchID); r.Status != 200 || st.Status != "queued" || st.Pending != 1 {
		t.Errorf("own GET = %d %+v", r.Status, st)
	}
}
