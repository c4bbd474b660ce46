package batch_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
)

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	_, err := batch.New(batch.Config{})
	if err == nil {
		t.Fatal("New with an empty Config succeeded")
	}
	for _, field := range []string{"Config.Store", "Config.Deliverer", "Config.Authenticator", "Config.Redis"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("the error %q does not name %s", err, field)
		}
	}
	st := memstore.New(nil)
	ok := batch.Config{Store: st, Deliverer: delivery.Discard{}, Authenticator: batch.NewStaticKeys(nil), Redis: asynq.RedisClientOpt{Addr: "127.0.0.1:1"}}
	for name, mutate := range map[string]func(*batch.Config){
		"ChunkSize":   func(c *batch.Config) { c.ChunkSize = 20; c.MaxRecipients = 10 },
		"BasePath":    func(c *batch.Config) { c.BasePath = "messages/" },
		"ExtraFields": func(c *batch.Config) { c.ExtraFields = []string{"paras"} },
		// Negative numbers were once taken for the default.
		"ChunkSize is negative":    func(c *batch.Config) { c.ChunkSize = -5 },
		"StoreTimeout is negative": func(c *batch.Config) { c.StoreTimeout = -time.Second },
		"MaxRetry is -2":           func(c *batch.Config) { c.MaxRetry = -2 },
	} {
		c := ok
		mutate(&c)
		if _, err := batch.New(c); err == nil || !strings.Contains(err.Error(), "Config."+name) {
			t.Errorf("%s: New = %v, want an error naming Config.%s", name, err, name)
		}
	}
	svc, err := batch.New(ok)
	if err != nil {
		t.Fatalf("New with the required fields: %v", err)
	}
	must(t, svc.Close())
	noRetry := ok
	noRetry.MaxRetry = batch.NoRetry
	if svc, err := batch.New(noRetry); err != nil {
		t.Errorf("New with MaxRetry: NoRetry: %v", err)
	} else {
		must(t, svc.Close())
	}
	// The parts may come separately: the host's own directory and messages.
	split := ok
	split.Store, split.Directory, split.Messages, split.Batches = nil, st, st, st
	if _, err := batch.New(split); err != nil {
		t.Errorf("New with Directory, Messages and Batches: %v", err)
	}
}

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

func TestMounting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	post := func(t *testing.T, h http.Handler, path string) int {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(validBody))
		req.Header.Set("IM-API-KEY", adminKey)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	get := func(t *testing.T, h http.Handler, path string) *response {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("IM-API-KEY", adminKey)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return decodeResponse(t, w.Result())
	}

	t.Run("ServeMux via Mount", func(t *testing.T) {
		mux := http.NewServeMux()
		e.svc.Mount(mux)
		if code := post(t, mux, "/messages/batch"); code != 200 {
			t.Errorf("POST /messages/batch = %d", code)
		}
		if code := post(t, mux, "/messages/batch/"); code != 200 {
			t.Errorf("POST /messages/batch/ = %d", code)
		}
		if r := get(t, mux, "/messages/batch/batch-nope"); r.status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
			t.Errorf("GET a batch = %d %s", r.status, r.raw)
		}
	})
	t.Run("ServeMux with method patterns", func(t *testing.T) {
		mux := http.NewServeMux()
		mux.Handle("POST /messages/batch", e.svc.Handler())
		mux.Handle("GET /messages/batch/{batchID}", e.svc.Handler())
		if code := post(t, mux, "/messages/batch"); code != 200 {
			t.Errorf("POST = %d", code)
		}
		if r := get(t, mux, "/messages/batch/x"); r.Error == nil || r.Error.Code != "BATCH_NOT_FOUND" {
			t.Errorf("GET = %s", r.raw)
		}
	})
	t.Run("StripPrefix under a versioned path", func(t *testing.T) {
		mux := http.NewServeMux()
		mux.Handle("/api/v1/messages/batch/", http.StripPrefix("/api/v1", e.svc.Handler()))
		mux.Handle("/api/v1/messages/batch", http.StripPrefix("/api/v1", e.svc.Handler()))
		if code := post(t, mux, "/api/v1/messages/batch"); code != 200 {
			t.Errorf("POST = %d", code)
		}
	})
	t.Run("custom BasePath", func(t *testing.T) {
		c := newEnv(t, func(c *batch.Config) { c.BasePath = "/v2/broadcasts" })
		mux := http.NewServeMux()
		c.svc.Mount(mux)
		if code := post(t, mux, "/v2/broadcasts"); code != 200 {
			t.Errorf("POST /v2/broadcasts = %d", code)
		}
		if code := post(t, mux, "/messages/batch"); code != 404 {
			t.Errorf("POST to the default path on a custom BasePath = %d, want 404", code)
		}
	})
}
