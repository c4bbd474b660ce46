package apispec_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/internal/apispec"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/store"
)

// TestMain checks every exchange the tests of this package make through
// batchtest's Env against openapi.yaml, as internal/integration does.
func TestMain(m *testing.M) {
	bt.CheckResponse = apispec.Check
	bt.CheckRequest = apispec.CheckRequest
	os.Exit(m.Run())
}

// want asserts the answer's status and, for an error, its code.
func want(t *testing.T, r *bt.Response, status int, code string) *bt.Response {
	t.Helper()
	if r.Status != status || (code != "" && (r.Error == nil || r.Error.Code != code)) {
		t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, status, code)
	}
	return r
}

// TestHandlerAnswers drives the handler (on memstore) through every
// operation and most errors; batchtest's hooks check each request it
// accepts and each answer against openapi.yaml. It covers what the
// end-to-end tests do not reach.
func TestHandlerAnswers(t *testing.T) {
	e := bt.NewEnv(t, func(c *batch.Config) { c.MaxRecipients = 3; c.ChunkSize = 1 })
	post := func(key, query, body string, header ...string) *bt.Response {
		h := map[string]string{}
		for i := 0; i+1 < len(header); i += 2 {
			h[header[i]] = header[i+1]
		}
		return e.DoWith(t, http.MethodPost, "/messages/batch"+query, key, strings.NewReader(body), h)
	}
	get := func(path string) *bt.Response { return e.Do(t, http.MethodGet, path, bt.AdminKey, "", nil) }

	// POST: accepted, replayed, dry run.
	sent := bt.Accepted(t, post(bt.AdminKey, "", bt.TwoReceivers, "Idempotency-Key", "k-1"))
	if r := want(t, post(bt.AdminKey, "", bt.TwoReceivers, "Idempotency-Key", "k-1"), 200, ""); r.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("no Idempotent-Replayed on a replay: %v", r.Header)
	}
	later := time.Now().Add(time.Hour).UnixMilli()
	want(t, post(bt.AdminKey, "?dryRun=true&previewLimit=2", fmt.Sprintf(
		`{"messageType":"text","message":"Hi $first name$","extra":{"k":"$first name$"},"sendAt":%d,
		  "paras":[{"receiver":"user-a","$first name$":"A","$n$":1},{"room":"room-001","$first name$":true}]}`, later)), 200, "")
	scheduled := bt.Accepted(t, post(bt.AdminKey, "", fmt.Sprintf(`{"messageType":"text","message":"later","sendAt":%d,"paras":[{"room":"room-002"}]}`, later)))
	// A throttled batch: its dry run and its status carry the pace.
	throttled := `{"messageType":"text","message":"slow","ratePerMinute":1,"paras":[{"room":"room-001"},{"room":"room-002"}]}`
	want(t, post(bt.AdminKey, "?dryRun=true", throttled), 200, "")
	paced := bt.Accepted(t, post(bt.AdminKey, "", throttled))
	if r := want(t, e.Do(t, http.MethodGet, "/messages/batch/"+paced.BatchID, bt.AdminKey, "", nil), 200, ""); !strings.Contains(r.Raw, "estimatedFinishAt") {
		t.Errorf("a throttled batch's status has no estimatedFinishAt: %s", r.Raw)
	}
	want(t, post(bt.AdminKey, "", `{"messageType":"text","message":"m","ratePerMinute":0,"paras":[{"room":"room-001"}]}`), 400, "INVALID_BODY")

	// POST: every client error it can give here.
	want(t, post(bt.AdminKey, "", bt.TwoReceivers, "Idempotency-Key", "k-1", "X", "y"), 200, "") // headers do not count
	want(t, post(bt.AdminKey, "", seedRooms, "Idempotency-Key", "k-1"), 422, "IDEMPOTENCY_KEY_REUSED")
	want(t, post(bt.AdminKey, "", seedRooms, "Idempotency-Key", "bad\x01key"), 400, "INVALID_PARAMETER")
	want(t, post(bt.AdminKey, "?dryRun=maybe", seedRooms), 400, "INVALID_PARAMETER")
	want(t, post(bt.AdminKey, "", `{"message":"m"`), 400, "INVALID_BODY")
	want(t, post(bt.AdminKey, "", `{"message":"m","messageType":"t","paras":[{"room":"r","name":"x"}]}`), 400, "INVALID_BODY")
	want(t, post(bt.AdminKey, "", `{"message":"m","messageType":"t"}`), 400, "MISSING_PARAMETER")
	want(t, post(bt.AdminKey, "", `{"message":"Hi $name$","messageType":"t","strictVariables":true,"paras":[{"receiver":"user-a"}]}`), 400, "MISSING_VARIABLE")
	want(t, post("", "", seedRooms), 401, "INVALID_API_KEY")
	want(t, post("wrong", "", seedRooms), 401, "INVALID_API_KEY")
	want(t, post(bt.UserKey, "", seedRooms), 403, "INSUFFICIENT_PERMISSIONS")
	want(t, post(bt.AdminKey, "", `{"message":"m","messageType":"t","paras":[{"receiver":"ghost"},{"room":"nowhere"}]}`), 404, "CLIENT_NOT_FOUND")
	want(t, post(bt.AdminKey, "", `{"message":"m","messageType":"t","paras":[{"room":"nowhere"}]}`), 404, "ROOM_NOT_FOUND")
	want(t, post(bt.AdminKey, "", `{"message":"m","messageType":"t","paras":[{"room":"r"},{"room":"r"},{"room":"r"},{"room":"r"}]}`), 413, "PAYLOAD_TOO_LARGE")
	want(t, e.Do(t, http.MethodPost, "/messages/batch", bt.AdminKey, "text/plain", strings.NewReader(seedRooms)), 415, "UNSUPPORTED_MEDIA_TYPE")

	// Pause and resume (the paced batch: not started yet), and a list of
	// paused batches.
	want(t, e.Do(t, http.MethodPost, "/messages/batch/"+paced.BatchID+"/pause", bt.AdminKey, "", nil), 200, "")
	want(t, e.Do(t, http.MethodPost, "/messages/batch/"+paced.BatchID+"/pause?x=1", bt.AdminKey, "", nil), 400, "INVALID_PARAMETER")
	want(t, get("/messages/batch?status=paused"), 200, "")
	want(t, get("/messages/batch/"+paced.BatchID), 200, "")
	want(t, e.Do(t, http.MethodPost, "/messages/batch/"+paced.BatchID+"/resume", bt.AdminKey, "", nil), 200, "")
	want(t, e.Do(t, http.MethodPost, "/messages/batch/batch-20260101-nosuchbatc/pause", bt.AdminKey, "", nil), 404, "BATCH_NOT_FOUND")

	want(t, e.Do(t, http.MethodDelete, "/messages/batch/"+scheduled.BatchID, bt.AdminKey, "", nil), 200, "")
	want(t, e.Do(t, http.MethodPost, "/messages/batch/"+scheduled.BatchID+"/pause", bt.AdminKey, "", nil), 409, "BATCH_FINISHED")
	e.ProcessAll(t)

	// Status, recipients, list, messages.
	want(t, get("/messages/batch/"+sent.BatchID), 200, "")
	want(t, e.Do(t, http.MethodHead, "/messages/batch/"+sent.BatchID, bt.AdminKey, "", nil), 200, "")
	want(t, get("/messages/batch/"+sent.BatchID+"?verbose=1"), 400, "INVALID_PARAMETER")
	want(t, get("/messages/batch/batch-20260101-nosuchbatc"), 404, "BATCH_NOT_FOUND")
	want(t, get("/messages/batch/"+sent.BatchID+"/recipients?status=sent&limit=1"), 200, "")
	want(t, get("/messages/batch/"+sent.BatchID+"/recipients?offset=1"), 200, "")
	want(t, get("/messages/batch/"+sent.BatchID+"/recipients?status=done"), 400, "INVALID_PARAMETER")
	want(t, get("/messages/batch/batch-20260101-nosuchbatc/recipients"), 404, "BATCH_NOT_FOUND")
	want(t, get("/messages/batch?limit=1"), 200, "")
	want(t, get("/messages/batch?status=completed&status=scheduled&createdAfter=2020-01-01T00:00:00Z"), 200, "")
	want(t, get("/messages/batch?status=done"), 400, "INVALID_PARAMETER")
	want(t, get("/messages/batch?cursor=nonsense"), 400, "INVALID_PARAMETER")
	want(t, get("/messages/batch?batchID="+sent.BatchID+"&limit=1"), 200, "")
	want(t, get("/messages/batch?batchID="+sent.BatchID), 200, "")
	want(t, get("/messages/batch?batchID=batch-20260101-nosuchbatc"), 404, "BATCH_NOT_FOUND")

	// Reads.
	want(t, e.Reads(t, bt.AdminKey, "user-a", sent.BatchID+"-0", sent.BatchID+"-1", "not-ours"), 200, "")
	want(t, e.Reads(t, bt.AdminKey, "", sent.BatchID+"-0"), 400, "MISSING_PARAMETER")
	want(t, e.Do(t, http.MethodPost, "/messages/batch/-/reads", bt.AdminKey, bt.JSONContentType, strings.NewReader(`{"userID":1}`)), 400, "INVALID_BODY")
	want(t, e.Do(t, http.MethodPost, "/messages/batch/-/reads", bt.AdminKey, "text/plain", strings.NewReader(`{}`)), 415, "UNSUPPORTED_MEDIA_TYPE")
	want(t, get("/messages/batch/"+sent.BatchID+"/recipients?read=true"), 200, "")
	want(t, get("/messages/batch/"+sent.BatchID+"/recipients?read=false"), 200, "")
	want(t, get("/messages/batch/"+sent.BatchID+"/recipients?read=true&status=sent"), 400, "INVALID_PARAMETER")

	// Cancel, recall.
	want(t, e.Do(t, http.MethodDelete, "/messages/batch/"+sent.BatchID, bt.AdminKey, "", nil), 409, "BATCH_FINISHED")
	want(t, e.Do(t, http.MethodDelete, "/messages/batch/batch-20260101-nosuchbatc", bt.AdminKey, "", nil), 404, "BATCH_NOT_FOUND")
	if r := e.Do(t, http.MethodPost, "/messages/batch/"+sent.BatchID+"/recall", bt.AdminKey, "", nil); r.Status != 200 && r.Status != 501 {
		t.Errorf("recall = %d %s", r.Status, r.Raw)
	}
	want(t, get("/messages/batch/"+sent.BatchID+"/recipients"), 200, "")
	want(t, get("/messages/batch/"+sent.BatchID), 200, "")
}

const seedRooms = `{"messageType":"text","message":"m","sender":"system","paras":[{"room":"room-001"}]}`

// messagesOnly hides the optional interfaces of a Messages store.
type messagesOnly struct{ store.Messages }

// TestHandlerAnswersWithout: 501 for what the stores cannot do, 503 for a
// store that fails.
func TestHandlerAnswersWithout(t *testing.T) {
	e := bt.NewEnv(t, func(c *batch.Config) { c.Messages = messagesOnly{c.Store} })
	id := bt.Accepted(t, e.Post(t, bt.AdminKey, seedRooms)).BatchID
	want(t, e.Do(t, http.MethodGet, "/messages/batch?batchID="+id, bt.AdminKey, "", nil), 501, "NOT_SUPPORTED")
	want(t, e.Do(t, http.MethodPost, "/messages/batch/"+id+"/recall", bt.AdminKey, "", nil), 501, "NOT_SUPPORTED")

	failing := bt.NewEnv(t, func(c *batch.Config) {
		c.Store = &bt.FailingStore{Store: c.Store, Fail: map[string]int{"GetBatch": -1, "MissingUsers": -1}}
	})
	if r := want(t, failing.Do(t, http.MethodGet, "/messages/batch/"+id, bt.AdminKey, "", nil), 503, "UNAVAILABLE"); r.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	want(t, failing.Post(t, bt.AdminKey, seedRooms), 503, "UNAVAILABLE")
}

// TestOutsideTheOperations: a method a path does not serve (405) and a
// path below the base path that is no operation's (404 NOT_FOUND) are
// not operations of the description, so Check refuses them; their bodies
// match the description's MethodNotAllowed and NoSuchEndpoint responses.
func TestOutsideTheOperations(t *testing.T) {
	e := bt.NewEnv(t, nil)
	d := doc(t)
	for _, c := range []struct {
		method, path, component, allow string
		status                         int
	}{
		{http.MethodPut, "/messages/batch", "MethodNotAllowed", "GET, HEAD, POST", 405},
		{http.MethodPost, "/messages/batch/b", "MethodNotAllowed", "GET, HEAD, DELETE", 405},
		{http.MethodDelete, "/messages/batch/b/recipients", "MethodNotAllowed", "GET, HEAD", 405},
		{http.MethodGet, "/messages/batch/b/recall", "MethodNotAllowed", "POST", 405},
		{http.MethodGet, "/messages/batch/b/pause", "MethodNotAllowed", "POST", 405},
		{http.MethodGet, "/messages/batch/-/reads", "MethodNotAllowed", "POST", 405},
		{http.MethodDelete, "/messages/batch/b/resume", "MethodNotAllowed", "POST", 405},
		{http.MethodGet, "/messages/batch//recipients", "NoSuchEndpoint", "", 404},
		{http.MethodGet, "/messages/batch/b/other", "NoSuchEndpoint", "", 404},
	} {
		req := httptest.NewRequest(c.method, c.path, nil)
		req.Header.Set("IM-API-KEY", bt.AdminKey)
		w := httptest.NewRecorder()
		e.Svc.Handler().ServeHTTP(w, req)
		res := w.Result()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != c.status || res.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s = %d, Allow %q: %s", c.method, c.path, res.StatusCode, res.Header.Get("Allow"), body)
		}
		if err := apispec.Check(c.method, c.path, res.StatusCode, res.Header, body); err == nil {
			t.Errorf("%s %s: Check accepted an answer to an operation openapi.yaml does not have", c.method, c.path)
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		schema := d.Components.Responses[c.component].Value.Content.Get("application/json").Schema.Value
		if err := schema.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
			t.Errorf("%s %s: the answer does not match components.responses.%s: %v", c.method, c.path, c.component, err)
		}
	}
}
