package batch

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-playground/validator/v10"
	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/store"
)

// Service is the batch send pipeline: its HTTP handler accepts batches,
// its Processor sends them. One Service is safe for concurrent use by any
// number of requests and tasks. Create it with New.
type Service struct {
	cfg         Config
	log         *slog.Logger
	validator   *validator.Validate
	extraFields map[string]bool
	enqueuer    Enqueuer
	ownClient   *asynq.Client // created by New, closed by Close
	inspector   inspector     // on Config.Redis; nil without it
	suspects    suspects      // chunks held by a worker that never started them
}

// New returns a Service for cfg. It checks cfg and returns an error naming
// every field that is missing or wrong. It starts no goroutines; the only
// resources it may create are an asynq client (when Config.Enqueuer is
// nil) and an asynq inspector on Config.Redis, which connect lazily and
// are closed by Close.
func New(cfg Config) (*Service, error) {
	if errs := cfg.checkNotNegative(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg:         cfg,
		log:         cfg.Logger,
		validator:   newValidator(cfg.MaxIDLength),
		extraFields: map[string]bool{},
		enqueuer:    cfg.Enqueuer,
	}
	for _, f := range cfg.ExtraFields {
		s.extraFields[f] = true
	}
	if s.enqueuer == nil {
		s.ownClient = asynq.NewClient(cfg.Redis)
		s.enqueuer = s.ownClient
	}
	if cfg.Redis != nil {
		s.inspector = asynq.NewInspector(cfg.Redis)
	}
	return s, nil
}

// Close releases the asynq client and inspector New created, if any. It
// does not close the Store or anything else the host passed in.
func (s *Service) Close() error {
	var errs []error
	if s.ownClient != nil {
		errs = append(errs, s.ownClient.Close())
	}
	if s.inspector != nil {
		errs = append(errs, s.inspector.Close())
	}
	return errors.Join(errs...)
}

// Handler returns the HTTP handler of the API. Mount it at Config.BasePath
// and below, for example with net/http:
//
//	mux.Handle("/messages/batch", h)
//	mux.Handle("/messages/batch/", h)
//
// It serves POST BasePath (send a batch; ?dryRun=true to check and
// preview only), GET BasePath/{batchID} (the batch's status) and GET
// BasePath/{batchID}/recipients (per-recipient outcomes) and DELETE
// BasePath/{batchID} (cancel the batch), and answers
// everything else with the API's error envelope (405 for other methods,
// 404 for other paths).
func (s *Service) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Mount registers Handler on mux for Config.BasePath and everything below it.
func (s *Service) Mount(mux *http.ServeMux) {
	h := s.Handler()
	mux.Handle(s.cfg.BasePath, h)
	mux.Handle(s.cfg.BasePath+"/", h)
}

func (s *Service) serveHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("batch: handler panic", "panic", v, "stack", string(debug.Stack()))
			writeError(w, errInternal)
		}
	}()
	rel := strings.TrimPrefix(r.URL.Path, s.cfg.BasePath)
	if rel == "" || rel == "/" {
		if r.Method != http.MethodPost {
			methodNotAllowed(w, r, http.MethodPost)
			return
		}
		s.withPrincipal(w, r, s.handleSend)
		return
	}
	id, sub, _ := strings.Cut(strings.TrimPrefix(rel, "/"), "/")
	// The store work of these requests starts at once: bound it all.
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
	defer cancel()
	r = r.WithContext(ctx)
	switch {
	case id == "" || (sub != "" && sub != "recipients"):
		writeError(w, newError(http.StatusNotFound, CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	case !plausibleID(id):
		// No batch ID holds a NUL or invalid UTF-8 (batch IDs are ours);
		// asking the store would only provoke a driver error.
		writeError(w, errBatchNotFound(id))
	case sub == "recipients":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, r, "GET, HEAD")
			return
		}
		s.withPrincipal(w, r, func(w http.ResponseWriter, r *http.Request, p Principal) {
			s.handleRecipients(w, r, p, id)
		})
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		s.withPrincipal(w, r, func(w http.ResponseWriter, r *http.Request, p Principal) {
			s.handleStatus(w, r, p, id)
		})
	case r.Method == http.MethodDelete:
		s.withPrincipal(w, r, func(w http.ResponseWriter, r *http.Request, p Principal) {
			s.handleCancel(w, r, p, id)
		})
	default:
		methodNotAllowed(w, r, "GET, HEAD, DELETE")
	}
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method %s is not allowed here; use %s", r.Method, allow))
}

// withPrincipal authenticates the IM-API-KEY header and calls next.
func (s *Service) withPrincipal(w http.ResponseWriter, r *http.Request, next func(http.ResponseWriter, *http.Request, Principal)) {
	key := r.Header.Get("IM-API-KEY")
	if key == "" {
		writeError(w, newError(http.StatusUnauthorized, CodeInvalidAPIKey, "the IM-API-KEY header is missing"))
		return
	}
	actx, cancel := context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
	p, err := s.cfg.Authenticator.Authenticate(actx, key)
	cancel()
	switch {
	case errors.Is(err, ErrInvalidAPIKey):
		writeError(w, newError(http.StatusUnauthorized, CodeInvalidAPIKey, "the IM-API-KEY header is not a valid API key"))
		return
	case err != nil:
		writeError(w, s.storeError(r.Context(), "authenticate", err))
		return
	case p.AppID == "":
		s.log.Error("batch: authenticator returned a principal without an AppID")
		writeError(w, errInternal)
		return
	}
	next(w, r, p)
}

// checkContentType accepts application/json with no charset or UTF-8.
func checkContentType(r *http.Request) *apiError {
	ct := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil && mt == "application/json" {
		if cs, ok := params["charset"]; !ok || strings.EqualFold(cs, "utf-8") {
			return nil
		}
	}
	if ct == "" {
		ct = "none"
	}
	return newError(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType,
		"Content-Type %q is not supported; send application/json; charset=utf-8", ct)
}

// storeError maps an error of the store (or the authenticator) to the
// API: 503 UNAVAILABLE with Retry-After. ctx is the request's context: a
// request the client canceled is logged as such, one that ran out of
// Config.StoreTimeout as a store that did not answer.
func (s *Service) storeError(ctx context.Context, op string, err error) *apiError {
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		s.log.Info("batch: request canceled by the client", "op", op)
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		s.log.Error("batch: the store did not answer within Config.StoreTimeout", "op", op, "timeout", s.cfg.StoreTimeout, "err", err)
	default:
		s.log.Error("batch: store failed", "op", op, "err", err)
	}
	return errUnavailable
}

// plausibleID reports whether id could name something we stored: every
// ID the API accepts is valid UTF-8 without NUL.
func plausibleID(id string) bool {
	return utf8.ValidString(id) && strings.IndexByte(id, 0) < 0
}

func errBatchNotFound(id string) *apiError {
	return newError(http.StatusNotFound, CodeBatchNotFound, "batch %q does not exist", id)
}

// batchStatus is the result of GET /messages/batch/{batchID}.
type batchStatus struct {
	BatchID    string       `json:"batchID"`
	Status     store.Status `json:"status"`
	Count      int          `json:"count"`
	Sent       int          `json:"sent"`
	Failed     int          `json:"failed"`
	Pending    int          `json:"pending"`
	Canceled   int          `json:"canceled"`
	CreatedAt  time.Time    `json:"createdAt"`
	SendAt     *time.Time   `json:"sendAt,omitempty"`
	FinishedAt *time.Time   `json:"finishedAt,omitempty"`
	CanceledAt *time.Time   `json:"canceledAt,omitempty"`
}

func (s *Service) statusOf(b *store.Batch) batchStatus {
	out := batchStatus{
		BatchID: b.ID, Status: b.Status(s.cfg.Now()), Count: b.Count, Sent: b.Sent, Failed: b.Failed,
		Pending: b.Pending(), Canceled: b.Canceled, CreatedAt: b.CreatedAt.UTC(),
	}
	if !b.SendAt.IsZero() {
		t := b.SendAt.UTC()
		out.SendAt = &t
	}
	if !b.FinishedAt.IsZero() {
		t := b.FinishedAt.UTC()
		out.FinishedAt = &t
	}
	if !b.CanceledAt.IsZero() {
		t := b.CanceledAt.UTC()
		out.CanceledAt = &t
	}
	return out
}

func (s *Service) handleStatus(w http.ResponseWriter, r *http.Request, p Principal, id string) {
	if aerr := queryParams(r.URL.Query()); aerr != nil {
		writeError(w, aerr)
		return
	}
	b, err := s.cfg.Batches.GetBatch(r.Context(), p.AppID, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, errBatchNotFound(id))
	case err != nil:
		writeError(w, s.storeError(r.Context(), "get batch", err))
	default:
		writeOK(w, s.statusOf(b))
	}
}

// handleCancel stops a batch: chunks not started are not processed (their
// recipients end canceled), a chunk in progress finishes.
func (s *Service) handleCancel(w http.ResponseWriter, r *http.Request, p Principal, id string) {
	if aerr := queryParams(r.URL.Query()); aerr != nil {
		writeError(w, aerr)
		return
	}
	b, err := s.cfg.Batches.CancelBatch(r.Context(), p.AppID, id, s.cfg.Now().UTC())
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, errBatchNotFound(id))
		return
	case errors.Is(err, store.ErrConflict):
		st := "finished"
		if cur, gerr := s.cfg.Batches.GetBatch(r.Context(), p.AppID, id); gerr == nil {
			st = string(cur.Status(s.cfg.Now()))
		}
		writeError(w, newError(http.StatusConflict, CodeBatchFinished, "batch %q already finished (%s); there is nothing left to cancel", id, st))
		return
	case err != nil:
		writeError(w, s.storeError(r.Context(), "cancel batch", err))
		return
	}
	s.log.Info("batch canceled", "app", p.AppID, "batch", id, "canceled", b.Canceled, "pending", b.Pending())
	if b.ChunksDone == b.Chunks {
		// This cancel finished the batch (no chunk was in progress).
		s.batchDone(context.WithoutCancel(r.Context()), b)
	}
	writeOK(w, s.statusOf(b))
}

// newBatchID returns "batch-YYYYMMDD-" and 10 random lower-case base32
// characters (50 bits from crypto/rand).
func newBatchID(now time.Time) string {
	return "batch-" + now.UTC().Format("20060102") + "-" + strings.ToLower(rand.Text()[:10])
}

// TaskPrefix prefixes the type of every asynq task of chatbatch, so one
// asynq.ServeMux registration routes them all to Processor.
const TaskPrefix = "chatbatch:"

// TaskChunk is the type of the task that processes one chunk of a batch.
const TaskChunk = TaskPrefix + "chunk"

// chunkTask is the payload of a TaskChunk task: a reference into the
// store, never the recipients themselves (the store is the truth).
type chunkTask struct {
	App   string `json:"app"`
	Batch string `json:"batch"`
	Chunk int    `json:"chunk"`
}

// chunkTaskID is the asynq task ID of a chunk's task: one task per chunk
// is queued at a time, however often the chunk is enqueued.
func chunkTaskID(ref store.ChunkRef) string { return ref.BatchID + ":" + strconv.Itoa(ref.No) }

// enqueueTask puts a task for ref with task ID id on the queue, to run at
// processAt (zero or past: now). A taken ID is asynq.ErrTaskIDConflict.
func (s *Service) enqueueTask(ctx context.Context, ref store.ChunkRef, id string, processAt time.Time) error {
	payload, _ := json.Marshal(chunkTask{App: ref.AppID, Batch: ref.BatchID, Chunk: ref.No})
	opts := []asynq.Option{asynq.TaskID(id), asynq.Queue(s.cfg.Queue), asynq.MaxRetry(s.cfg.MaxRetry)}
	if processAt.After(s.cfg.Now()) {
		opts = append(opts, asynq.ProcessAt(processAt))
	}
	if _, err := s.enqueuer.EnqueueContext(ctx, asynq.NewTask(TaskChunk, payload), opts...); err != nil {
		return fmt.Errorf("batch: enqueue %s chunk %d: %w", ref.BatchID, ref.No, err)
	}
	return nil
}

// enqueue puts one task per chunk on the queue. A chunk whose task ID is
// already taken is already queued. It stops at the first other error and
// returns how many chunks are queued.
func (s *Service) enqueue(ctx context.Context, refs []store.ChunkRef, processAt time.Time) (int, error) {
	for i, ref := range refs {
		if err := s.enqueueTask(ctx, ref, chunkTaskID(ref), processAt); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return i, err
		}
	}
	return len(refs), nil
}
