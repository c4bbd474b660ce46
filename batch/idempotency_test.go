package batch_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/internal/seed"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	e := bt.NewEnv(t, func(c *batch.Config) { c.Now = func() time.Time { return *clock.Load() } })
	post := func(key, appKey, body string) *bt.Response {
		t.Helper()
		req := strings.NewReader(body)
		r := e.DoWith(t, http.MethodPost, "/messages/batch", appKey, req, map[string]string{"Idempotency-Key": key})
		return r
	}
	first := bt.Accepted(t, post("order-42", bt.AdminKey, seed.Template))
	again := post("order-42", bt.AdminKey, seed.Template)
	if res := bt.Accepted(t, again); res != first || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("the same key and body = %+v (replayed %q), want the first response %+v", res, again.Header.Get("Idempotent-Replayed"), first)
	}
	if n := len(e.Enq.All()); n != 1 {
		t.Errorf("%d tasks enqueued for two requests with one key, want 1", n)
	}
	r := post("order-42", bt.AdminKey, seed.Broadcast)
	if r.Status != 422 || r.Error.Code != "IDEMPOTENCY_KEY_REUSED" {
		t.Errorf("the same key with another body = %d %s", r.Status, r.Raw)
	}
	// Keys are scoped by app.
	if res := bt.Accepted(t, post("order-42", bt.OtherKey, seed.Template)); res.BatchID == first.BatchID {
		t.Error("another app's request with the same key got the first app's batch")
	}
	// A request that fails frees its key for a retry.
	body := `{"message":"m","messageType":"text","paras":[{"receiver":"late-user"}]}`
	if r := post("signup-7", bt.AdminKey, body); r.Status != 404 {
		t.Fatalf("= %d %s", r.Status, r.Raw)
	}
	bt.Must(t, e.St.AddUsers(t.Context(), bt.TestApp, "late-user"))
	bt.Accepted(t, post("signup-7", bt.AdminKey, body))
	// After the TTL the key is new again.
	later := now.Add(24*time.Hour + time.Minute)
	clock.Store(&later)
	if res := bt.Accepted(t, post("order-42", bt.AdminKey, seed.Template)); res.BatchID == first.BatchID {
		t.Error("a key past its TTL replayed the old batch")
	}
	// While the first request with a key is being accepted: 409.
	_, err := e.St.ClaimIdempotencyKey(t.Context(), &store.ClaimIdempotencyKeyParams{Record: &store.IdempotencyRecord{AppID: bt.TestApp, Key: "busy", RequestHash: "x", CreatedAt: later, ExpiresAt: later.Add(time.Hour)}, StaleBefore: later.Add(-time.Minute)})
	bt.Must(t, err)
	r = post("busy", bt.AdminKey, seed.Template)
	if r.Status != 409 || r.Error.Code != "IDEMPOTENCY_IN_PROGRESS" || r.Header.Get("Retry-After") == "" {
		t.Errorf("a key in progress = %d %s", r.Status, r.Raw)
	}
	// A dry run ignores the key.
	if r := e.DoWith(t, http.MethodPost, "/messages/batch?dryRun=true", bt.AdminKey, strings.NewReader(seed.Template), map[string]string{"Idempotency-Key": "busy"}); r.Status != 200 {
		t.Errorf("a dry run with a busy key = %d %s", r.Status, r.Raw)
	}
	for _, key := range []string{"", strings.Repeat("k", 256), "naïve", "tab\there"} {
		r := post(key, bt.AdminKey, seed.Template)
		if r.Status != 400 || r.Error.Code != "INVALID_PARAMETER" || !strings.Contains(r.Error.Message, "Idempotency-Key") {
			t.Errorf("key %q = %d %s", key, r.Status, r.Raw)
		}
	}
}

// TestIdempotencyConcurrent sends fifty identical requests with one key
// at once: exactly one batch is created.
func TestIdempotencyConcurrent(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	bt.CheckOneBatch(t, e.BlastOneKey(t, 50), len(e.Enq.All()))
}
