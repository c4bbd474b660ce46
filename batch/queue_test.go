package batch_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
)

func TestEnqueueFailureIsSwept(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	e := bt.NewEnv(t, func(c *batch.Config) {
		c.ChunkSize = 1
		c.Now = func() time.Time { return *clock.Load() }
	})
	e.Enq.Err = errors.New("redis: connection refused")
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","paras":[{"receiver":"user-a"},{"receiver":"user-b"}]}`))
	if len(e.Enq.All()) != 0 {
		t.Fatal("tasks were recorded although enqueue failed")
	}
	_, st := e.Status(t, bt.AdminKey, res.BatchID)
	if st.Status != "queued" || st.Pending != 2 {
		t.Fatalf("the accepted batch is not durable: %+v", st)
	}

	e.Enq.Err = nil
	// Within the lease the sweeper leaves the chunks alone.
	n, err := e.Svc.Sweep(t.Context())
	bt.Must(t, err)
	if n != 0 {
		t.Errorf("Sweep within the lease enqueued %d chunks", n)
	}
	later := now.Add(2 * time.Minute)
	clock.Store(&later)
	n, err = e.Svc.Sweep(t.Context())
	bt.Must(t, err)
	if n != 2 || len(e.Enq.All()) != 2 {
		t.Fatalf("Sweep after the lease enqueued %d chunks (%d tasks), want 2", n, len(e.Enq.All()))
	}
	// A second sweep finds the task IDs taken: nothing is queued twice.
	_, err = e.Svc.Sweep(t.Context())
	bt.Must(t, err)
	if len(e.Enq.All()) != 2 {
		t.Errorf("a second sweep queued %d tasks in all, want 2", len(e.Enq.All()))
	}
	e.ProcessAll(t)
	if _, st := e.Status(t, bt.AdminKey, res.BatchID); st.Status != "completed" || st.Sent != 2 {
		t.Errorf("after the swept tasks ran: %+v", st)
	}
	n, err = e.Svc.Sweep(t.Context())
	bt.Must(t, err)
	if n != 0 {
		t.Errorf("Sweep of a completed batch enqueued %d chunks", n)
	}
}

func TestMalformedTask(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	for _, task := range []*asynq.Task{
		asynq.NewTask(batch.TaskChunk, []byte("not json")),
		asynq.NewTask(batch.TaskChunk, []byte(`{"app":"app1"}`)),
		asynq.NewTask("chatbatch:unknown", nil),
		asynq.NewTask(batch.TaskChunk, []byte(`{"app":"app1","batch":"batch-gone","chunk":0}`)),
	} {
		err := e.Svc.Processor().ProcessTask(t.Context(), task)
		if !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("task %s %q: %v, want an error wrapping asynq.SkipRetry", task.Type(), task.Payload(), err)
		}
	}
}

// TestRetryDelay: the retry waits at least what the failure asked for.
func TestRetryDelay(t *testing.T) {
	task := asynq.NewTask(batch.TaskChunk, nil)
	plain := errors.New("503")
	if d := batch.RetryDelay(0, plain, task); d < time.Second || d > 2*time.Second {
		t.Errorf("first retry of a plain error after %v, want 1–2 s", d)
	}
	if d := batch.RetryDelay(1, plain, task); d < 5*time.Second || d > 6*time.Second {
		t.Errorf("second retry after %v, want 5–6 s", d)
	}
	if d := batch.RetryDelay(2, plain, task); d < 16*time.Second {
		t.Errorf("third retry after %v, want asynq's default (at least 16 s)", d)
	}
	if d := batch.RetryDelay(0, delivery.WithRetryAfter(plain, 10*time.Minute), task); d != 10*time.Minute {
		t.Errorf("first retry of an error asking for 10 minutes after %v", d)
	}
}
