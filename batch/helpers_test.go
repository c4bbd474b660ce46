package batch_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	"github.com/chatbatch/chatbatch/store"
	"github.com/chatbatch/chatbatch/store/storetest"
)

const (
	testApp   = "app1"
	adminKey  = "test-admin-key"
	userKey   = "test-user-key"
	otherKey  = "test-other-app-key"
	otherApp  = "app2"
	jsonCT    = "application/json; charset=utf-8"
	waitLimit = 30 * time.Second
)

// recordingEnqueuer is an Enqueuer that keeps tasks instead of queueing
// them, for handler tests that need no Redis.
type recordingEnqueuer struct {
	mu    sync.Mutex
	tasks []enqueued
	err   error // returned by every call when set
	ids   map[string]bool
}

type enqueued struct {
	task *asynq.Task
	id   string
	opts []asynq.Option
}

func (e *recordingEnqueuer) EnqueueContext(_ context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return nil, e.err
	}
	var id string
	for _, o := range opts {
		if o.Type() == asynq.TaskIDOpt {
			id = o.Value().(string)
		}
	}
	if e.ids == nil {
		e.ids = map[string]bool{}
	}
	if e.ids[id] {
		return nil, asynq.ErrTaskIDConflict
	}
	e.ids[id] = true
	e.tasks = append(e.tasks, enqueued{task, id, opts})
	return &asynq.TaskInfo{ID: id}, nil
}

func (e *recordingEnqueuer) all() []enqueued {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]enqueued(nil), e.tasks...)
}

// testStore is what the tests need of a store: the seams, the suite's
// Inspector, deletions and idempotency keys. memstore and bunstore have it.
type testStore interface {
	store.Store
	store.IdempotencyKeys
	storetest.Inspector
	DeleteRoom(ctx context.Context, app, id string) error
	DeleteUser(ctx context.Context, app, id string) error
}

// env is one Service over a store (memstore unless the test says) and a
// Recorder, seeded with the users and rooms of the seed examples.
type env struct {
	svc *batch.Service
	st  testStore
	rec *deliverytest.Recorder
	enq *recordingEnqueuer // nil when the env uses Redis
	cfg batch.Config
}

func seedDirectory(t testing.TB, st testStore) {
	t.Helper()
	ctx := t.Context()
	for _, app := range []string{testApp, otherApp} {
		must(t, st.AddUsers(ctx, app, "system", "user-a", "user-b", "user-c", "user-d"))
		must(t, st.AddRoom(ctx, app, "room-001", "user-a", "user-b"))
		must(t, st.AddRoom(ctx, app, "room-002", "user-b", "user-c", "system"))
		must(t, st.AddRoom(ctx, app, "room-003", "user-c"))
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// quietLogger discards logs unless -v is given.
func quietLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func baseConfig(t testing.TB, st store.Store, rec *deliverytest.Recorder) batch.Config {
	return batch.Config{
		Store: st, Deliverer: rec, Pusher: rec,
		Authenticator: batch.NewStaticKeys(map[string]batch.Principal{
			adminKey: {AppID: testApp, Admin: true},
			userKey:  {AppID: testApp},
			otherKey: {AppID: otherApp, Admin: true},
		}),
		Logger: quietLogger(t),
	}
}

// newEnv returns a Service on memstore whose tasks are recorded, not queued.
func newEnv(t testing.TB, mutate func(*batch.Config)) *env {
	t.Helper()
	return newEnvOn(t, memstore.New(nil), mutate)
}

// newEnvOn is newEnv on the given store.
func newEnvOn(t testing.TB, st testStore, mutate func(*batch.Config)) *env {
	t.Helper()
	seedDirectory(t, st)
	rec := deliverytest.NewRecorder()
	e := &env{st: st, rec: rec, enq: &recordingEnqueuer{}}
	e.cfg = baseConfig(t, st, rec)
	e.cfg.Enqueuer = e.enq
	if mutate != nil {
		mutate(&e.cfg)
	}
	svc, err := batch.New(e.cfg)
	must(t, err)
	e.svc = svc
	return e
}

// newQueuedEnv returns a Service on a real asynq server over redis, run
// with Run until the test ends. Each env has its own queue.
func newQueuedEnv(t testing.TB, redis asynq.RedisConnOpt, mutate func(*batch.Config)) *env {
	t.Helper()
	return newQueuedEnvOn(t, memstore.New(nil), redis, mutate)
}

// newQueuedEnvOn is newQueuedEnv on the given store.
func newQueuedEnvOn(t testing.TB, st testStore, redis asynq.RedisConnOpt, mutate func(*batch.Config)) *env {
	t.Helper()
	seedDirectory(t, st)
	rec := deliverytest.NewRecorder()
	e := &env{st: st, rec: rec}
	e.cfg = baseConfig(t, st, rec)
	e.cfg.Redis = redis
	e.cfg.Queue = "chatbatch-test-" + strings.ToLower(rand.Text()[:8])
	e.cfg.ServerConfig = fastServer()
	if mutate != nil {
		mutate(&e.cfg)
	}
	e.svc = startService(t, e.cfg)
	return e
}

// fastServer tunes asynq for tests: tasks are picked up within ~50 ms.
func fastServer() asynq.Config {
	return asynq.Config{
		TaskCheckInterval:        50 * time.Millisecond,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		ShutdownTimeout:          5 * time.Second,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
	}
}

// startService creates a Service for cfg and runs it until the test ends.
func startService(t testing.TB, cfg batch.Config) *batch.Service {
	t.Helper()
	svc, _ := newService(t, cfg)
	run(t, svc)
	return svc
}

// newService creates a Service for cfg (not running), closed and its
// queue deleted when the test ends.
func newService(t testing.TB, cfg batch.Config) (*batch.Service, *env) {
	t.Helper()
	svc, err := batch.New(cfg)
	must(t, err)
	t.Cleanup(func() {
		must(t, svc.Close())
		insp := asynq.NewInspector(cfg.Redis)
		_ = insp.DeleteQueue(cfg.Queue, true)
		_ = insp.Close()
	})
	return svc, &env{svc: svc, cfg: cfg}
}

// run runs svc until the test ends.
func run(t testing.TB, svc *batch.Service) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// miniRedis starts an in-process Redis for the test.
func miniRedis(t testing.TB) asynq.RedisConnOpt {
	t.Helper()
	m := miniredis.RunT(t)
	return asynq.RedisClientOpt{Addr: m.Addr()}
}

// realRedis returns the Redis of CHATBATCH_TEST_REDIS ("host:port" or a
// redis:// URL) or skips the test.
func realRedis(t testing.TB) asynq.RedisConnOpt {
	t.Helper()
	addr := os.Getenv("CHATBATCH_TEST_REDIS")
	if addr == "" {
		t.Skip("set CHATBATCH_TEST_REDIS=127.0.0.1:6379 to run this test against a real Redis")
	}
	if strings.Contains(addr, "://") {
		opt, err := asynq.ParseRedisURI(addr)
		if err != nil {
			t.Fatalf("CHATBATCH_TEST_REDIS: %v", err)
		}
		return opt
	}
	return asynq.RedisClientOpt{Addr: addr}
}

// redisBackends runs fn on an in-process Redis, and on a real one when
// CHATBATCH_TEST_REDIS is set.
func redisBackends(t *testing.T, fn func(t *testing.T, redis asynq.RedisConnOpt)) {
	t.Run("miniredis", func(t *testing.T) {
		t.Parallel()
		fn(t, miniRedis(t))
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		fn(t, realRedis(t))
	})
}

// response is a decoded envelope.
type response struct {
	status int
	header http.Header
	RC     int             `json:"RC"`
	RM     string          `json:"RM"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Details []batch.Detail `json:"details"`
	} `json:"error"`
	raw string
}

// doWith posts a JSON body with extra headers.
func (e *env) doWith(t testing.TB, method, path, key string, body io.Reader, headers map[string]string) *response {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	req.Header.Set("IM-API-KEY", key)
	req.Header.Set("Content-Type", jsonCT)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	e.svc.Handler().ServeHTTP(w, req)
	return decodeResponse(t, w.Result())
}

func (e *env) do(t testing.TB, method, path, key, contentType string, body io.Reader) *response {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	if key != "" {
		req.Header.Set("IM-API-KEY", key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	e.svc.Handler().ServeHTTP(w, req)
	return decodeResponse(t, w.Result())
}

func decodeResponse(t testing.TB, res *http.Response) *response {
	t.Helper()
	raw, err := io.ReadAll(res.Body)
	must(t, err)
	r := &response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, r); err != nil {
		t.Fatalf("response %d is not a JSON envelope: %v\n%s", res.StatusCode, err, raw)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("response Content-Type = %q", ct)
	}
	if r.RC != 0 && r.RC != res.StatusCode {
		t.Errorf("RC %d differs from the HTTP status %d", r.RC, res.StatusCode)
	}
	return r
}

func (e *env) post(t testing.TB, key, body string) *response {
	t.Helper()
	return e.do(t, http.MethodPost, "/messages/batch", key, jsonCT, strings.NewReader(body))
}

func (e *env) status(t testing.TB, key, id string) (*response, batchStatus) {
	t.Helper()
	r := e.do(t, http.MethodGet, "/messages/batch/"+id, key, "", nil)
	var st batchStatus
	if r.status == http.StatusOK {
		must(t, json.Unmarshal(r.Result, &st))
	}
	return r, st
}

type batchStatus struct {
	BatchID    string     `json:"batchID"`
	Status     string     `json:"status"`
	Count      int        `json:"count"`
	Sent       int        `json:"sent"`
	Failed     int        `json:"failed"`
	Pending    int        `json:"pending"`
	Canceled   int        `json:"canceled"`
	CreatedAt  time.Time  `json:"createdAt"`
	FinishedAt *time.Time `json:"finishedAt"`
}

type sendResult struct {
	BatchID string `json:"batchID"`
	Count   int    `json:"count"`
}

// accepted asserts a 200 and returns its result.
func accepted(t testing.TB, r *response) sendResult {
	t.Helper()
	if r.status != http.StatusOK || r.RC != 0 || r.RM != "OK" {
		t.Fatalf("want 200 RC 0 RM OK, got %d: %s", r.status, r.raw)
	}
	var res sendResult
	must(t, json.Unmarshal(r.Result, &res))
	return res
}

// waitFinished polls the batch status until it is finished (a canceled
// batch is "canceled" at once, but finished only when its last chunk is).
func (e *env) waitFinished(t testing.TB, key, id string) batchStatus {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		_, st := e.status(t, key, id)
		if st.FinishedAt != nil {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s not finished after %v: %+v", id, waitLimit, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitUntil polls cond until it holds, failing t after waitLimit.
func waitUntil(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v", waitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processAll runs every recorded task through the Processor, as a worker would.
func (e *env) processAll(t testing.TB) {
	t.Helper()
	for _, q := range e.enq.all() {
		if err := e.svc.Processor().ProcessTask(t.Context(), q.task); err != nil {
			t.Fatalf("processing task %s: %v", q.id, err)
		}
	}
}

func roomMessages(t testing.TB, st testStore, app, room string) []store.Message {
	t.Helper()
	msgs, err := st.RoomMessages(t.Context(), app, room, 0)
	must(t, err)
	return msgs
}

// failingStore wraps a Store and fails the methods named in fail.
type failingStore struct {
	store.Store
	mu   sync.Mutex
	fail map[string]int // method → remaining failures (-1 = always)
}

var errDown = errors.New("connection refused")

func (f *failingStore) check(method string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.fail[method]
	if !ok || n == 0 {
		return nil
	}
	if n > 0 {
		f.fail[method] = n - 1
	}
	return fmt.Errorf("%s: %w", method, errDown)
}

func (f *failingStore) MissingUsers(ctx context.Context, app string, ids []string) ([]string, error) {
	if err := f.check("MissingUsers"); err != nil {
		return nil, err
	}
	return f.Store.MissingUsers(ctx, app, ids)
}

func (f *failingStore) CreateBatch(ctx context.Context, b *store.Batch, cs []store.Chunk) error {
	if err := f.check("CreateBatch"); err != nil {
		return err
	}
	return f.Store.CreateBatch(ctx, b, cs)
}

func (f *failingStore) GetBatch(ctx context.Context, app, id string) (*store.Batch, error) {
	if err := f.check("GetBatch"); err != nil {
		return nil, err
	}
	return f.Store.GetBatch(ctx, app, id)
}

func (f *failingStore) SaveMessages(ctx context.Context, app string, msgs []store.Message) error {
	if err := f.check("SaveMessages"); err != nil {
		return err
	}
	return f.Store.SaveMessages(ctx, app, msgs)
}

func (f *failingStore) StartChunk(ctx context.Context, p *store.StartChunkParams) (*store.Batch, *store.Chunk, error) {
	if err := f.check("StartChunk"); err != nil {
		return nil, nil, err
	}
	return f.Store.StartChunk(ctx, p)
}

func (f *failingStore) CompleteChunk(ctx context.Context, p *store.CompleteChunkParams) (*store.Batch, error) {
	if err := f.check("CompleteChunk"); err != nil {
		return nil, err
	}
	return f.Store.CompleteChunk(ctx, p)
}

// jsonBody marshals v.
func jsonBody(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	must(t, err)
	return string(b)
}
