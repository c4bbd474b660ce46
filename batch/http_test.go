package batch_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"

	"github.com/chatbatch/chatbatch/batch"
)

func TestMounting(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	post := func(t *testing.T, h http.Handler, path string) int {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(validBody))
		req.Header.Set("IM-API-KEY", bt.AdminKey)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	get := func(t *testing.T, h http.Handler, path string) *bt.Response {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("IM-API-KEY", bt.AdminKey)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return bt.DecodeResponse(t, w.Result())
	}

	t.Run("ServeMux via Mount", func(t *testing.T) {
		mux := http.NewServeMux()
		e.Svc.Mount(mux)
		if code := post(t, mux, "/messages/batch"); code != 200 {
			t.Errorf("POST /messages/batch = %d", code)
		}
		if code := post(t, mux, "/messages/batch/"); code != 200 {
			t.Errorf("POST /messages/batch/ = %d", code)
		}
		if r := get(t, mux, "/messages/batch/batch-nope"); r.Status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
			t.Errorf("GET a batch = %d %s", r.Status, r.Raw)
		}
	})
	t.Run("ServeMux with method patterns", func(t *testing.T) {
		mux := http.NewServeMux()
		mux.Handle("POST /messages/batch", e.Svc.Handler())
		mux.Handle("GET /messages/batch/{batchID}", e.Svc.Handler())
		if code := post(t, mux, "/messages/batch"); code != 200 {
			t.Errorf("POST = %d", code)
		}
		if r := get(t, mux, "/messages/batch/x"); r.Error == nil || r.Error.Code != "BATCH_NOT_FOUND" {
			t.Errorf("GET = %s", r.Raw)
		}
	})
	t.Run("StripPrefix under a versioned path", func(t *testing.T) {
		mux := http.NewServeMux()
		mux.Handle("/api/v1/messages/batch/", http.StripPrefix("/api/v1", e.Svc.Handler()))
		mux.Handle("/api/v1/messages/batch", http.StripPrefix("/api/v1", e.Svc.Handler()))
		if code := post(t, mux, "/api/v1/messages/batch"); code != 200 {
			t.Errorf("POST = %d", code)
		}
	})
	t.Run("custom BasePath", func(t *testing.T) {
		c := bt.NewEnv(t, func(c *batch.Config) { c.BasePath = "/v2/broadcasts" })
		mux := http.NewServeMux()
		c.Svc.Mount(mux)
		if code := post(t, mux, "/v2/broadcasts"); code != 200 {
			t.Errorf("POST /v2/broadcasts = %d", code)
		}
		if code := post(t, mux, "/messages/batch"); code != 404 {
			t.Errorf("POST to the default path on a custom BasePath = %d, want 404", code)
		}
	})
}

// TestDeprecatedAPIKeyHeader: IMKit's JS SDK still sends API_KEY; it is
// accepted as IM-API-KEY's deprecated alias.
func TestDeprecatedAPIKeyHeader(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	r := e.DoWith(t, http.MethodPost, "/messages/batch", "", strings.NewReader(`{"message":"m","messageType":"text","paras":[{"receiver":"user-a"}]}`),
		map[string]string{"API_KEY": bt.AdminKey})
	bt.Accepted(t, r)
	r = e.DoWith(t, http.MethodPost, "/messages/batch", "", strings.NewReader(`{}`), map[string]string{"API_KEY": "wrong"})
	if r.Status != 401 || r.Error == nil || r.Error.Code != "INVALID_API_KEY" {
		t.Errorf("a wrong API_KEY = %d %s", r.Status, r.Raw)
	}
}
