package batch_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/store"
)

func TestStaticKeys(t *testing.T) {
	t.Parallel()
	keys := batch.NewStaticKeys(map[string]batch.Principal{
		"key-1": {AppID: "a1", Admin: true},
		"key-2": {AppID: "a2"},
		"":      {AppID: "empty"},
	})
	ctx := context.Background()
	for key, want := range map[string]batch.Principal{"key-1": {AppID: "a1", Admin: true}, "key-2": {AppID: "a2"}} {
		p, err := keys.Authenticate(ctx, key)
		if err != nil || p != want {
			t.Errorf("Authenticate(%q) = %+v, %v", key, p, err)
		}
	}
	for _, key := range []string{"", "key-3", "KEY-1", "key-1 "} {
		if _, err := keys.Authenticate(ctx, key); !errors.Is(err, batch.ErrInvalidAPIKey) {
			t.Errorf("Authenticate(%q) = %v, want ErrInvalidAPIKey", key, err)
		}
	}
}

// userEnv authenticates X-Test-User as a signed-in user of the test app
// (bt.UserHeaderAuth) besides the API keys.
func userEnv(t *testing.T) *bt.Env {
	return bt.NewEnv(t, func(c *batch.Config) { c.AuthenticateRequest = bt.UserHeaderAuth })
}

// A signed-in user sends as itself, sees and controls only its own
// batches; the API keys keep working beside it.
func TestUserPrincipal(t *testing.T) {
	t.Parallel()
	e := userEnv(t)
	as := func(user, method, path, body string) *bt.Response {
		t.Helper()
		return e.DoWith(t, method, path, "", strings.NewReader(body), map[string]string{"X-Test-User": user})
	}
	r := as("user-a", http.MethodPost, "/messages/batch", `{"messageType":"text","message":"hi","paras":[{"receiver":"user-b"}]}`)
	res := bt.Accepted(t, r)
	e.ProcessAll(t)
	msgs := e.Rec.Messages()
	if len(msgs) != 1 || msgs[0].Sender != "user-a" || msgs[0].RoomID != store.DirectRoomID("user-a", "user-b") {
		t.Errorf("the user's batch delivered %+v, want one message from user-a in its room with user-b", msgs)
	}
	if r := as("user-a", http.MethodPost, "/messages/batch", `{"messageType":"text","message":"hi","sender":"system","paras":[{"receiver":"user-b"}]}`); r.Status != 403 || r.Error.Code != "INSUFFICIENT_PERMISSIONS" {
		t.Errorf("a user naming a sender: %d %s", r.Status, r.Raw)
	}
	if r := as("user-a", http.MethodPost, "/messages/batch", `{"messageType":"text","message":"hi","paras":[{"receiver":"user-b"},{"receiver":"user-c"},{"receiver":"user-b"}]}`); r.Status != 413 {
		t.Errorf("3 paras past the principal's 2: %d %s", r.Status, r.Raw)
	}
	path := "/messages/batch/" + res.BatchID
	for _, c := range []struct{ user, method, path string }{
		{"user-b", http.MethodGet, path}, {"user-b", http.MethodGet, path + "/recipients"}, {"user-b", http.MethodDelete, path},
		{"user-b", http.MethodPost, path + "/recall"}, {"user-b", http.MethodGet, "/messages/batch?batchID=" + res.BatchID},
	} {
		if r := as(c.user, c.method, c.path, ""); r.Status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
			t.Errorf("%s %s %s = %d %s, want 404", c.user, c.method, c.path, r.Status, r.Raw)
		}
	}
	if r := as("user-a", http.MethodGet, path, ""); r.Status != 200 {
		t.Errorf("the sender reading its batch: %d %s", r.Status, r.Raw)
	}
	bt.Accepted(t, e.Post(t, bt.AdminKey, `{"messageType":"text","message":"from the server","paras":[{"receiver":"user-a"}]}`))
	count := func(r *bt.Response) int {
		var l struct{ Batches []json.RawMessage }
		bt.Must(t, json.Unmarshal(r.Result, &l))
		return len(l.Batches)
	}
	if n := count(as("user-a", http.MethodGet, "/messages/batch", "")); n != 1 {
		t.Errorf("user-a lists %d batches, want its own 1", n)
	}
	if n := count(as("user-b", http.MethodGet, "/messages/batch", "")); n != 0 {
		t.Errorf("user-b lists %d batches, want none", n)
	}
	if n := count(e.Do(t, http.MethodGet, "/messages/batch", bt.AdminKey, "", nil)); n != 2 {
		t.Errorf("the admin key lists %d batches, want 2", n)
	}
	for user, want := range map[string]struct {
		status int
		code   string
	}{"!user-a": {401, "UNAUTHORIZED"}, "?user-a": {503, "UNAVAILABLE"}} {
		if r := as(user, http.MethodGet, "/messages/batch", ""); r.Status != want.status || r.Error.Code != want.code {
			t.Errorf("X-Test-User %q: %d %s, want %d %s", user, r.Status, r.Raw, want.status, want.code)
		}
	}
}

// Ownership follows who created a batch, not its sender (the scenario
// is batchtest's, run on bunstore too by internal/integration).
func TestOwnershipByCreator(t *testing.T) {
	t.Parallel()
	bt.CheckOwnershipByCreator(t, userEnv(t))
}

// With only AuthenticateRequest, a request without credentials is 401.
func TestAuthenticateRequestOnly(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) {
		c.Authenticator = nil
		c.AuthenticateRequest = batch.PrincipalFromRequest
	})
	if r := e.Do(t, http.MethodGet, "/messages/batch", bt.AdminKey, "", nil); r.Status != 401 || r.Error.Code != "UNAUTHORIZED" {
		t.Errorf("an API key with no Authenticator: %d %s", r.Status, r.Raw)
	}
	req := httptest.NewRequest(http.MethodGet, "/messages/batch", nil)
	req = req.WithContext(batch.ContextWithPrincipal(req.Context(), batch.Principal{AppID: bt.TestApp, Admin: true}))
	w := httptest.NewRecorder()
	e.Svc.Handler().ServeHTTP(w, req)
	if w.Code != 200 {
		t.Errorf("a principal from the context: %d %s", w.Code, w.Body)
	}
	if _, err := batch.New(batch.Config{Store: e.St, Deliverer: e.Rec, Enqueuer: e.Enq}); err == nil || !strings.Contains(err.Error(), "Authenticator") {
		t.Errorf("New without any authentication: %v", err)
	}
}
