package batch_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	e := newEnv(t, func(c *batch.Config) { c.Now = func() time.Time { return *clock.Load() } })
	post := func(key, appKey, body string) *response {
		t.Helper()
		req := strings.NewReader(body)
		r := e.doWith(t, http.MethodPost, "/messages/batch", appKey, req, map[string]string{"Idempotency-Key": key})
		return r
	}
	first := accepted(t, post("order-42", adminKey, seedTemplate))
	again := post("order-42", adminKey, seedTemplate)
	if res := accepted(t, again); res != first || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("the same key and body = %+v (replayed %q), want the first response %+v", res, again.header.Get("Idempotent-Replayed"), first)
	}
	if n := len(e.enq.all()); n != 1 {
		t.Errorf("%d tasks enqueued for two requests with one key, want 1", n)
	}
	r := post("order-42", adminKey, seedBroadcast)
	if r.status != 422 || r.Error.Code != "IDEMPOTENCY_KEY_REUSED" {
		t.Errorf("the same key with another body = %d %s", r.status, r.raw)
	}
	// Keys are scoped by app.
	if res := accepted(t, post("order-42", otherKey, seedTemplate)); res.BatchID == first.BatchID {
		t.Error("another app's request with the same key got the first app's batch")
	}
	// A request that fails frees its key for a retry.
	body := `{"message":"m","messageType":"text","paras":[{"receiver":"late-user"}]}`
	if r := post("signup-7", adminKey, body); r.status != 404 {
		t.Fatalf("= %d %s", r.status, r.raw)
	}
	must(t, e.st.AddUsers(t.Context(), testApp, "late-user"))
	accepted(t, post("signup-7", adminKey, body))
	// After the TTL the key is new again.
	later := now.Add(24*time.Hour + time.Minute)
	clock.Store(&later)
	if res := accepted(t, post("order-42", adminKey, seedTemplate)); res.BatchID == first.BatchID {
		t.Error("a key past its TTL replayed the old batch")
	}
	// While the first request with a key is being accepted: 409.
	_, err := e.st.ClaimIdempotencyKey(t.Context(), &store.ClaimIdempotencyKeyParams{Record: &store.IdempotencyRecord{AppID: testApp, Key: "busy", RequestHash: "x", CreatedAt: later, ExpiresAt: later.Add(time.Hour)}, StaleBefore: later.Add(-time.Minute)})
	must(t, err)
	r = post("busy", adminKey, seedTemplate)
	if r.status != 409 || r.Error.Code != "IDEMPOTENCY_IN_PROGRESS" || r.header.Get("Retry-After") == "" {
		t.Errorf("a key in progress = %d %s", r.status, r.raw)
	}
	// A dry run ignores the key.
	if r := e.doWith(t, http.MethodPost, "/messages/batch?dryRun=true", adminKey, strings.NewReader(seedTemplate), map[string]string{"Idempotency-Key": "busy"}); r.status != 200 {
		t.Errorf("a dry run with a busy key = %d %s", r.status, r.raw)
	}
	for _, key := range []string{"", strings.Repeat("k", 256), "naïve", "tab\there"} {
		r := post(key, adminKey, seedTemplate)
		if r.status != 400 || r.Error.Code != "INVALID_PARAMETER" || !strings.Contains(r.Error.Message, "Idempotency-Key") {
			t.Errorf("key %q = %d %s", key, r.status, r.raw)
		}
	}
}

func TestIdempotencyKeyUnsupported(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *batch.Config) {
		st := c.Store
		c.Store = nil
		c.Directory, c.Messages = st, st
		c.Batches = struct{ store.Batches }{st} // hides IdempotencyKeys
	})
	r := e.doWith(t, http.MethodPost, "/messages/batch", adminKey, strings.NewReader(validBody), map[string]string{"Idempotency-Key": "k"})
	if r.status != 400 || r.Error.Code != "INVALID_PARAMETER" || !strings.Contains(r.Error.Message, "not supported") {
		t.Errorf("a key with a store that cannot keep it = %d %s", r.status, r.raw)
	}
	e.assertNothingHappened(t)
}

// TestIdempotencyConcurrent sends fifty identical requests with one key
// at once: exactly one batch is created.
func TestIdempotencyConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const n = 50
	var wg sync.WaitGroup
	results := make([]*response, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			results[i] = e.doWith(t, http.MethodPost, "/messages/batch", adminKey, strings.NewReader(seedTemplate), map[string]string{"Idempotency-Key": "blast-2026-11"})
		})
	}
	close(start)
	wg.Wait()
	checkOneBatch(t, results, len(e.enq.all()))
}

// checkOneBatch asserts that concurrent requests with one key produced
// one batch: every answer is that batch (200) or "in progress" (409).
func checkOneBatch(t *testing.T, results []*response, tasks int) {
	t.Helper()
	ids := map[string]int{}
	inProgress := 0
	for _, r := range results {
		switch {
		case r.status == 200:
			var res sendResult
			must(t, json.Unmarshal(r.Result, &res))
			ids[res.BatchID]++
		case r.status == 409 && r.Error.Code == "IDEMPOTENCY_IN_PROGRESS":
			inProgress++
		default:
			t.Errorf("unexpected answer %d %s", r.status, r.raw)
		}
	}
	if len(ids) != 1 {
		t.Errorf("%d requests with one key created %d batches: %v", len(results), len(ids), ids)
	}
	if tasks != 1 {
		t.Errorf("%d tasks enqueued, want 1", tasks)
	}
	t.Logf("%d answered with the batch, %d told it was in progress", len(results)-inProgress, inProgress)
}
