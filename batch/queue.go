package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

// TaskPrefix prefixes the type of every asynq task of chatbatch, so one
// asynq.ServeMux registration routes them all to Processor.
const TaskPrefix = "chatbatch:"

// TaskChunk is the type of the task that processes one chunk of a batch.
const TaskChunk = TaskPrefix + "chunk"

// chunkTask is the payload of a TaskChunk task: a reference into the
// store, never the recipients themselves (the store is the truth), and
// the trace context of the request that accepted the batch (W3C
// traceparent and tracestate, or whatever Config.Propagator writes).
type chunkTask struct {
	App   string            `json:"app"`
	Batch string            `json:"batch"`
	Chunk int               `json:"chunk"`
	Trace map[string]string `json:"trace,omitempty"`
}

// chunkTaskID is the asynq task ID of a chunk's task: one task per chunk
// is queued at a time, however often the chunk is enqueued.
func chunkTaskID(ref store.ChunkRef) string { return ref.BatchID + ":" + strconv.Itoa(ref.No) }

// enqueueTask puts a task for ref with task ID id on the queue, to run at
// processAt (zero or past: now). A taken ID is asynq.ErrTaskIDConflict.
func (s *Service) enqueueTask(ctx context.Context, ref store.ChunkRef, id string, processAt time.Time) error {
	ct := chunkTask{App: ref.AppID, Batch: ref.BatchID, Chunk: ref.No}
	if trace.SpanContextFromContext(ctx).IsValid() {
		ct.Trace = map[string]string{}
		s.tel.propagator.Inject(ctx, propagation.MapCarrier(ct.Trace))
	}
	payload, _ := json.Marshal(ct)
	opts := []asynq.Option{asynq.TaskID(id), asynq.Queue(s.cfg.Queue), asynq.MaxRetry(s.cfg.MaxRetry)}
	if processAt.After(s.cfg.Now()) {
		// asynq schedules to the whole second, rounding down; rounded up
		// here, a chunk never runs before it is due (a throttled batch's
		// pace holds).
		if t := processAt.Truncate(time.Second); !t.Equal(processAt) {
			processAt = t.Add(time.Second)
		}
		opts = append(opts, asynq.ProcessAt(processAt))
	}
	if _, err := s.enqueuer.EnqueueContext(ctx, asynq.NewTask(TaskChunk, payload), opts...); err != nil {
		return fmt.Errorf("batch: enqueue %s chunk %d: %w", ref.BatchID, ref.No, err)
	}
	return nil
}

// enqueue puts one task per chunk on the queue, each to run at the
// chunk's NotBefore. A chunk whose task ID is already taken is already
// queued. It stops at the first other error and returns how many chunks
// are queued.
func (s *Service) enqueue(ctx context.Context, chunks []store.Chunk) (int, error) {
	for i, c := range chunks {
		if err := s.enqueueTask(ctx, c.ChunkRef, chunkTaskID(c.ChunkRef), c.NotBefore); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return i, err
		}
	}
	return len(chunks), nil
}

// Processor returns the asynq handler that processes chunk tasks. Hosts
// that run their own asynq server register it for TaskPrefix:
//
//	mux := asynq.NewServeMux()
//	mux.Handle(batch.TaskPrefix, svc.Processor())
//
// and must list Config.Queue in the server's Queues. Hosts without their
// own asynq server call Run instead.
func (s *Service) Processor() asynq.Handler { return asynq.HandlerFunc(s.processTask) }

func (s *Service) processTask(ctx context.Context, t *asynq.Task) error {
	if t.Type() != TaskChunk {
		return fmt.Errorf("batch: unknown task type %q: %w", t.Type(), asynq.SkipRetry)
	}
	var ct chunkTask
	if err := json.Unmarshal(t.Payload(), &ct); err != nil || ct.App == "" || ct.Batch == "" {
		return fmt.Errorf("batch: malformed chunk task payload: %w", asynq.SkipRetry)
	}
	if len(ct.Trace) > 0 {
		ctx = s.tel.propagator.Extract(ctx, propagation.MapCarrier(ct.Trace))
	}
	return s.ProcessChunk(ctx, store.ChunkRef{AppID: ct.App, BatchID: ct.Batch, No: ct.Chunk})
}

// RetryDelay is how long asynq waits before retrying a failed chunk task:
// 1–2 s and then 5–6 s for the first two retries, asynq's exponential
// default after them, and longer when the failure asked for a wait
// (delivery.RetryAfter: an HTTP Retry-After of a webhook or a push
// provider). The first retries are quick because the commonest failure
// is a brief one: the first query after a database outage meets a pooled
// connection the outage broke, and asynq's default (15–45 s first) would
// hold the chunk back long after the database is back. Run uses it unless
// ServerConfig.RetryDelayFunc is set; hosts with their own asynq server
// may set it as theirs.
func RetryDelay(n int, err error, t *asynq.Task) time.Duration {
	d := asynq.DefaultRetryDelayFunc(n, err, t)
	if n < 2 {
		d = time.Duration(1+4*n)*time.Second + rand.N(time.Second)
	}
	return max(d, delivery.RetryAfter(err))
}
