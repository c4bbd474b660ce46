package integration_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/store"
)

// TestQueueHealth: GET /messages/batch/-/queue shows what asynq holds —
// a chunk asynq archived after the store failed it, one waiting to retry,
// the worker process serving the queue — and POST …/tasks/{id}/run runs
// the archived and the retrying chunk now, after which the batch
// completes, each message stored once. The counts are the whole queue's,
// the task lists the principal's app's only; another app cannot run the
// tasks, a user principal cannot see the queue, and a scheduled chunk
// cannot be run before its time. On miniredis, and on a real Redis when
// CHATBATCH_TEST_REDIS is set.
func TestQueueHealth(t *testing.T) {
	t.Parallel()
	redisBackends(t, func(t *testing.T, redis asynq.RedisConnOpt) {
		var fs *bt.FailingStore
		svc, e, mem := recoveryEnv(t, redis, func(st store.Store) store.Store {
			fs = &bt.FailingStore{Store: st, Fail: map[string]int{"StartChunk": -1}}
			return fs
		}, func(c *batch.Config) {
			c.ChunkSize = 1
			c.MaxRetry = 1
			c.SweepInterval = time.Hour // no sweep revives the archived chunk
			// Chunk 0 retries at once (and is archived), chunk 1 in an hour.
			c.ServerConfig.RetryDelayFunc = func(_ int, _ error, task *asynq.Task) time.Duration {
				if strings.Contains(string(task.Payload()), `"chunk":1`) {
					return time.Hour
				}
				return 0
			}
		})
		queue := e.Cfg.Queue
		get := func(key string) (*bt.Response, batch.QueueStats) {
			t.Helper()
			r := e.Do(t, "GET", "/messages/batch/-/queue", key, "", nil)
			var st batch.QueueStats
			if r.Status == 200 {
				bt.Must(t, json.Unmarshal(r.Result, &st))
			}
			return r, st
		}
		// Nothing enqueued yet: an empty queue, not an error.
		if r, st := get(bt.AdminKey); r.Status != 200 || st.Queue != queue || st.Size != 0 || len(st.ArchivedTasks) != 0 {
			t.Fatalf("empty queue: %d %s", r.Status, r.Raw)
		}
		bt.Run(t, svc)
		id := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.TwoReceivers)).BatchID
		var st batch.QueueStats
		bt.WaitUntil(t, func() bool {
			_, st = get(bt.AdminKey)
			return st.Archived == 1 && st.Retry == 1 && st.Servers == 1
		})
		if st.Concurrency != batch.DefaultConcurrency || st.Pending != 0 || st.Size != 2 || st.FailedTotal < 2 {
			t.Errorf("queue %+v", st)
		}
		if len(st.ArchivedTasks) != 1 || len(st.RetryTasks) != 1 {
			t.Fatalf("tasks %+v", st)
		}
		a, rt := st.ArchivedTasks[0], st.RetryTasks[0]
		if a.ID != id+":0" || a.BatchID != id || a.Chunk != 0 || a.State != "archived" || !strings.Contains(a.LastError, "StartChunk") || a.LastFailedAt == nil || a.MaxRetry != 1 {
			t.Errorf("archived task %+v", a)
		}
		if rt.ID != id+":1" || rt.Chunk != 1 || rt.State != "retry" || rt.Retried != 1 || rt.NextProcessAt == nil || time.Until(*rt.NextProcessAt) < 50*time.Minute {
			t.Errorf("retrying task %+v", rt)
		}

		// Another app sees the counts, not the tasks, and cannot run them.
		if r, other := get(bt.OtherKey); r.Status != 200 || other.Archived != 1 || len(other.ArchivedTasks) != 0 || len(other.RetryTasks) != 0 {
			t.Errorf("another app's view: %s", r.Raw)
		}
		run := func(key, task string) *bt.Response {
			t.Helper()
			return e.Do(t, "POST", "/messages/batch/-/queue/tasks/"+task+"/run", key, "", nil)
		}
		if r := run(bt.OtherKey, id+":0"); r.Status != 404 || r.Error.Code != batch.CodeTaskNotFound {
			t.Errorf("another app runs the task: %s", r.Raw)
		}
		if r := run(bt.AdminKey, "batch-20260101-nope:0"); r.Status != 404 || r.Error.Code != batch.CodeTaskNotFound {
			t.Errorf("an unknown task: %s", r.Raw)
		}
		if r, _ := get(bt.UserKey); r.Status != 403 {
			t.Errorf("a principal that is not an admin sees the queue: %s", r.Raw)
		}
		// A scheduled chunk waits for its time.
		later := bt.Accepted(t, e.Post(t, bt.AdminKey, fmt.Sprintf(`{"message":"m","messageType":"text","sendAt":%q,"paras":[{"room":"room-001"}]}`,
			time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))).BatchID
		if r := run(bt.AdminKey, later+":0"); r.Status != 409 || r.Error.Code != batch.CodeTaskNotRunnable || !strings.Contains(r.Error.Message, "scheduled") {
			t.Errorf("running a scheduled chunk: %s", r.Raw)
		}

		// The database is back: the operator runs both now.
		fs.Mu.Lock()
		fs.Fail["StartChunk"] = 0
		fs.Mu.Unlock()
		for _, task := range []string{id + ":0", id + ":1"} {
			r := run(bt.AdminKey, task)
			var qt batch.QueueTask
			if r.Status == 200 {
				bt.Must(t, json.Unmarshal(r.Result, &qt))
			}
			if r.Status != 200 || qt.ID != task || qt.State != "pending" || qt.BatchID != id {
				t.Errorf("running %s: %s", task, r.Raw)
			}
		}
		if b := e.WaitFinished(t, bt.AdminKey, id); b.Status != "completed" || b.Sent != 2 {
			t.Errorf("after the runs: %+v", b)
		}
		checkStoredOnce(t, mem, id, 2)
		_, st = get(bt.AdminKey)
		if st.Archived != 0 || st.Retry != 0 || st.Scheduled != 1 || len(st.ArchivedTasks) != 0 || st.ProcessedTotal < 4 {
			t.Errorf("queue after the runs %+v", st)
		}
		if r := run(bt.AdminKey, id+":0"); r.Status != 404 {
			t.Errorf("running a task that completed: %s", r.Raw)
		}
		// limit bounds the lists.
		if r := e.Do(t, "GET", "/messages/batch/-/queue?limit=1", bt.AdminKey, "", nil); r.Status != 200 {
			t.Errorf("limit=1: %s", r.Raw)
		}
	})
}
