// Package batchtest is the test harness of package batch, shared by its
// own tests and the integration tests (internal/integration) that need a
// Redis or a SQL database: keeping those out of batch's tests keeps them
// out of the module graph of every host that imports batch. An Env is one
// Service over memstore (or a given store) with a Recorder as Deliverer
// and, unless it runs a real asynq server, an Enqueuer that records tasks.
package batchtest

import (
	"bytes"
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

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	"github.com/chatbatch/chatbatch/internal/seed"
	"github.com/chatbatch/chatbatch/store"
	"github.com/chatbatch/chatbatch/store/storetest"
)

const (
	TestApp         = "app1"
	AdminKey        = "test-admin-key"
	UserKey         = "test-user-key"
	OtherKey        = "test-other-app-key"
	OtherApp        = "app2"
	JSONContentType = "application/json; charset=utf-8"
	WaitLimit       = 30 * time.Second
)

// RecordingEnqueuer is an Enqueuer that keeps tasks instead of queueing
// them, for handler tests that need no Redis.
type RecordingEnqueuer struct {
	Mu    sync.Mutex
	Tasks []Enqueued
	Err   error // returned by every call when set
	IDs   map[string]bool
}

type Enqueued struct {
	Task *asynq.Task
	ID   string
	Opts []asynq.Option
}

func (e *RecordingEnqueuer) EnqueueContext(_ context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	e.Mu.Lock()
	defer e.Mu.Unlock()
	if e.Err != nil {
		return nil, e.Err
	}
	var id string
	for _, o := range opts {
		if o.Type() == asynq.TaskIDOpt {
			id = o.Value().(string)
		}
	}
	if e.IDs == nil {
		e.IDs = map[string]bool{}
	}
	if e.IDs[id] {
		return nil, asynq.ErrTaskIDConflict
	}
	e.IDs[id] = true
	e.Tasks = append(e.Tasks, Enqueued{task, id, opts})
	return &asynq.TaskInfo{ID: id}, nil
}

func (e *RecordingEnqueuer) All() []Enqueued {
	e.Mu.Lock()
	defer e.Mu.Unlock()
	return append([]Enqueued(nil), e.Tasks...)
}

// TestStore is what the tests need of a store: the seams, the suite's
// Inspector and deletions. memstore and bunstore have it.
type TestStore interface {
	store.Store
	storetest.Inspector
	DeleteRoom(ctx context.Context, app, id string) error
	DeleteUser(ctx context.Context, app, id string) error
}

// Env is one Service over a store (memstore unless the test says) and a
// Recorder, seeded with the users and rooms of the seed examples.
type Env struct {
	Svc *batch.Service
	St  TestStore
	Rec *deliverytest.Recorder
	Enq *RecordingEnqueuer // nil when the env uses Redis
	Cfg batch.Config
}

func SeedDirectory(t testing.TB, st TestStore) {
	t.Helper()
	ctx := t.Context()
	for _, app := range []string{TestApp, OtherApp} {
		Must(t, st.AddUsers(ctx, app, "system", "user-a", "user-b", "user-c", "user-d"))
		Must(t, st.AddRoom(ctx, app, "room-001", "user-a", "user-b"))
		Must(t, st.AddRoom(ctx, app, "room-002", "user-b", "user-c", "system"))
		Must(t, st.AddRoom(ctx, app, "room-003", "user-c"))
	}
}

func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// QuietLogger discards logs unless -v is given.
func QuietLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func BaseConfig(t testing.TB, st store.Store, rec *deliverytest.Recorder) batch.Config {
	return batch.Config{
		Store: st, Deliverer: rec, Pusher: rec,
		Authenticator: batch.NewStaticKeys(map[string]batch.Principal{
			AdminKey: {AppID: TestApp, Admin: true},
			UserKey:  {AppID: TestApp},
			OtherKey: {AppID: OtherApp, Admin: true},
		}),
		Logger: QuietLogger(t),
	}
}

// NewEnv returns a Service on memstore whose tasks are recorded, not queued.
func NewEnv(t testing.TB, mutate func(*batch.Config)) *Env {
	t.Helper()
	return NewEnvOn(t, memstore.New(nil), mutate)
}

// NewEnvOn is newEnv on the given store.
func NewEnvOn(t testing.TB, st TestStore, mutate func(*batch.Config)) *Env {
	t.Helper()
	SeedDirectory(t, st)
	rec := deliverytest.NewRecorder()
	e := &Env{St: st, Rec: rec, Enq: &RecordingEnqueuer{}}
	e.Cfg = BaseConfig(t, st, rec)
	e.Cfg.Enqueuer = e.Enq
	if mutate != nil {
		mutate(&e.Cfg)
	}
	svc, err := batch.New(e.Cfg)
	Must(t, err)
	e.Svc = svc
	return e
}

// NewQueuedEnv returns a Service on a real asynq server over redis, run
// with Run until the test ends. Each env has its own queue.
func NewQueuedEnv(t testing.TB, redis asynq.RedisConnOpt, mutate func(*batch.Config)) *Env {
	t.Helper()
	return NewQueuedEnvOn(t, memstore.New(nil), redis, mutate)
}

// NewQueuedEnvOn is newQueuedEnv on the given store.
func NewQueuedEnvOn(t testing.TB, st TestStore, redis asynq.RedisConnOpt, mutate func(*batch.Config)) *Env {
	t.Helper()
	SeedDirectory(t, st)
	rec := deliverytest.NewRecorder()
	e := &Env{St: st, Rec: rec}
	e.Cfg = BaseConfig(t, st, rec)
	e.Cfg.Redis = redis
	e.Cfg.Queue = "chatbatch-test-" + strings.ToLower(rand.Text()[:8])
	e.Cfg.ServerConfig = FastServer()
	if mutate != nil {
		mutate(&e.Cfg)
	}
	e.Svc = StartService(t, e.Cfg)
	return e
}

// FastServer tunes asynq for tests: tasks are picked up within ~50 ms.
func FastServer() asynq.Config {
	return asynq.Config{
		TaskCheckInterval:        50 * time.Millisecond,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		ShutdownTimeout:          5 * time.Second,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
	}
}

// StartService creates a Service for cfg and runs it until the test ends.
func StartService(t testing.TB, cfg batch.Config) *batch.Service {
	t.Helper()
	svc, _ := NewService(t, cfg)
	Run(t, svc)
	return svc
}

// NewService creates a Service for cfg (not running), closed and its
// queue deleted when the test ends.
func NewService(t testing.TB, cfg batch.Config) (*batch.Service, *Env) {
	t.Helper()
	svc, err := batch.New(cfg)
	Must(t, err)
	t.Cleanup(func() {
		Must(t, svc.Close())
		insp := asynq.NewInspector(cfg.Redis)
		_ = insp.DeleteQueue(cfg.Queue, true)
		_ = insp.Close()
	})
	return svc, &Env{Svc: svc, Cfg: cfg}
}

// Run runs svc until the test ends.
func Run(t testing.TB, svc *batch.Service) {
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

// Response is a decoded envelope.
type Response struct {
	Status int             `json:"-"`
	Header http.Header     `json:"-"`
	RC     int             `json:"RC"`
	RM     string          `json:"RM"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Details []batch.Detail `json:"details"`
	} `json:"error"`
	Raw string `json:"-"`
}

// DoWith posts a JSON body with extra headers.
func (e *Env) DoWith(t testing.TB, method, path, key string, body io.Reader, headers map[string]string) *Response {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	req.Header.Set("IM-API-KEY", key)
	req.Header.Set("Content-Type", JSONContentType)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return e.serve(t, req)
}

func (e *Env) Do(t testing.TB, method, path, key, contentType string, body io.Reader) *Response {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	if key != "" {
		req.Header.Set("IM-API-KEY", key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return e.serve(t, req)
}

// CheckResponse, when set, is called with every answer Env.Do and
// Env.DoWith get (path with its query); an error fails the test.
// internal/integration sets it to apispec.Check in its TestMain, so that
// the answers of the end-to-end tests are checked against openapi.yaml.
// Package batch's own tests leave it nil, which keeps the validator out of
// their graph.
var CheckResponse func(method, path string, status int, header http.Header, body []byte) error

// CheckRequest, when set, is called with every request Env.Do and
// Env.DoWith send that the handler answered with 200: a request the
// handler accepted must be one the API description accepts. An error
// fails the test.
var CheckRequest func(method, path string, header http.Header, body []byte) error

// serve runs req through the handler, decodes the answer and checks both
// with CheckResponse and CheckRequest when they are set.
func (e *Env) serve(t testing.TB, req *http.Request) *Response {
	t.Helper()
	var reqBody []byte
	if CheckRequest != nil && req.Body != nil {
		var err error
		reqBody, err = io.ReadAll(req.Body)
		Must(t, err)
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	path, method := req.URL.String(), req.Method // before the handler sees req
	w := httptest.NewRecorder()
	e.Svc.Handler().ServeHTTP(w, req)
	r := DecodeResponse(t, w.Result())
	if CheckResponse != nil {
		if err := CheckResponse(method, path, r.Status, r.Header, []byte(r.Raw)); err != nil {
			t.Errorf("API description: %v", err)
		}
	}
	if CheckRequest != nil && r.Status == http.StatusOK {
		if err := CheckRequest(method, path, req.Header, reqBody); err != nil {
			t.Errorf("API description: a request the handler accepted: %v", err)
		}
	}
	return r
}

func DecodeResponse(t testing.TB, res *http.Response) *Response {
	t.Helper()
	raw, err := io.ReadAll(res.Body)
	Must(t, err)
	r := &Response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
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

func (e *Env) Post(t testing.TB, key, body string) *Response {
	t.Helper()
	return e.Do(t, http.MethodPost, "/messages/batch", key, JSONContentType, strings.NewReader(body))
}

func (e *Env) Status(t testing.TB, key, id string) (*Response, BatchStatus) {
	t.Helper()
	r := e.Do(t, http.MethodGet, "/messages/batch/"+id, key, "", nil)
	var st BatchStatus
	if r.Status == http.StatusOK {
		Must(t, json.Unmarshal(r.Result, &st))
	}
	return r, st
}

type BatchStatus struct {
	BatchID    string     `json:"batchID"`
	Status     string     `json:"status"`
	Count      int        `json:"count"`
	Sent       int        `json:"sent"`
	Failed     int        `json:"failed"`
	Pending    int        `json:"pending"`
	Canceled   int        `json:"canceled"`
	PushFailed int        `json:"pushFailed"`
	Recalled   int        `json:"recalled"`
	CreatedAt  time.Time  `json:"createdAt"`
	FinishedAt *time.Time `json:"finishedAt"`
	PausedAt   *time.Time `json:"pausedAt"`
	Read       *int       `json:"read"`
	ReadRate   *float64   `json:"readRate"`
}

type SendResult struct {
	BatchID string `json:"batchID"`
	Count   int    `json:"count"`
}

// Accepted asserts a 200 and returns its result.
func Accepted(t testing.TB, r *Response) SendResult {
	t.Helper()
	if r.Status != http.StatusOK || r.RC != 0 || r.RM != "OK" {
		t.Fatalf("want 200 RC 0 RM OK, got %d: %s", r.Status, r.Raw)
	}
	var res SendResult
	Must(t, json.Unmarshal(r.Result, &res))
	return res
}

// WaitFinished polls the batch status until it is finished (a canceled
// batch is "canceled" at once, but finished only when its last chunk is).
func (e *Env) WaitFinished(t testing.TB, key, id string) BatchStatus {
	t.Helper()
	deadline := time.Now().Add(WaitLimit)
	for {
		_, st := e.Status(t, key, id)
		if st.FinishedAt != nil {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s not finished after %v: %+v", id, WaitLimit, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitUntil polls cond until it holds, failing t after WaitLimit.
func WaitUntil(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v", WaitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ProcessAll runs every recorded task through the Processor, as a worker would.
func (e *Env) ProcessAll(t testing.TB) {
	t.Helper()
	for _, q := range e.Enq.All() {
		if err := e.Svc.Processor().ProcessTask(t.Context(), q.Task); err != nil {
			t.Fatalf("processing task %s: %v", q.ID, err)
		}
	}
}

func RoomMessages(t testing.TB, st TestStore, app, room string) []store.Message {
	t.Helper()
	msgs, err := st.RoomMessages(t.Context(), app, room, 0)
	Must(t, err)
	return msgs
}

// FailingStore wraps a Store and fails the methods named in Fail.
type FailingStore struct {
	store.Store
	Mu   sync.Mutex
	Fail map[string]int // method → remaining failures (-1 = always)
}

var ErrDown = errors.New("connection refused")

func (f *FailingStore) check(method string) error {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	n, ok := f.Fail[method]
	if !ok || n == 0 {
		return nil
	}
	if n > 0 {
		f.Fail[method] = n - 1
	}
	return fmt.Errorf("%s: %w", method, ErrDown)
}

func (f *FailingStore) MissingUsers(ctx context.Context, app string, ids []string) ([]string, error) {
	if err := f.check("MissingUsers"); err != nil {
		return nil, err
	}
	return f.Store.MissingUsers(ctx, app, ids)
}

func (f *FailingStore) CreateBatch(ctx context.Context, b *store.Batch, cs []store.Chunk) error {
	if err := f.check("CreateBatch"); err != nil {
		return err
	}
	return f.Store.CreateBatch(ctx, b, cs)
}

func (f *FailingStore) GetBatch(ctx context.Context, app, id string) (*store.Batch, error) {
	if err := f.check("GetBatch"); err != nil {
		return nil, err
	}
	return f.Store.GetBatch(ctx, app, id)
}

func (f *FailingStore) ListBatches(ctx context.Context, p *store.ListBatchesParams) ([]*store.Batch, error) {
	if err := f.check("ListBatches"); err != nil {
		return nil, err
	}
	return f.Store.ListBatches(ctx, p)
}

func (f *FailingStore) SaveMessages(ctx context.Context, app string, msgs []store.Message) error {
	if err := f.check("SaveMessages"); err != nil {
		return err
	}
	return f.Store.SaveMessages(ctx, app, msgs)
}

func (f *FailingStore) StartChunk(ctx context.Context, p *store.StartChunkParams) (*store.Batch, *store.Chunk, error) {
	if err := f.check("StartChunk"); err != nil {
		return nil, nil, err
	}
	return f.Store.StartChunk(ctx, p)
}

func (f *FailingStore) CompleteChunk(ctx context.Context, p *store.CompleteChunkParams) (*store.Batch, error) {
	if err := f.check("CompleteChunk"); err != nil {
		return nil, err
	}
	return f.Store.CompleteChunk(ctx, p)
}

// JSONBody marshals v.
func JSONBody(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	Must(t, err)
	return string(b)
}

// TwoReceivers is a request body for user-a and user-b with one variable.
const TwoReceivers = `{"message":"Hi $name$","messageType":"text","paras":[{"receiver":"user-a","$name$":"A"},{"receiver":"user-b","$name$":"B"}]}`

// AssertNothingHappened checks that a failed request stored and enqueued nothing.
func (e *Env) AssertNothingHappened(t testing.TB) {
	t.Helper()
	if tasks := e.Enq.All(); len(tasks) != 0 {
		t.Errorf("a failed request enqueued %d tasks", len(tasks))
	}
	pending, err := e.St.PendingChunks(context.Background(), &store.PendingChunksParams{DueBefore: time.Now().Add(time.Hour), LeaseExpiredBefore: time.Now(), Limit: 10})
	Must(t, err)
	if len(pending) != 0 {
		t.Errorf("a failed request stored a batch: %+v", pending)
	}
}

type RecipientsPage struct {
	BatchID    string `json:"batchID"`
	Total      int    `json:"total"`
	Offset     int    `json:"offset"`
	Limit      int    `json:"limit"`
	NextOffset *int   `json:"nextOffset"`
	Recipients []struct {
		Index     int        `json:"index"`
		Receiver  string     `json:"receiver"`
		Room      string     `json:"room"`
		MessageID string     `json:"messageID"`
		Status    string     `json:"status"`
		Error     string     `json:"error"`
		Push      string     `json:"push"`
		PushError string     `json:"pushError"`
		ReadAt    *time.Time `json:"readAt"`
	} `json:"recipients"`
}

func (e *Env) Recipients(t testing.TB, id, query string) (*Response, RecipientsPage) {
	t.Helper()
	r := e.Do(t, http.MethodGet, "/messages/batch/"+id+"/recipients"+query, AdminKey, "", nil)
	var page RecipientsPage
	if r.Status == 200 {
		Must(t, json.Unmarshal(r.Result, &page))
	}
	return r, page
}

// Recall POSTs a recall of batch id.
func (e *Env) Recall(t testing.TB, key, id string) (*Response, BatchStatus) {
	t.Helper()
	r := e.Do(t, http.MethodPost, "/messages/batch/"+id+"/recall", key, "", nil)
	var st BatchStatus
	if r.Status == 200 {
		Must(t, json.Unmarshal(r.Result, &st))
	}
	return r, st
}

// Reads POSTs message IDs to BasePath/-/reads as userID (omitted when
// empty) with key.
func (e *Env) Reads(t testing.TB, key, userID string, ids ...string) *Response {
	t.Helper()
	body := map[string]any{"messageIDs": ids}
	if userID != "" {
		body["userID"] = userID
	}
	return e.Do(t, http.MethodPost, "/messages/batch/-/reads", key, JSONContentType, strings.NewReader(JSONBody(t, body)))
}

// Pause POSTs a pause (op "pause") or resume (op "resume") of batch id.
func (e *Env) Pause(t testing.TB, key, id, op string) (*Response, BatchStatus) {
	t.Helper()
	r := e.Do(t, http.MethodPost, "/messages/batch/"+id+"/"+op, key, "", nil)
	var st BatchStatus
	if r.Status == 200 {
		Must(t, json.Unmarshal(r.Result, &st))
	}
	return r, st
}

func (e *Env) Cancel(t testing.TB, key, id string) (*Response, BatchStatus) {
	t.Helper()
	r := e.Do(t, http.MethodDelete, "/messages/batch/"+id, key, "", nil)
	var st BatchStatus
	if r.Status == 200 {
		Must(t, json.Unmarshal(r.Result, &st))
	}
	return r, st
}

// CheckOneBatch asserts that concurrent requests with one key produced
// one batch: every answer is that batch (200) or "in progress" (409).
func CheckOneBatch(t testing.TB, results []*Response, tasks int) {
	t.Helper()
	ids := map[string]int{}
	inProgress := 0
	for _, r := range results {
		switch {
		case r.Status == 200:
			var res SendResult
			Must(t, json.Unmarshal(r.Result, &res))
			ids[res.BatchID]++
		case r.Status == 409 && r.Error.Code == "IDEMPOTENCY_IN_PROGRESS":
			inProgress++
		default:
			t.Errorf("unexpected answer %d %s", r.Status, r.Raw)
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

// EightRecipients is a request body for eight receivers, one chunk each
// with ChunkSize 1.
const EightRecipients = `{"message":"m","messageType":"text","paras":[
	{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"receiver":"user-d"},
	{"room":"room-001"},{"room":"room-002"},{"room":"room-003"},{"receiver":"user-a"}]}`

// BlastOneKey posts the seed's template example n times at once, all with
// one Idempotency-Key, and returns the answers (for CheckOneBatch).
func (e *Env) BlastOneKey(t testing.TB, n int) []*Response {
	results := make([]*Response, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			results[i] = e.DoWith(t, http.MethodPost, "/messages/batch", AdminKey, strings.NewReader(seed.Template), map[string]string{"Idempotency-Key": "blast-2026-11"})
		})
	}
	close(start)
	wg.Wait()
	return results
}
