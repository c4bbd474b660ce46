package batch_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

func (e *env) cancel(t *testing.T, key, id string) (*response, batchStatus) {
	t.Helper()
	r := e.do(t, http.MethodDelete, "/messages/batch/"+id, key, "", nil)
	var st batchStatus
	if r.status == 200 {
		must(t, json.Unmarshal(r.Result, &st))
	}
	return r, st
}

const eightRecipients = `{"message":"m","messageType":"text","paras":[
	{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"receiver":"user-d"},
	{"room":"room-001"},{"room":"room-002"},{"room":"room-003"},{"receiver":"user-a"}]}`

// TestCancel cancels a batch while one chunk is being delivered: that
// chunk finishes, the chunks not started are never sent.
func TestCancel(t *testing.T) {
	t.Parallel()
	var done []batch.BatchSummary
	var mu sync.Mutex
	e := newEnv(t, func(c *batch.Config) {
		c.ChunkSize = 2
		c.OnBatchDone = func(_ context.Context, s batch.BatchSummary) {
			mu.Lock()
			defer mu.Unlock()
			done = append(done, s)
		}
	})
	res := accepted(t, e.post(t, adminKey, eightRecipients))
	tasks := e.enq.all()
	must(t, e.svc.Processor().ProcessTask(t.Context(), tasks[0].task))

	inDeliver, release := make(chan struct{}), make(chan struct{})
	e.rec.DeliverHook = func(context.Context, []store.Message) error {
		close(inDeliver)
		<-release
		return nil
	}
	chunk1 := make(chan error, 1)
	go func() { chunk1 <- e.svc.Processor().ProcessTask(context.Background(), tasks[1].task) }()
	<-inDeliver

	r, st := e.cancel(t, adminKey, res.BatchID)
	if r.status != 200 || st.Status != "canceled" || st.Canceled != 4 || st.Sent != 2 || st.Pending != 2 {
		t.Fatalf("DELETE while chunk 1 is delivered = %d %s", r.status, r.raw)
	}
	close(release)
	must(t, <-chunk1)
	e.rec.DeliverHook = nil
	for _, q := range tasks[2:] {
		must(t, e.svc.Processor().ProcessTask(t.Context(), q.task))
	}
	_, st = e.status(t, adminKey, res.BatchID)
	if st.Status != "canceled" || st.Sent != 4 || st.Canceled != 4 || st.Failed != 0 || st.Pending != 0 || st.FinishedAt == nil {
		t.Errorf("final status %+v, want 4 sent (chunks 0 and 1), 4 canceled", st)
	}
	if n := len(e.rec.Messages()); n != 4 {
		t.Errorf("%d messages delivered, want the 4 of chunks 0 and 1", n)
	}
	_, page := e.recipients(t, res.BatchID, "?status=canceled")
	if len(page.Recipients) != 4 || page.Recipients[0].Index != 4 {
		t.Errorf("canceled recipients %+v", page)
	}
	mu.Lock()
	if len(done) != 1 || done[0].Status != store.StatusCanceled || done[0].Canceled != 4 {
		t.Errorf("OnBatchDone calls %+v, want one with status canceled", done)
	}
	mu.Unlock()

	r, _ = e.cancel(t, adminKey, res.BatchID)
	if r.status != 409 || r.Error.Code != "BATCH_FINISHED" || !strings.Contains(r.Error.Message, "canceled") {
		t.Errorf("canceling a finished batch = %d %s", r.status, r.raw)
	}
}

func TestCancelErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	res := accepted(t, e.post(t, adminKey, validBody))
	if r, _ := e.cancel(t, otherKey, res.BatchID); r.status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
		t.Errorf("another app's DELETE = %d %s", r.status, r.raw)
	}
	if r, _ := e.cancel(t, adminKey, "batch-nope"); r.status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
		t.Errorf("DELETE of an unknown batch = %d %s", r.status, r.raw)
	}
	if r := e.do(t, http.MethodDelete, "/messages/batch/"+res.BatchID+"?force=1", adminKey, "", nil); r.status != 400 || r.Error.Code != "INVALID_PARAMETER" {
		t.Errorf("DELETE with an unknown parameter = %d %s", r.status, r.raw)
	}
	e.processAll(t)
	if r, _ := e.cancel(t, adminKey, res.BatchID); r.status != 409 || r.Error.Code != "BATCH_FINISHED" || !strings.Contains(r.Error.Message, "completed") {
		t.Errorf("canceling a completed batch = %d %s", r.status, r.raw)
	}
}

func TestCancelScheduled(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	e := newEnv(t, func(c *batch.Config) {
		c.OnBatchDone = func(context.Context, batch.BatchSummary) { calls.Add(1) }
	})
	at := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	res := accepted(t, e.post(t, adminKey, `{"message":"m","messageType":"text","sendAt":"`+at+`","paras":[{"receiver":"user-a"},{"room":"room-001"}]}`))
	if _, st := e.status(t, adminKey, res.BatchID); st.Status != "scheduled" {
		t.Fatalf("status %s, want scheduled", st.Status)
	}
	r, st := e.cancel(t, adminKey, res.BatchID)
	if r.status != 200 || st.Status != "canceled" || st.Canceled != 2 || st.Pending != 0 || st.FinishedAt == nil {
		t.Errorf("DELETE of a scheduled batch = %d %s", r.status, r.raw)
	}
	// When its time comes, the task finds nothing to do.
	e.processAll(t)
	if n := len(e.rec.Messages()); n != 0 {
		t.Errorf("a canceled scheduled batch delivered %d messages", n)
	}
	if calls.Load() != 1 {
		t.Errorf("OnBatchDone ran %d times, want once (by the cancel)", calls.Load())
	}
}

// TestCancelStopsRetries: a chunk that failed before the cancel is not
// sent by its retry.
func TestCancelStopsRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.rec.DeliverHook = func(context.Context, []store.Message) error { return errors.New("hub down") }
	res := accepted(t, e.post(t, adminKey, seedTemplate))
	task := e.enq.all()[0].task
	if err := e.svc.Processor().ProcessTask(t.Context(), task); err == nil {
		t.Fatal("the first attempt succeeded")
	}
	e.rec.DeliverHook = nil
	if r, st := e.cancel(t, adminKey, res.BatchID); r.status != 200 || st.Pending != 2 {
		t.Fatalf("cancel = %d %s; the started chunk should still be pending", r.status, r.raw)
	}
	must(t, e.svc.Processor().ProcessTask(t.Context(), task))
	if _, st := e.status(t, adminKey, res.BatchID); st.Canceled != 2 || st.Sent != 0 || st.Status != "canceled" {
		t.Errorf("after the retry: %+v", st)
	}
	if n := len(e.rec.Messages()); n != 0 {
		t.Errorf("the retry delivered %d messages after the cancel", n)
	}
}

// TestCancelWhileRunning cancels a batch on a real asynq server mid-way;
// every recipient ends sent or canceled, none pending, none twice.
func TestCancelWhileRunning(t *testing.T) {
	t.Parallel()
	e := newQueuedEnv(t, miniRedis(t), func(c *batch.Config) { c.ChunkSize = 1; c.Concurrency = 1 })
	cancelWhileRunning(t, e)
}

// cancelWhileRunning sends eight recipients, one chunk each, holds the
// first chunk in delivery, cancels, lets it go and checks the end: some
// sent, the rest canceled, none pending, and the deliveries match.
func cancelWhileRunning(t *testing.T, e *env) {
	t.Helper()
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.rec.DeliverHook = func(context.Context, []store.Message) error {
		once.Do(func() { close(started); <-release })
		return nil
	}
	res := accepted(t, e.post(t, adminKey, eightRecipients))
	<-started
	r, _ := e.cancel(t, adminKey, res.BatchID)
	close(release)
	if r.status != 200 {
		t.Fatalf("cancel = %d %s", r.status, r.raw)
	}
	st := e.waitFinished(t, adminKey, res.BatchID)
	if st.Status != "canceled" || st.Sent+st.Canceled != 8 || st.Pending != 0 || st.Sent == 0 || st.Canceled == 0 {
		t.Errorf("final %+v, want some sent, the rest canceled", st)
	}
	if n := len(e.rec.Messages()); n != st.Sent {
		t.Errorf("%d messages delivered, %d recorded sent", n, st.Sent)
	}
	if r, _ := e.cancel(t, adminKey, res.BatchID); r.status != 409 {
		t.Errorf("second cancel = %d %s", r.status, r.raw)
	}
}

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
	_, err := e.st.ClaimIdempotencyKey(t.Context(), &store.IdempotencyRecord{AppID: testApp, Key: "busy", RequestHash: "x", CreatedAt: later, ExpiresAt: later.Add(time.Hour)}, later.Add(-time.Minute))
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
