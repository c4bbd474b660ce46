package batchtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/chatbatch/chatbatch/batch"
)

// UserHeaderAuth is a Config.AuthenticateRequest that takes the
// X-Test-User header for a signed-in user of TestApp (at most 2 paras a
// request): "!…" is refused, "?…" cannot be checked (the host's session
// store is down), no header falls back to the API key.
func UserHeaderAuth(r *http.Request) (batch.Principal, error) {
	u := r.Header.Get("X-Test-User")
	switch {
	case u == "":
		return batch.Principal{}, batch.ErrNoCredentials
	case strings.HasPrefix(u, "!"):
		return batch.Principal{}, fmt.Errorf("session of %s expired: %w", u, batch.ErrUnauthenticated)
	case strings.HasPrefix(u, "?"):
		return batch.Principal{}, errors.New("session store unreachable")
	}
	return batch.Principal{AppID: TestApp, UserID: u, MaxRecipients: 2}, nil
}

// CheckOwnershipByCreator checks on e, whose AuthenticateRequest takes the
// X-Test-User header for a user principal of TestApp (UserHeaderAuth),
// that ownership follows who created a batch, not its sender: a user whose ID
// is the default sender's ("system") or the sender an operator named
// ("user-a") neither lists, reads, cancels nor recalls the operator's
// batch; the operator does all of it.
func CheckOwnershipByCreator(t *testing.T, e *Env) {
	t.Helper()
	as := func(user, method, path string) *Response {
		t.Helper()
		return e.DoWith(t, method, path, "", strings.NewReader(""), map[string]string{"X-Test-User": user})
	}
	listed := func(r *Response) []string {
		t.Helper()
		var l struct{ Batches []struct{ BatchID string } }
		Must(t, json.Unmarshal(r.Result, &l))
		var ids []string
		for _, b := range l.Batches {
			ids = append(ids, b.BatchID)
		}
		return ids
	}
	asSystem := Accepted(t, e.Post(t, AdminKey, `{"messageType":"text","message":"m","paras":[{"receiver":"user-b"},{"receiver":"user-c"}]}`)).BatchID
	asUserA := Accepted(t, e.Post(t, AdminKey, `{"messageType":"text","message":"m","sender":"user-a","paras":[{"receiver":"user-b"}]}`)).BatchID
	own := Accepted(t, e.DoWith(t, http.MethodPost, "/messages/batch", "", strings.NewReader(`{"messageType":"text","message":"m","paras":[{"receiver":"user-c"}]}`),
		map[string]string{"X-Test-User": "user-a"})).BatchID
	for user, id := range map[string]string{"system": asSystem, "user-a": asUserA} {
		path := "/messages/batch/" + id
		for _, c := range []struct{ method, path string }{
			{http.MethodGet, path}, {http.MethodGet, path + "/recipients"}, {http.MethodGet, "/messages/batch?batchID=" + id},
			{http.MethodDelete, path}, {http.MethodPost, path + "/recall"},
			{http.MethodPost, path + "/pause"}, {http.MethodPost, path + "/resume"},
		} {
			if r := as(user, c.method, c.path); r.Status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
				t.Errorf("user %s: %s %s of the operator's batch = %d %s, want 404 BATCH_NOT_FOUND", user, c.method, c.path, r.Status, r.Raw)
			}
		}
	}
	if got := listed(as("system", http.MethodGet, "/messages/batch")); len(got) != 0 {
		t.Errorf("user system lists %v, want none (it created none)", got)
	}
	if got := listed(as("user-a", http.MethodGet, "/messages/batch")); len(got) != 1 || got[0] != own {
		t.Errorf("user-a lists %v, want only its own %s", got, own)
	}
	if got := listed(e.Do(t, http.MethodGet, "/messages/batch", AdminKey, "", nil)); len(got) != 3 {
		t.Errorf("the operator lists %v, want all 3", got)
	}
	// Nothing the users tried changed the operator's batches.
	for _, id := range []string{asSystem, asUserA} {
		if _, st := e.Status(t, AdminKey, id); st.Status != "queued" {
			t.Errorf("the operator's batch %s is %s after the users' attempts, want queued", id, st.Status)
		}
	}
	for _, op := range []string{"pause", "resume"} {
		if r := as("user-a", http.MethodPost, "/messages/batch/"+own+"/"+op); r.Status != 200 {
			t.Errorf("user-a: %s of its own batch: %d %s", op, r.Status, r.Raw)
		}
	}
	if r := as("user-a", http.MethodDelete, "/messages/batch/"+own); r.Status != 200 {
		t.Errorf("user-a canceling its own batch: %d %s", r.Status, r.Raw)
	}
	if r := e.Do(t, http.MethodDelete, "/messages/batch/"+asUserA, AdminKey, "", nil); r.Status != 200 {
		t.Errorf("the operator canceling its batch sent as user-a: %d %s", r.Status, r.Raw)
	}
}
