package mounttest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
)

// TestBatchAPIMounted: under every framework and placement, the batch
// API answers every endpoint itself through the host's router — a batch
// accepted, its status, its recipients, the list, a recall, a cancel —
// and its own JSON 404 and 405 for unknown paths and methods below its
// mount.
func TestBatchAPIMounted(t *testing.T) {
	t.Parallel()
	for _, h := range hosts {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			s := newSite(t, h, nil)
			api := s.api()

			res := bt.Accepted(t, call(t, http.MethodPost, api, bt.AdminKey, bt.TwoReceivers))
			if res.BatchID == "" || res.Count != 2 {
				t.Fatalf("POST %s: result %+v", api, res)
			}
			id := res.BatchID
			if st := decode[bt.BatchStatus](t, call(t, http.MethodGet, api+"/"+id, bt.AdminKey, "")); st.BatchID != id || st.Status != "queued" || st.Count != 2 {
				t.Errorf("GET status before processing: %+v", st)
			}
			if n := s.process(t, -1); n != 1 {
				t.Errorf("%d tasks for two recipients, want 1", n)
			}
			st := decode[bt.BatchStatus](t, call(t, http.MethodGet, api+"/"+id, bt.AdminKey, ""))
			if st.Status != "completed" || st.Sent != 2 || st.Pending != 0 || st.FinishedAt == nil {
				t.Errorf("GET status after processing: %+v", st)
			}
			page := decode[bt.RecipientsPage](t, call(t, http.MethodGet, api+"/"+id+"/recipients", bt.AdminKey, ""))
			if page.BatchID != id || page.Total != 2 || len(page.Recipients) != 2 {
				t.Fatalf("GET recipients: %+v", page)
			}
			for i, want := range []string{"user-a", "user-b"} {
				if r := page.Recipients[i]; r.Receiver != want || r.Status != "sent" || r.MessageID == "" {
					t.Errorf("recipient %d: %+v, want %s sent", i, r, want)
				}
			}
			decode[batchList](t, call(t, http.MethodGet, api+"?limit=10", bt.AdminKey, "")).find(t, id)
			if got := len(s.env.Rec.Messages()); got != 2 {
				t.Errorf("%d messages delivered, want 2", got)
			}

			// Recall what was sent; cancel a scheduled batch.
			if st := decode[bt.BatchStatus](t, call(t, http.MethodPost, api+"/"+id+"/recall", bt.AdminKey, "")); st.Status != "recalled" || st.Recalled != 2 {
				t.Errorf("POST recall: %+v", st)
			}
			later := fmt.Sprintf(`{"message":"later","messageType":"text","sendAt":%d,"paras":[{"room":"room-001"}]}`, time.Now().Add(time.Hour).UnixMilli())
			sched := bt.Accepted(t, call(t, http.MethodPost, api, bt.AdminKey, later))
			if st := decode[bt.BatchStatus](t, call(t, http.MethodDelete, api+"/"+sched.BatchID, bt.AdminKey, "")); st.Status != "canceled" || st.Canceled != 1 {
				t.Errorf("DELETE (cancel): %+v", st)
			}

			// The API's own errors below its mount, not the router's.
			for _, c := range []struct {
				method, path string
				status       int
				code, allow  string
			}{
				{http.MethodGet, "/" + id + "/nope", 404, "NOT_FOUND", ""},
				{http.MethodGet, "/" + id + "/recipients/x/y", 404, "NOT_FOUND", ""},
				{http.MethodGet, "/batch-20260101-nope", 404, "BATCH_NOT_FOUND", ""},
				{http.MethodPut, "", 405, "METHOD_NOT_ALLOWED", "GET, HEAD, POST"},
				{http.MethodPatch, "/" + id, 405, "METHOD_NOT_ALLOWED", "GET, HEAD, DELETE"},
				{http.MethodGet, "/" + id + "/recall", 405, "METHOD_NOT_ALLOWED", "POST"},
			} {
				r := call(t, c.method, api+c.path, bt.AdminKey, "")
				if r.Status != c.status || r.Error == nil || r.Error.Code != c.code || r.Header.Get("Allow") != c.allow {
					t.Errorf("%s %s = %d Allow %q: %s; want %d %s Allow %q", c.method, c.path, r.Status, r.Header.Get("Allow"), r.Raw, c.status, c.code, c.allow)
				}
			}
			if r := call(t, http.MethodGet, api+"/"+id, "none", ""); r.Status != 401 || r.Error == nil || r.Error.Code != "INVALID_API_KEY" {
				t.Errorf("GET without a key = %d %s", r.Status, r.Raw)
			}
		})
	}
}

// TestDashboardMounted: under every framework and placement, the
// dashboard serves its page (pointing at the API where the host put it)
// and its assets at its mount, redirects the mount without its slash,
// and its events endpoint — which calls the API in-process through the
// host's router — streams the list and the batch, and their progress to
// completed, never an apierror. (Under chi its calls used to carry the
// router's state and got 404.)
func TestDashboardMounted(t *testing.T) {
	t.Parallel()
	for _, h := range hosts {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			s := newSite(t, h, func(c *batch.Config) { c.ChunkSize = 1 })
			dash := s.dash()

			res, page := fetch(t, http.MethodGet, dash+"/")
			if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") || !strings.Contains(res.Header.Get("Content-Security-Policy"), "connect-src 'self'") {
				t.Fatalf("GET %s/ = %d %v", dash, res.StatusCode, res.Header)
			}
			for _, want := range []string{fmt.Sprintf(`data-batch-path="%s/messages/batch"`, h.prefix), `src="assets/app.js"`, `href="assets/style.css"`} {
				if !strings.Contains(page, want) {
					t.Errorf("the page lacks %s", want)
				}
			}
			// (301 from the dashboard, gin and chi; 307 from Go 1.26's ServeMux)
			if res, _ := fetch(t, http.MethodGet, dash); (res.StatusCode != http.StatusMovedPermanently && res.StatusCode != http.StatusTemporaryRedirect) || res.Header.Get("Location") != h.prefix+"/admin/batches/" {
				t.Errorf("GET %s = %d Location %q; want a redirect to %s/admin/batches/", dash, res.StatusCode, res.Header.Get("Location"), h.prefix)
			}
			for path, ctype := range map[string]string{"/assets/app.js": "text/javascript", "/assets/style.css": "text/css"} {
				if res, body := fetch(t, http.MethodGet, dash+path); res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), ctype) || len(body) < 1000 {
					t.Errorf("GET %s = %d %s, %d bytes", path, res.StatusCode, res.Header.Get("Content-Type"), len(body))
				}
			}
			if res, _ := fetch(t, http.MethodGet, dash+"/assets/nope.js"); res.StatusCode != 404 {
				t.Errorf("GET an unknown asset = %d", res.StatusCode)
			}
			// The API's own 401, through the in-process call.
			if res, body := fetch(t, http.MethodGet, dash+"/batch-events"); res.StatusCode != 401 || !strings.Contains(body, "INVALID_API_KEY") {
				t.Errorf("GET batch-events without a key = %d %s", res.StatusCode, body)
			}

			// Live progress: two chunks of one recipient each.
			id := bt.Accepted(t, call(t, http.MethodPost, s.api(), bt.AdminKey, bt.TwoReceivers)).BatchID
			ev := openEvents(t, dash+"/batch-events?batch="+url.QueryEscape(id))
			ev.next("ready")
			if b := unmarshal[batchList](t, ev.next("batches")).find(t, id); b.Status != "queued" || b.Count != 2 || b.Sent != 0 {
				t.Errorf("first list: %+v", b)
			}
			if b := unmarshal[bt.BatchStatus](t, ev.next("batch")); b.BatchID != id || b.Status != "queued" {
				t.Errorf("first batch event: %+v", b)
			}
			s.process(t, 1)
			for {
				// (a poll during the chunk may see it started, not done)
				b := unmarshal[bt.BatchStatus](t, ev.next("batch"))
				if b.Sent == 1 {
					if b.Status != "running" || b.Pending != 1 {
						t.Errorf("after one chunk of two: %+v", b)
					}
					break
				}
			}
			s.process(t, -1)
			for {
				b := unmarshal[batchList](t, ev.next("batches")).find(t, id)
				if b.Status == "completed" {
					if b.Sent != 2 || b.Pending != 0 {
						t.Errorf("completed: %+v", b)
					}
					break
				}
			}
		})
	}
}

func unmarshal[T any](t *testing.T, data json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	return v
}
