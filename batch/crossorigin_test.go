package batch_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
)

// A browser request that changes state from another origin is refused
// before authentication, whatever authenticates it (here the user's
// session, as a cookie would); the same requests from the API's own
// origin, a trusted origin or outside a browser pass, and so do reads.
// The real-browser version is internal/mounttest's cross-site test.
func TestCrossOriginRefused(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) {
		c.AuthenticateRequest = bt.UserHeaderAuth
		c.CrossOriginProtection = http.NewCrossOriginProtection()
		bt.Must(t, c.CrossOriginProtection.AddTrustedOrigin("https://app.example.org"))
	})
	const body = `{"messageType":"text","message":"hi","paras":[{"receiver":"user-b"}]}`
	id := bt.Accepted(t, e.DoWith(t, http.MethodPost, "/messages/batch", "", strings.NewReader(body), map[string]string{"X-Test-User": "user-a"})).BatchID
	path := "/messages/batch/" + id
	as := func(method, path, body string, h map[string]string) *bt.Response {
		t.Helper()
		h["X-Test-User"] = "user-a"
		return e.DoWith(t, method, path, "", strings.NewReader(body), h)
	}
	// httptest's requests are for Host example.com.
	for _, c := range []struct {
		name, method, path, body string
		h                        map[string]string
	}{
		{"recall as text/plain from another site", http.MethodPost, path + "/recall", "", map[string]string{"Content-Type": "text/plain", "Origin": "https://evil.example.net", "Sec-Fetch-Site": "cross-site"}},
		{"recall, Origin only (an older browser)", http.MethodPost, path + "/recall", "", map[string]string{"Content-Type": "text/plain", "Origin": "https://evil.example.net"}},
		{"recall from a sibling origin of the same site", http.MethodPost, path + "/recall", "", map[string]string{"Origin": "https://other.example.com", "Sec-Fetch-Site": "same-site"}},
		{"cancel from another site", http.MethodDelete, path, "", map[string]string{"Origin": "https://evil.example.net", "Sec-Fetch-Site": "cross-site"}},
		{"send from another site", http.MethodPost, "/messages/batch", body, map[string]string{"Origin": "https://evil.example.net", "Sec-Fetch-Site": "cross-site"}},
	} {
		r := as(c.method, c.path, c.body, c.h)
		if r.Status != 403 || r.Error == nil || r.Error.Code != batch.CodeCrossOrigin {
			t.Errorf("%s: %d %s, want 403 %s", c.name, r.Status, r.Raw, batch.CodeCrossOrigin)
		}
	}
	if _, st := e.Status(t, bt.AdminKey, id); st.Status != "queued" || st.Recalled != 0 || st.Canceled != 0 {
		t.Fatalf("the refused requests changed the batch: %+v", st)
	}
	if n := len(e.Enq.All()); n != 1 {
		t.Errorf("%d tasks enqueued, want only the first batch's 1", n)
	}
	// Reads from anywhere pass (a page elsewhere cannot read the answer
	// without CORS, and a read changes nothing).
	if r := as(http.MethodGet, path, "", map[string]string{"Origin": "https://evil.example.net", "Sec-Fetch-Site": "cross-site"}); r.Status != 200 {
		t.Errorf("a cross-site GET: %d %s", r.Status, r.Raw)
	}
	// The API's own origin, a trusted origin, and a client outside a
	// browser (neither header) pass.
	for name, h := range map[string]map[string]string{
		"same origin":    {"Origin": "http://example.com", "Sec-Fetch-Site": "same-origin"},
		"trusted origin": {"Origin": "https://app.example.org", "Sec-Fetch-Site": "cross-site"},
		"no browser":     {},
	} {
		if r := as(http.MethodPost, "/messages/batch?dryRun=true", body, h); r.Status != 200 {
			t.Errorf("%s: a dry run = %d %s, want 200", name, r.Status, r.Raw)
		}
	}
	if r := as(http.MethodPost, path+"/recall", "", map[string]string{"Origin": "http://example.com", "Sec-Fetch-Site": "same-origin"}); r.Status != 200 {
		t.Errorf("a same-origin recall: %d %s", r.Status, r.Raw)
	}
}

// Without a Config.CrossOriginProtection the default one is used: no
// trusted origin.
func TestCrossOriginDefault(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	r := e.DoWith(t, http.MethodPost, "/messages/batch", bt.AdminKey, strings.NewReader(`{"messageType":"text","message":"hi","paras":[{"room":"room-001"}]}`),
		map[string]string{"Origin": "https://evil.example.net", "Sec-Fetch-Site": "cross-site"})
	if r.Status != 403 || r.Error == nil || r.Error.Code != batch.CodeCrossOrigin {
		t.Errorf("a cross-site POST with the default protection: %d %s", r.Status, r.Raw)
	}
	e.AssertNothingHappened(t)
}
