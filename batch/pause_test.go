package batch_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/store"
)

// TestPauseResume: a paused batch sends nothing more (its tasks end
// without work), a pause and a resume are idempotent, a resume hands the
// chunks not started to the queue again and the batch completes; a
// finished batch is neither paused nor resumed (409 BATCH_FINISHED).
func TestPauseResume(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.ChunkSize = 2 })
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.EightRecipients))
	tasks := e.Enq.All()
	if len(tasks) != 4 {
		t.Fatalf("%d tasks, want 4", len(tasks))
	}
	bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), tasks[0].Task))

	r, st := e.Pause(t, bt.AdminKey, res.BatchID, "pause")
	if r.Status != 200 || st.Status != "paused" || st.PausedAt == nil || st.Sent != 2 || st.Pending != 6 {
		t.Fatalf("pause = %d %s", r.Status, r.Raw)
	}
	// The paused batch's tasks come due: they end, sending nothing.
	for _, q := range tasks[1:] {
		bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), q.Task))
	}
	if n := len(e.Rec.Messages()); n != 2 {
		t.Errorf("%d messages delivered while paused, want the 2 of chunk 0", n)
	}
	r, again := e.Pause(t, bt.AdminKey, res.BatchID, "pause")
	if r.Status != 200 || again.Status != "paused" || !again.PausedAt.Equal(*st.PausedAt) {
		t.Errorf("a second pause = %d %s; want the batch unchanged", r.Status, r.Raw)
	}
	if _, cur := e.Status(t, bt.AdminKey, res.BatchID); cur.Status != "paused" || cur.Pending != 6 {
		t.Errorf("status while paused: %+v", cur)
	}

	// The ended tasks are gone from the queue (asynq keeps no completed
	// task by default): their IDs are free again.
	e.Enq.Mu.Lock()
	e.Enq.IDs, e.Enq.Tasks = nil, nil
	e.Enq.Mu.Unlock()
	r, st = e.Pause(t, bt.AdminKey, res.BatchID, "resume")
	if r.Status != 200 || st.Status != "running" || st.PausedAt != nil {
		t.Fatalf("resume = %d %s", r.Status, r.Raw)
	}
	requeued := e.Enq.All()
	if len(requeued) != 3 || requeued[0].ID != res.BatchID+":1" || requeued[2].ID != res.BatchID+":3" {
		t.Fatalf("resume enqueued %d tasks %+v, want chunks 1-3", len(requeued), requeued)
	}
	if r, _ := e.Pause(t, bt.AdminKey, res.BatchID, "resume"); r.Status != 200 || len(e.Enq.All()) != 3 {
		t.Errorf("a second resume = %d %s, %d tasks; want 200 and no task more", r.Status, r.Raw, len(e.Enq.All()))
	}
	e.ProcessAll(t)
	_, st = e.Status(t, bt.AdminKey, res.BatchID)
	if st.Status != "completed" || st.Sent != 8 || st.FinishedAt == nil {
		t.Errorf("after resume: %+v", st)
	}
	if n := len(e.Rec.Messages()); n != 8 {
		t.Errorf("%d messages delivered, want 8, each once", n)
	}
	for _, op := range []string{"pause", "resume"} {
		if r, _ := e.Pause(t, bt.AdminKey, res.BatchID, op); r.Status != 409 || r.Error.Code != "BATCH_FINISHED" {
			t.Errorf("%s of a completed batch = %d %s, want 409 BATCH_FINISHED", op, r.Status, r.Raw)
		}
	}
}

// TestPauseChunkInFlight: a chunk a worker started before the pause
// finishes; the chunks after it wait.
func TestPauseChunkInFlight(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.ChunkSize = 4 })
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.EightRecipients))
	tasks := e.Enq.All()
	inDeliver, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.Rec.DeliverHook = func(context.Context, []store.Message) error {
		once.Do(func() { close(inDeliver) })
		<-release
		return nil
	}
	chunk0 := make(chan error, 1)
	go func() { chunk0 <- e.Svc.Processor().ProcessTask(context.Background(), tasks[0].Task) }()
	<-inDeliver
	if r, st := e.Pause(t, bt.AdminKey, res.BatchID, "pause"); r.Status != 200 || st.Status != "paused" || st.Pending != 8 {
		t.Fatalf("pause while chunk 0 is delivered = %d %s", r.Status, r.Raw)
	}
	close(release)
	bt.Must(t, <-chunk0)
	bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), tasks[1].Task))
	_, st := e.Status(t, bt.AdminKey, res.BatchID)
	if st.Status != "paused" || st.Sent != 4 || st.Pending != 4 {
		t.Errorf("after the chunk in flight: %+v; want its 4 sent, the other 4 waiting", st)
	}
}

// TestPauseThenCancel: a paused batch can be canceled; its chunks not
// started end canceled, and it can no longer be resumed (409
// BATCH_FINISHED) or, while a chunk still runs, paused (409
// BATCH_CANCELED).
func TestPauseThenCancel(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, func(c *batch.Config) { c.ChunkSize = 2 })
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.EightRecipients))
	if r, _ := e.Pause(t, bt.AdminKey, res.BatchID, "pause"); r.Status != 200 {
		t.Fatalf("pause = %d %s", r.Status, r.Raw)
	}
	r, st := e.Cancel(t, bt.AdminKey, res.BatchID)
	if r.Status != 200 || st.Status != "canceled" || st.Canceled != 8 || st.FinishedAt == nil {
		t.Fatalf("cancel of a paused batch = %d %s", r.Status, r.Raw)
	}
	if r, _ := e.Pause(t, bt.AdminKey, res.BatchID, "resume"); r.Status != 409 || r.Error.Code != "BATCH_FINISHED" {
		t.Errorf("resume of a canceled batch = %d %s", r.Status, r.Raw)
	}

	// Canceled while a chunk was started: not finished, yet canceled.
	res = bt.Accepted(t, e.Post(t, bt.AdminKey, bt.EightRecipients))
	e.Rec.DeliverHook = func(context.Context, []store.Message) error { return context.DeadlineExceeded }
	var task *asynq.Task
	for _, q := range e.Enq.All() {
		if q.ID == res.BatchID+":0" {
			task = q.Task
		}
	}
	if err := e.Svc.Processor().ProcessTask(t.Context(), task); err == nil {
		t.Fatal("the failing attempt succeeded")
	}
	if r, _ := e.Cancel(t, bt.AdminKey, res.BatchID); r.Status != 200 {
		t.Fatalf("cancel = %d %s", r.Status, r.Raw)
	}
	for _, op := range []string{"pause", "resume"} {
		if r, _ := e.Pause(t, bt.AdminKey, res.BatchID, op); r.Status != 409 || r.Error.Code != "BATCH_CANCELED" {
			t.Errorf("%s of a canceled batch with a chunk in flight = %d %s, want 409 BATCH_CANCELED", op, r.Status, r.Raw)
		}
	}
}

// TestPausePacedResume: a throttled batch's pace goes on from where it
// stopped: its chunks not started are due later by the pause's length.
func TestPausePacedResume(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	e := bt.NewEnv(t, func(c *batch.Config) { c.Now = clock })
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","ratePerMinute":2,"paras":[
		{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"receiver":"user-d"},{"room":"room-001"},{"room":"room-002"}]}`))
	processAt := func(q bt.Enqueued) time.Time {
		for _, o := range q.Opts {
			if o.Type() == asynq.ProcessAtOpt {
				return o.Value().(time.Time)
			}
		}
		return time.Time{}
	}
	tasks := e.Enq.All()
	if len(tasks) != 3 || !processAt(tasks[2]).Equal(now.Add(2*time.Minute)) {
		t.Fatalf("tasks %+v, want 3 a minute apart", tasks)
	}
	bt.Must(t, e.Svc.Processor().ProcessTask(t.Context(), tasks[0].Task))
	advance(30 * time.Second)
	if r, _ := e.Pause(t, bt.AdminKey, res.BatchID, "pause"); r.Status != 200 {
		t.Fatalf("pause = %d %s", r.Status, r.Raw)
	}
	advance(10 * time.Minute)
	e.Enq.Mu.Lock()
	e.Enq.IDs, e.Enq.Tasks = nil, nil
	e.Enq.Mu.Unlock()
	if r, _ := e.Pause(t, bt.AdminKey, res.BatchID, "resume"); r.Status != 200 {
		t.Fatalf("resume = %d %s", r.Status, r.Raw)
	}
	start := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
	for i, q := range e.Enq.All() {
		if want := start.Add(time.Duration(i+1)*time.Minute + 10*time.Minute); !processAt(q).Equal(want) {
			t.Errorf("task %s after resume runs at %v, want %v (the pace moved by the pause)", q.ID, processAt(q), want)
		}
	}
}

func TestPauseErrors(t *testing.T) {
	t.Parallel()
	e := bt.NewEnv(t, nil)
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.EightRecipients))
	for _, op := range []string{"pause", "resume"} {
		if r, _ := e.Pause(t, bt.OtherKey, res.BatchID, op); r.Status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
			t.Errorf("another app's %s = %d %s", op, r.Status, r.Raw)
		}
		if r, _ := e.Pause(t, bt.AdminKey, "batch-nope", op); r.Status != 404 || r.Error.Code != "BATCH_NOT_FOUND" {
			t.Errorf("%s of an unknown batch = %d %s", op, r.Status, r.Raw)
		}
		if r := e.Do(t, http.MethodGet, "/messages/batch/"+res.BatchID+"/"+op, bt.AdminKey, "", nil); r.Status != 405 || r.Error.Code != "METHOD_NOT_ALLOWED" {
			t.Errorf("GET …/%s = %d %s", op, r.Status, r.Raw)
		}
		if r := e.Do(t, http.MethodPost, "/messages/batch/"+res.BatchID+"/"+op+"?now=1", bt.AdminKey, "", nil); r.Status != 400 || r.Error.Code != "INVALID_PARAMETER" {
			t.Errorf("%s with an unknown parameter = %d %s", op, r.Status, r.Raw)
		}
	}
	if r := e.Do(t, http.MethodGet, "/messages/batch?status=paused", bt.AdminKey, "", nil); r.Status != 200 {
		t.Errorf("listing paused batches = %d %s", r.Status, r.Raw)
	}
}
