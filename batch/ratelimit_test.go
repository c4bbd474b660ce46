package batch_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

// The tests of Config.RateLimit with a limiter in the process (a scripted
// fake, and memLimiter, a GCRA on a clock the test moves). The same on
// Redis, shared by Services and with Redis going down, is in
// internal/integration/ratelimit_test.go.

// limiterCall is one call of a test limiter.
type limiterCall struct {
	key  string
	rate batch.Rate
	n    int
}

// scriptedLimiter answers every call with decide and records it.
type scriptedLimiter struct {
	mu     sync.Mutex
	calls  []limiterCall
	decide func(c limiterCall) (batch.RateDecision, error)
}

func (l *scriptedLimiter) Allow(_ context.Context, key string, rate batch.Rate, n int) (batch.RateDecision, error) {
	c := limiterCall{key, rate, n}
	l.mu.Lock()
	l.calls = append(l.calls, c)
	l.mu.Unlock()
	return l.decide(c)
}

func (l *scriptedLimiter) Calls() []limiterCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]limiterCall(nil), l.calls...)
}

// memLimiter is a GCRA in memory on a clock the test sets.
type memLimiter struct {
	mu  sync.Mutex
	now time.Time
	tat map[string]time.Time
}

func newMemLimiter() *memLimiter {
	return &memLimiter{now: time.Unix(1_800_000_000, 0), tat: map[string]time.Time{}}
}

func (m *memLimiter) advance(d time.Duration) {
	m.mu.Lock()
	m.now = m.now.Add(d)
	m.mu.Unlock()
}

func (m *memLimiter) Allow(_ context.Context, key string, rate batch.Rate, n int) (batch.RateDecision, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, capacity := rate.Interval(), rate.Interval()*time.Duration(rate.Burst)
	tat := m.tat[key]
	if tat.Before(m.now) {
		tat = m.now
	}
	next := tat.Add(time.Duration(n) * t)
	if next.Sub(m.now) > capacity {
		return batch.RateDecision{Remaining: int((capacity - tat.Sub(m.now)) / t), RetryAfter: next.Sub(m.now) - capacity, ResetAfter: tat.Sub(m.now)}, nil
	}
	m.tat[key] = next
	return batch.RateDecision{Allowed: true, Remaining: int((capacity - next.Sub(m.now)) / t), ResetAfter: next.Sub(m.now)}, nil
}

// rateEnv is an Env whose Config.RateLimit is rl.
func rateEnv(t *testing.T, rl *batch.RateLimit, mutate func(*batch.Config)) *bt.Env {
	t.Helper()
	return bt.NewEnv(t, func(c *batch.Config) {
		c.RateLimit = rl
		if mutate != nil {
			mutate(c)
		}
	})
}

// batchCount is how many batches app has in e's store.
func batchCount(t *testing.T, e *bt.Env, app string) int {
	t.Helper()
	bs, err := e.St.ListBatches(context.Background(), &store.ListBatchesParams{AppID: app, Limit: 10_000})
	bt.Must(t, err)
	return len(bs)
}

// manyParas is a request body of n paras over the seeded users and rooms.
func manyParas(n int) string {
	var b strings.Builder
	b.WriteString(`{"message":"Hi $name$","messageType":"text","paras":[`)
	users := []string{"user-a", "user-b", "user-c", "user-d"}
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		if i%5 == 4 {
			fmt.Fprintf(&b, `{"room":"room-00%d","$name$":"r%d"}`, 1+i%3, i)
		} else {
			fmt.Fprintf(&b, `{"receiver":%q,"$name$":"u%d"}`, users[i%4], i)
		}
	}
	b.WriteString(`]}`)
	return b.String()
}

func wantHeader(t *testing.T, r *bt.Response, name, want string) {
	t.Helper()
	if got := r.Header.Get(name); got != want {
		t.Errorf("%s = %q, want %q (%d %s)", name, got, want, r.Status, r.Raw)
	}
}

// TestRateLimitHeaders: the headers and the 429 from the limiter's
// answers; durations are rounded up to whole seconds.
func TestRateLimitHeaders(t *testing.T) {
	t.Parallel()
	var next batch.RateDecision
	var mu sync.Mutex
	l := &scriptedLimiter{decide: func(limiterCall) (batch.RateDecision, error) {
		mu.Lock()
		defer mu.Unlock()
		return next, nil
	}}
	set := func(d batch.RateDecision) { mu.Lock(); next = d; mu.Unlock() }
	e := rateEnv(t, &batch.RateLimit{RequestsPerMinute: 1000, RequestBurst: 10, Limiter: l}, nil)

	set(batch.RateDecision{Allowed: true, Remaining: 7, ResetAfter: 1500 * time.Millisecond})
	r := e.Post(t, bt.AdminKey, bt.TwoReceivers)
	bt.Accepted(t, r)
	wantHeader(t, r, "X-RateLimit-Limit", "10")
	wantHeader(t, r, "X-RateLimit-Remaining", "7")
	wantHeader(t, r, "X-RateLimit-Reset", "2")
	wantHeader(t, r, "Retry-After", "")
	calls := l.Calls()
	if len(calls) != 1 || calls[0] != (limiterCall{"chatbatch:ratelimit:requests:" + bt.TestApp, batch.Rate{PerMinute: 1000, Burst: 10}, 1}) {
		t.Errorf("limiter calls = %+v", calls)
	}
	if got := (batch.Rate{PerMinute: 1000}).Interval(); got != 60*time.Millisecond {
		t.Errorf("Interval of 1000 a minute = %v", got)
	}

	before := batchCount(t, e, bt.TestApp)
	tasks := len(e.Enq.All())
	for _, c := range []struct {
		d                          batch.RateDecision
		retryAfter, reset, remains string
	}{
		{batch.RateDecision{RetryAfter: 1001 * time.Millisecond, ResetAfter: 59200 * time.Millisecond}, "2", "60", "0"},
		{batch.RateDecision{RetryAfter: 2 * time.Second, ResetAfter: 10 * time.Second}, "2", "10", "0"},
		{batch.RateDecision{RetryAfter: 0, ResetAfter: 0, Remaining: 99}, "1", "0", "10"}, // a limiter's nonsense is clamped
	} {
		set(c.d)
		for _, req := range []func() *bt.Response{
			func() *bt.Response { return e.Post(t, bt.AdminKey, bt.TwoReceivers) },
			func() *bt.Response {
				return e.DoWith(t, http.MethodPost, "/messages/batch", bt.AdminKey, strings.NewReader(bt.TwoReceivers), map[string]string{"Idempotency-Key": "k-1"})
			},
			func() *bt.Response { return e.Do(t, http.MethodGet, "/messages/batch/batch-x", bt.AdminKey, "", nil) },
			func() *bt.Response {
				return e.Do(t, http.MethodDelete, "/messages/batch/batch-x", bt.AdminKey, "", nil)
			},
		} {
			r := req()
			if r.Status != http.StatusTooManyRequests || r.Error == nil || r.Error.Code != batch.CodeRateLimitExceeded || len(r.Error.Details) != 0 {
				t.Fatalf("over the limit: %d %s", r.Status, r.Raw)
			}
			wantHeader(t, r, "Retry-After", c.retryAfter)
			wantHeader(t, r, "X-RateLimit-Limit", "10")
			wantHeader(t, r, "X-RateLimit-Remaining", c.remains)
			wantHeader(t, r, "X-RateLimit-Reset", c.reset)
		}
	}
	if n := batchCount(t, e, bt.TestApp); n != before || len(e.Enq.All()) != tasks {
		t.Errorf("rate-limited requests stored %d batches and enqueued %d tasks", n-before, len(e.Enq.All())-tasks)
	}
	// The refused request with an Idempotency-Key claimed nothing: the
	// key is free once the limit allows.
	set(batch.RateDecision{Allowed: true, Remaining: 5, ResetAfter: time.Second})
	r = e.DoWith(t, http.MethodPost, "/messages/batch", bt.AdminKey, strings.NewReader(bt.TwoReceivers), map[string]string{"Idempotency-Key": "k-1"})
	bt.Accepted(t, r)
	wantHeader(t, r, "Idempotent-Replayed", "")
}

// TestRateLimitRequests: a burst over the limit is refused, other apps
// are not, the limit comes back at its rate; every authenticated request
// counts, whatever its method and outcome, and only those.
func TestRateLimitRequests(t *testing.T) {
	t.Parallel()
	l := newMemLimiter()
	e := rateEnv(t, &batch.RateLimit{RequestsPerMinute: 60, RequestBurst: 4, Limiter: l, KeyPrefix: "p:"}, nil)
	id := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.TwoReceivers)).BatchID
	for i, r := range []*bt.Response{
		e.Do(t, http.MethodGet, "/messages/batch/"+id, bt.UserKey, "", nil),                  // same app, other key
		e.Do(t, http.MethodGet, "/messages/batch/nope", bt.AdminKey, "", nil),                // 404 counts
		e.Do(t, http.MethodDelete, "/messages/batch/"+id, bt.AdminKey, "", nil),              // cancel
		e.Do(t, http.MethodGet, "/messages/batch/"+id, "wrong-key", "", nil),                 // 401: not counted
		e.Do(t, http.MethodPut, "/messages/batch/"+id, bt.AdminKey, bt.JSONContentType, nil), // 405 before the key: not counted
	} {
		if r.Status == http.StatusTooManyRequests {
			t.Errorf("request %d: 429 within the burst", i)
		}
	}
	r := e.Do(t, http.MethodGet, "/messages/batch/"+id, bt.AdminKey, "", nil)
	if r.Status != http.StatusTooManyRequests {
		t.Fatalf("the 5th request of a burst of 4: %d %s", r.Status, r.Raw)
	}
	wantHeader(t, r, "Retry-After", "1")
	wantHeader(t, r, "X-RateLimit-Remaining", "0")
	wantHeader(t, r, "X-RateLimit-Reset", "4")
	if r := e.Do(t, http.MethodGet, "/messages/batch/"+id, bt.OtherKey, "", nil); r.Status != http.StatusNotFound {
		t.Errorf("another app is limited too: %d %s", r.Status, r.Raw)
	}
	l.advance(time.Second) // one request back
	r = e.Do(t, http.MethodGet, "/messages/batch/"+id, bt.AdminKey, "", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("after a second: %d %s", r.Status, r.Raw)
	}
	wantHeader(t, r, "X-RateLimit-Remaining", "0")
	if r := e.Do(t, http.MethodGet, "/messages/batch/"+id, bt.AdminKey, "", nil); r.Status != http.StatusTooManyRequests {
		t.Errorf("a second request after a second: %d", r.Status)
	}
	l.advance(4 * time.Second) // full again
	r = e.Do(t, http.MethodGet, "/messages/batch/"+id, bt.AdminKey, "", nil)
	wantHeader(t, r, "X-RateLimit-Remaining", "3")
	wantHeader(t, r, "X-RateLimit-Reset", "1")
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.tat["p:requests:"+bt.TestApp]; !ok || len(l.tat) != 2 {
		t.Errorf("keys = %v, want p:requests:app1 and p:requests:app2", l.tat)
	}
}

// TestRateLimitRecipients: the paras of POSTs count against
// RecipientsPerMinute (a burst of a minute's worth by default); dry runs
// do not; more than the burst is 413; a refused POST stores nothing.
func TestRateLimitRecipients(t *testing.T) {
	t.Parallel()
	l := newMemLimiter()
	e := rateEnv(t, &batch.RateLimit{RecipientsPerMinute: 1000, Limiter: l}, nil)
	body := manyParas(600)
	r := e.Post(t, bt.AdminKey, body)
	bt.Accepted(t, r)
	wantHeader(t, r, "X-RateLimit-Recipients-Limit", "1000")
	wantHeader(t, r, "X-RateLimit-Recipients-Remaining", "400")
	wantHeader(t, r, "X-RateLimit-Recipients-Reset", "36") // 600 × 60 ms
	wantHeader(t, r, "X-RateLimit-Limit", "")              // no request limit
	// A second POST of 600: 200 more than are left, which come back in
	// 12 s. It carries an Idempotency-Key, which it leaves free.
	tasks, before := len(e.Enq.All()), batchCount(t, e, bt.TestApp)
	r = e.DoWith(t, http.MethodPost, "/messages/batch", bt.AdminKey, strings.NewReader(body), map[string]string{"Idempotency-Key": "big-1"})
	if r.Status != http.StatusTooManyRequests || r.Error.Code != batch.CodeRateLimitExceeded {
		t.Fatalf("600 more recipients: %d %s", r.Status, r.Raw)
	}
	wantHeader(t, r, "Retry-After", "12")
	wantHeader(t, r, "X-RateLimit-Recipients-Remaining", "400")
	if n := batchCount(t, e, bt.TestApp); n != before || len(e.Enq.All()) != tasks {
		t.Errorf("a refused POST stored %d batches, enqueued %d tasks", n-before, len(e.Enq.All())-tasks)
	}
	// A dry run and a POST of another app take none.
	if r := e.Post(t, bt.AdminKey, ""); r.Status != http.StatusBadRequest {
		t.Errorf("empty body: %d", r.Status)
	}
	r = e.Do(t, http.MethodPost, "/messages/batch?dryRun=true", bt.AdminKey, bt.JSONContentType, strings.NewReader(body))
	if r.Status != http.StatusOK {
		t.Errorf("dry run: %d %s", r.Status, r.Raw)
	}
	bt.Accepted(t, e.Post(t, bt.OtherKey, body))
	r = e.Post(t, bt.AdminKey, manyParas(400))
	bt.Accepted(t, r)
	wantHeader(t, r, "X-RateLimit-Recipients-Remaining", "0")
	// More than the burst can never pass: 413, and nothing taken.
	r = e.Post(t, bt.OtherKey, manyParas(1001))
	if r.Status != http.StatusRequestEntityTooLarge || r.Error.Code != batch.CodePayloadTooLarge {
		t.Errorf("1,001 recipients with a burst of 1,000: %d %s", r.Status, r.Raw)
	}
	// The refused key is free again.
	l.advance(time.Minute)
	r = e.DoWith(t, http.MethodPost, "/messages/batch", bt.AdminKey, strings.NewReader(body), map[string]string{"Idempotency-Key": "big-1"})
	bt.Accepted(t, r)
	wantHeader(t, r, "Idempotent-Replayed", "")
}

// recordingHandler keeps the records at or above a level.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r)
	h.mu.Unlock()
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) count(level slog.Level, substr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Level == level && strings.Contains(r.Message, substr) {
			n++
		}
	}
	return n
}

// TestRateLimitFailsOpen: a limiter that fails or hangs does not stop
// the API: requests are served without the headers, within
// RateLimit.Timeout, and for 10 × Timeout after a failure without asking
// the limiter; the failures are logged once (not per request), and so is
// the limiter answering again.
func TestRateLimitFailsOpen(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var mode string
	var mu sync.Mutex
	l := &scriptedLimiter{decide: func(limiterCall) (batch.RateDecision, error) {
		mu.Lock()
		m := mode
		mu.Unlock()
		switch m {
		case "fail":
			return batch.RateDecision{}, errors.New("connection refused")
		case "hang": // and ignore the context, as go-redis does
			<-release
			return batch.RateDecision{}, errors.New("released")
		}
		return batch.RateDecision{Allowed: true, Remaining: 9, ResetAfter: time.Second}, nil
	}}
	setMode := func(m string) { mu.Lock(); mode = m; mu.Unlock() }
	logs := &recordingHandler{}
	const timeout, pause = 50 * time.Millisecond, 500 * time.Millisecond
	e := rateEnv(t, &batch.RateLimit{RequestsPerMinute: 600, RecipientsPerMinute: 600, Limiter: l, Timeout: timeout},
		func(c *batch.Config) { c.Logger = slog.New(logs) })
	for _, m := range []string{"fail", "hang"} {
		setMode(m)
		calls := len(l.Calls())
		for range 5 {
			start := time.Now()
			r := e.Post(t, bt.AdminKey, bt.TwoReceivers)
			bt.Accepted(t, r)
			if took := time.Since(start); took > pause {
				t.Errorf("%s: a request took %v with RateLimit.Timeout %v", m, took, timeout)
			}
			wantHeader(t, r, "X-RateLimit-Limit", "")
			wantHeader(t, r, "X-RateLimit-Recipients-Limit", "")
		}
		if n := len(l.Calls()) - calls; n != 1 {
			t.Errorf("%s: the limiter was asked %d times in 10 × Timeout, want once", m, n)
		}
		time.Sleep(pause)
	}
	if n := logs.count(slog.LevelError, "rate limiter failed"); n != 1 {
		t.Errorf("the failing limiter logged %d errors, want 1", n)
	}
	setMode("")
	for range 3 {
		r := e.Post(t, bt.AdminKey, bt.TwoReceivers)
		wantHeader(t, r, "X-RateLimit-Remaining", "9")
	}
	if n := logs.count(slog.LevelInfo, "answers again"); n != 1 {
		t.Errorf("the limiter answering again logged %d times, want 1", n)
	}
}

// TestRateLimitDefaultOnUnreachableRedis: the default limiter on a
// Config.Redis that refuses connections fails open, and Close closes
// its client.
func TestRateLimitDefaultOnUnreachableRedis(t *testing.T) {
	t.Parallel()
	e := rateEnv(t, &batch.RateLimit{RequestsPerMinute: 1}, func(c *batch.Config) {
		c.Redis = asynq.RedisClientOpt{Addr: "127.0.0.1:1", DialTimeout: 50 * time.Millisecond}
	})
	for range 3 {
		r := e.Post(t, bt.AdminKey, bt.TwoReceivers)
		bt.Accepted(t, r)
		wantHeader(t, r, "X-RateLimit-Limit", "")
	}
	bt.Must(t, e.Svc.Close())
}

func TestRateLimitConfig(t *testing.T) {
	t.Parallel()
	base := func() batch.Config {
		return batch.Config{Store: memstore.New(nil), Deliverer: delivery.Discard{}, Authenticator: batch.NewStaticKeys(nil),
			Redis: asynq.RedisClientOpt{Addr: "127.0.0.1:1"}}
	}
	l := &scriptedLimiter{}
	for name, c := range map[string]struct {
		rl   *batch.RateLimit
		noRd bool
		want string
	}{
		"no limit":            {&batch.RateLimit{}, false, "sets no limit"},
		"negative":            {&batch.RateLimit{RequestsPerMinute: -1}, false, "RateLimit.RequestsPerMinute is negative"},
		"negative timeout":    {&batch.RateLimit{RequestsPerMinute: 1, Timeout: -1}, false, "RateLimit.Timeout is negative"},
		"burst without rate":  {&batch.RateLimit{RecipientsPerMinute: 5, RequestBurst: 3}, false, "RequestBurst is set without RequestsPerMinute"},
		"recipient burst":     {&batch.RateLimit{RequestsPerMinute: 5, RecipientBurst: 3}, false, "RecipientBurst is set without RecipientsPerMinute"},
		"no Redis":            {&batch.RateLimit{RequestsPerMinute: 5}, true, "needs Config.Redis or RateLimit.Limiter"},
		"ok":                  {&batch.RateLimit{RequestsPerMinute: 5}, false, ""},
		"ok with own limiter": {&batch.RateLimit{RecipientsPerMinute: 5, Limiter: l}, true, ""},
	} {
		cfg := base()
		cfg.RateLimit = c.rl
		if c.noRd {
			cfg.Redis, cfg.Enqueuer = nil, &bt.RecordingEnqueuer{}
		}
		svc, err := batch.New(cfg)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: New returned %v, want an error with %q", name, err, c.want)
		}
		if svc != nil {
			bt.Must(t, svc.Close())
		}
	}
}

// TestRateLimitDefaults: bursts default to a minute's worth, keys to
// DefaultRateLimitKeyPrefix; the caller's RateLimit is not changed.
func TestRateLimitDefaults(t *testing.T) {
	t.Parallel()
	l := &scriptedLimiter{decide: func(limiterCall) (batch.RateDecision, error) {
		return batch.RateDecision{Allowed: true}, nil
	}}
	rl := &batch.RateLimit{RequestsPerMinute: 1000, RecipientsPerMinute: 5000, Limiter: l}
	e := rateEnv(t, rl, nil)
	bt.Accepted(t, e.Post(t, bt.AdminKey, bt.TwoReceivers))
	want := []limiterCall{
		{batch.DefaultRateLimitKeyPrefix + "requests:" + bt.TestApp, batch.Rate{PerMinute: 1000, Burst: 1000}, 1},
		{batch.DefaultRateLimitKeyPrefix + "recipients:" + bt.TestApp, batch.Rate{PerMinute: 5000, Burst: 5000}, 2},
	}
	if got := l.Calls(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("calls = %+v, want %+v", got, want)
	}
	if rl.RequestBurst != 0 || rl.KeyPrefix != "" || rl.Timeout != 0 {
		t.Errorf("New changed the caller's RateLimit: %+v", rl)
	}
}
