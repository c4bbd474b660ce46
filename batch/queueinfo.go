package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

// Queue health: what asynq's Inspector says of the Service's queue
// (Config.Queue), for an operator — the depth by state, the workers, and
// this app's active, retrying and archived chunk tasks — and the one
// repair an operator makes by hand: running an archived (or retrying)
// chunk task now. The handler serves them to admin principals at
// QueuePath below BasePath; the methods serve a host's own pages.
//
// The queue is shared by every app of the Service: its counts are the
// whole queue's, while the task lists and the tasks one may run are the
// principal's app's only (a chunk task's payload names its app).

// QueuePath is where the handler serves the queue's health, below
// Config.BasePath: GET BasePath/-/queue, and POST
// BasePath/-/queue/tasks/{taskID}/run. No batch ID is "-" (they are
// "batch-…"), so the path cannot name a batch; "/-/" is the convention
// for a path that is not a resource of the collection it sits below.
const QueuePath = "/-/queue"

// ErrNoQueueInspector is returned by QueueStats and RunQueueTask of a
// Service without Config.Redis (an Enqueuer only): there is no Redis to
// ask. The handler answers 501 NOT_SUPPORTED.
var ErrNoQueueInspector = errors.New("batch: the queue cannot be inspected without Config.Redis")

// ErrTaskNotFound is returned by RunQueueTask for a task the queue does
// not hold, or that is not a chunk task of the app (another app's task is
// not found, as another app's batch is). The handler answers 404
// TASK_NOT_FOUND.
var ErrTaskNotFound = errors.New("batch: no such chunk task in the queue")

// ErrTaskNotRunnable is returned (wrapped, naming the state) by
// RunQueueTask for a task that is not archived or retrying: a pending or
// active task runs anyway, and a scheduled one is a paced or scheduled
// chunk, which must not run before its time. The handler answers 409
// TASK_NOT_RUNNABLE.
var ErrTaskNotRunnable = errors.New("batch: only an archived or retrying task can be run now")

// QueueStats is the state of the Service's queue.
type QueueStats struct {
	// Queue is Config.Queue.
	Queue string `json:"queue"`
	// Paused is set while the queue is paused (asynq's PauseQueue):
	// nothing in it runs.
	Paused bool `json:"paused"`
	// Size is the number of tasks in the queue, of every app and state:
	// Pending + Active + Scheduled + Retry + Archived (and completed tasks
	// asynq keeps, which chatbatch's are not).
	Size int `json:"size"`
	// Pending tasks wait for a worker; Active ones are being processed;
	// Scheduled ones wait for their time (a scheduled batch, the later
	// chunks of a paced one); Retry ones failed and wait for their next
	// attempt; Archived ones asynq gave up on.
	Pending   int `json:"pending"`
	Active    int `json:"active"`
	Scheduled int `json:"scheduled"`
	Retry     int `json:"retry"`
	Archived  int `json:"archived"`
	// LatencyMS is how long the oldest pending task has waited, in
	// milliseconds: a queue that does not drain has a growing latency.
	LatencyMS int64 `json:"latencyMS"`
	// ProcessedToday and FailedToday count the tasks processed (failed
	// included) and failed since midnight UTC; ProcessedTotal and
	// FailedTotal since the queue was made.
	ProcessedToday int `json:"processedToday"`
	FailedToday    int `json:"failedToday"`
	ProcessedTotal int `json:"processedTotal"`
	FailedTotal    int `json:"failedTotal"`
	// Servers is the number of asynq servers (worker processes) that
	// serve the queue, Concurrency the workers they have together, and
	// BusyWorkers how many of them process a task of the queue now.
	Servers     int `json:"servers"`
	Concurrency int `json:"concurrency"`
	BusyWorkers int `json:"busyWorkers"`
	// ActiveTasks, RetryTasks and ArchivedTasks are the app's chunk tasks
	// in each state: at most the limit asked for, found among the first
	// QueueScan tasks of each state (the counts above are the whole
	// queue's).
	ActiveTasks   []QueueTask `json:"activeTasks"`
	RetryTasks    []QueueTask `json:"retryTasks"`
	ArchivedTasks []QueueTask `json:"archivedTasks"`
	// At is when asynq took the snapshot.
	At time.Time `json:"at"`
}

// QueueTask is one chunk task of the queue.
type QueueTask struct {
	// ID is the asynq task ID: "<batchID>:<chunk>", or with a suffix
	// (":r<attempt>") for a second task the sweep made for the chunk.
	ID      string `json:"id"`
	BatchID string `json:"batchID"`
	Chunk   int    `json:"chunk"`
	// State is asynq's: pending, active, scheduled, retry, archived or
	// completed.
	State string `json:"state"`
	// Retried is how often asynq retried the task; MaxRetry how often it
	// may.
	Retried  int `json:"retried"`
	MaxRetry int `json:"maxRetry"`
	// LastError is the error of its last failed attempt, LastFailedAt
	// when that was.
	LastError    string     `json:"lastError,omitempty"`
	LastFailedAt *time.Time `json:"lastFailedAt,omitempty"`
	// NextProcessAt is when a scheduled or retrying task runs next.
	NextProcessAt *time.Time `json:"nextProcessAt,omitempty"`
}

// QueueScan is how many tasks of each state QueueStats looks at for the
// app's, at most.
const QueueScan = 500

// The task lists' sizes of QueueStats: the default and the most a
// request may ask for.
const (
	defaultQueueTasks = 20
	maxQueueTasks     = 100
)

// inspectTimeout bounds one call of asynq's inspector, which takes no
// context, when ctx has no sooner deadline.
const inspectTimeout = 5 * time.Second

// inspect runs f, a call of asynq's inspector, and gives up on it when
// ctx ends (the call goes on in the background until Redis answers or its
// client's own timeouts end it).
func inspect[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ctx, cancel := context.WithTimeout(ctx, inspectTimeout)
	defer cancel()
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("batch: asynq's inspector did not answer: %w", ctx.Err())
	}
}

// QueueStats returns the state of the Service's queue, with at most limit
// (1 to 100; 0 for 20) of app's tasks in each of the active, retry and
// archived lists. It returns ErrNoQueueInspector without Config.Redis,
// and an error when Redis fails or ctx ends first.
func (s *Service) QueueStats(ctx context.Context, app string, limit int) (*QueueStats, error) {
	if s.inspector == nil {
		return nil, ErrNoQueueInspector
	}
	if limit <= 0 {
		limit = defaultQueueTasks
	}
	limit = min(limit, maxQueueTasks)
	q := s.cfg.Queue
	queues, err := inspect(ctx, s.inspector.Queues)
	if err != nil {
		return nil, fmt.Errorf("batch: queues: %w", err)
	}
	info := &asynq.QueueInfo{Queue: q, Timestamp: s.cfg.Now()} // no task was ever enqueued: an empty queue
	if slices.Contains(queues, q) {
		if info, err = inspect(ctx, func() (*asynq.QueueInfo, error) { return s.inspector.GetQueueInfo(q) }); err != nil {
			return nil, fmt.Errorf("batch: queue %s: %w", q, err)
		}
	}
	out := &QueueStats{
		Queue: q, Paused: info.Paused, Size: info.Size, Pending: info.Pending, Active: info.Active, Scheduled: info.Scheduled,
		Retry: info.Retry, Archived: info.Archived, LatencyMS: info.Latency.Milliseconds(),
		ProcessedToday: info.Processed, FailedToday: info.Failed, ProcessedTotal: info.ProcessedTotal, FailedTotal: info.FailedTotal,
		At: info.Timestamp.UTC(),
	}
	servers, err := inspect(ctx, s.inspector.Servers)
	if err != nil {
		return nil, fmt.Errorf("batch: queue %s servers: %w", q, err)
	}
	for _, srv := range servers {
		if _, ok := srv.Queues[q]; !ok {
			continue
		}
		out.Servers++
		out.Concurrency += srv.Concurrency
		for _, w := range srv.ActiveWorkers {
			if w.Queue == q {
				out.BusyWorkers++
			}
		}
	}
	for _, l := range []struct {
		n    int
		list func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error)
		dst  *[]QueueTask
	}{
		{info.Active, s.inspector.ListActiveTasks, &out.ActiveTasks},
		{info.Retry, s.inspector.ListRetryTasks, &out.RetryTasks},
		{info.Archived, s.inspector.ListArchivedTasks, &out.ArchivedTasks},
	} {
		*l.dst = []QueueTask{}
		if l.n == 0 {
			continue
		}
		tasks, err := inspect(ctx, func() ([]*asynq.TaskInfo, error) { return l.list(q, asynq.PageSize(QueueScan)) })
		if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			return nil, fmt.Errorf("batch: queue %s tasks: %w", q, err)
		}
		for _, ti := range tasks {
			if len(*l.dst) == limit {
				break
			}
			if t, ok := queueTaskOf(ti, app); ok {
				*l.dst = append(*l.dst, t)
			}
		}
	}
	return out, nil
}

// queueTaskOf is ti as a QueueTask, if it is a chunk task of app.
func queueTaskOf(ti *asynq.TaskInfo, app string) (QueueTask, bool) {
	if ti.Type != TaskChunk {
		return QueueTask{}, false
	}
	var ct chunkTask
	if json.Unmarshal(ti.Payload, &ct) != nil || ct.App != app {
		return QueueTask{}, false
	}
	t := QueueTask{
		ID: ti.ID, BatchID: ct.Batch, Chunk: ct.Chunk, State: ti.State.String(), Retried: ti.Retried, MaxRetry: ti.MaxRetry,
		LastError: ti.LastErr, LastFailedAt: optionalTime(ti.LastFailedAt),
	}
	if ti.State == asynq.TaskStateScheduled || ti.State == asynq.TaskStateRetry {
		t.NextProcessAt = optionalTime(ti.NextProcessAt)
	}
	return t, true
}

// RunQueueTask runs app's archived or retrying chunk task id now (asynq's
// RunTask: it becomes pending), and returns it as it is then. Running a
// chunk again is safe: a chunk that is done is not sent again, and one
// that is not done goes on where it stopped. It returns
// ErrNoQueueInspector without Config.Redis, ErrTaskNotFound for a task
// that is not app's chunk task in the queue, and ErrTaskNotRunnable
// (wrapped) for one in another state.
func (s *Service) RunQueueTask(ctx context.Context, app, id string) (*QueueTask, error) {
	if s.inspector == nil {
		return nil, ErrNoQueueInspector
	}
	q := s.cfg.Queue
	ti, err := inspect(ctx, func() (*asynq.TaskInfo, error) { return s.inspector.GetTaskInfo(q, id) })
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return nil, fmt.Errorf("batch: task %q: %w", id, ErrTaskNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("batch: task %s: %w", id, err)
	}
	t, ok := queueTaskOf(ti, app)
	if !ok {
		return nil, fmt.Errorf("batch: task %q: %w", id, ErrTaskNotFound)
	}
	if ti.State != asynq.TaskStateArchived && ti.State != asynq.TaskStateRetry {
		return nil, &taskStateError{id, ti.State.String()}
	}
	_, err = inspect(ctx, func() (struct{}, error) { return struct{}{}, s.inspector.RunTask(q, id) })
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound):
		return nil, fmt.Errorf("batch: task %q: %w", id, ErrTaskNotFound) // it went away in between
	case err != nil:
		return nil, fmt.Errorf("batch: run task %s: %w", id, err)
	}
	s.log.InfoContext(ctx, "batch: an operator ran a chunk task now", "app", app, "batch", t.BatchID, "chunk", t.Chunk, "task", id, "was", t.State)
	t.State, t.NextProcessAt = asynq.TaskStatePending.String(), nil
	return &t, nil
}

// handleQueue serves QueuePath and below: sub is the path after
// BasePath/-/ ("queue", "queue/tasks/{id}/run").
func (s *Service) handleQueue(w http.ResponseWriter, r *http.Request, sub string) {
	rest, ok := strings.CutPrefix(sub, "queue")
	switch {
	case !ok || (rest != "" && !strings.HasPrefix(rest, "/tasks/")):
		writeError(w, newError(http.StatusNotFound, CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	case rest == "":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, r, "GET, HEAD")
			return
		}
		s.withPrincipal(w, r, s.admin(s.handleQueueStats))
	default:
		id, ok := strings.CutSuffix(strings.TrimPrefix(rest, "/tasks/"), "/run")
		if !ok || id == "" || strings.Contains(id, "/") {
			writeError(w, newError(http.StatusNotFound, CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
			return
		}
		if r.Method != http.MethodPost {
			methodNotAllowed(w, r, "POST")
			return
		}
		s.withPrincipal(w, r, s.admin(func(w http.ResponseWriter, r *http.Request, p Principal) {
			s.handleRunTask(w, r, p, id)
		}))
	}
}

// admin lets only admin principals through to next: the queue is every
// app's.
func (s *Service) admin(next func(http.ResponseWriter, *http.Request, Principal)) func(http.ResponseWriter, *http.Request, Principal) {
	return func(w http.ResponseWriter, r *http.Request, p Principal) {
		if !p.Admin {
			writeError(w, newError(http.StatusForbidden, CodeInsufficientPermission,
				"the queue serves every app of the server: only admin principals may see it or run its tasks"))
			return
		}
		next(w, r, p)
	}
}

func (s *Service) handleQueueStats(w http.ResponseWriter, r *http.Request, p Principal) {
	q := r.URL.Query()
	if aerr := queryParams(q, "limit"); aerr != nil {
		writeError(w, aerr)
		return
	}
	limit, aerr := intParam(q, "limit", defaultQueueTasks, 1, maxQueueTasks)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	st, err := s.QueueStats(r.Context(), p.AppID, limit)
	if err != nil {
		writeError(w, s.queueError(r.Context(), "queue stats", "", err))
		return
	}
	writeOK(w, st)
}

func (s *Service) handleRunTask(w http.ResponseWriter, r *http.Request, p Principal, id string) {
	if aerr := queryParams(r.URL.Query()); aerr != nil {
		writeError(w, aerr)
		return
	}
	if !plausibleID(id) {
		writeError(w, errTaskNotFound(id))
		return
	}
	t, err := s.RunQueueTask(r.Context(), p.AppID, id)
	if err != nil {
		writeError(w, s.queueError(r.Context(), "run task", id, err))
		return
	}
	writeOK(w, t)
}

func errTaskNotFound(id string) *apiError {
	return newError(http.StatusNotFound, CodeTaskNotFound, "the queue holds no chunk task %q of this app", id)
}

// queueError maps an error of QueueStats or RunQueueTask (of task id) to
// the API.
func (s *Service) queueError(ctx context.Context, op, id string, err error) *apiError {
	switch {
	case errors.Is(err, ErrNoQueueInspector):
		return newError(http.StatusNotImplemented, CodeNotSupported, "this server has no Redis to inspect its queue with (Config.Redis)")
	case errors.Is(err, ErrTaskNotFound):
		return errTaskNotFound(id)
	case errors.Is(err, ErrTaskNotRunnable):
		var st *taskStateError
		state := "in another state"
		if errors.As(err, &st) {
			state = st.state
		}
		return newError(http.StatusConflict, CodeTaskNotRunnable,
			"task %q is %s; only an archived or retrying task can be run now (a scheduled one is a paced or scheduled chunk that waits for its time)", id, state)
	}
	return s.storeError(ctx, op, err)
}

// taskStateError is ErrTaskNotRunnable for a task in state.
type taskStateError struct{ id, state string }

func (e *taskStateError) Error() string {
	return fmt.Sprintf("batch: task %q is %s; only an archived or retrying task can be run now", e.id, e.state)
}
func (e *taskStateError) Unwrap() error { return ErrTaskNotRunnable }
