package integration_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/store"
)

// TestScheduledBatchRuns sends a batch scheduled a second ahead through
// a real asynq server.
func TestScheduledBatchRuns(t *testing.T) {
	t.Parallel()
	e := bt.NewQueuedEnv(t, miniRedis(t), nil)
	at := time.Now().Add(1500 * time.Millisecond).UTC()
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"later","messageType":"text","sendAt":"`+at.Format(time.RFC3339Nano)+`","paras":[{"receiver":"user-a"}]}`))
	if _, st := e.Status(t, bt.AdminKey, res.BatchID); st.Status != "scheduled" {
		t.Errorf("status before sendAt = %s", st.Status)
	}
	e.WaitFinished(t, bt.AdminKey, res.BatchID)
	// asynq keeps scheduled times in whole seconds and may fire up to a
	// second early.
	if msgs := e.Rec.Messages(); len(msgs) != 1 || msgs[0].CreatedAt.Before(at.Add(-time.Second)) {
		t.Errorf("the scheduled message was sent at %v, sendAt %v", msgs, at)
	}
}

// TestThrottledBatchRuns sends a paced batch through a real asynq server:
// 3 recipients at 60 a minute (one chunk each) go out a second apart, not
// at once, and its status says when it will end. (asynq schedules to the
// second, so a pace of more than a chunk a second is not kept finer.)
func TestThrottledBatchRuns(t *testing.T) {
	t.Parallel()
	redisBackends(t, func(t *testing.T, redis asynq.RedisConnOpt) {
		throttledBatchRuns(t, bt.NewQueuedEnv(t, redis, func(c *batch.Config) { c.ChunkSize = 1 }))
	})
}

// TestThrottledBatchRunsOnBunstore is TestThrottledBatchRuns on each
// database: the chunks' due times are the store's.
func TestThrottledBatchRunsOnBunstore(t *testing.T) {
	t.Parallel()
	onBunstore(t, func(t *testing.T, newStore func(t *testing.T) *bunstore.Store) {
		throttledBatchRuns(t, bt.NewQueuedEnvOn(t, newStore(t), redisForBunstore(t), func(c *batch.Config) { c.ChunkSize = 1 }))
	})
}

func throttledBatchRuns(t *testing.T, e *bt.Env) {
	t.Helper()
	start := time.Now()
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","ratePerMinute":60,"paras":[
		{"receiver":"user-a"},{"receiver":"user-b"},{"room":"room-001"}]}`))
	r, _ := e.Status(t, bt.AdminKey, res.BatchID)
	var est struct {
		CreatedAt         time.Time `json:"createdAt"`
		EstimatedFinishAt time.Time `json:"estimatedFinishAt"`
	}
	bt.Must(t, json.Unmarshal(r.Result, &est))
	// Measured from the batch's own creation, not from the client's
	// clock: on a loaded machine the POST itself may take a while.
	if d := est.EstimatedFinishAt.Sub(est.CreatedAt); d != 3*time.Second {
		t.Errorf("estimatedFinishAt is %v after createdAt, want 3 s (3 at 1 a second)", d)
	}
	if est.CreatedAt.Before(start.Add(-time.Millisecond)) || est.CreatedAt.After(time.Now()) {
		t.Errorf("createdAt %v is not between the POST (%v) and now", est.CreatedAt, start)
	}
	st := e.WaitFinished(t, bt.AdminKey, res.BatchID)
	if st.Sent != 3 {
		t.Fatalf("final %+v", st)
	}
	msgs := e.Rec.Messages()
	slices.SortFunc(msgs, func(a, b store.Message) int { return a.CreatedAt.Compare(b.CreatedAt) })
	// Chunk i is due i seconds after the batch was accepted and never
	// runs before (a loaded machine may run it later, never sooner).
	for i, m := range msgs {
		if early := st.CreatedAt.Add(time.Duration(i) * time.Second).Sub(m.CreatedAt); early > 0 {
			t.Errorf("message %d went out %v after the batch was accepted, %v before its chunk was due", i, m.CreatedAt.Sub(st.CreatedAt), early)
		}
	}
}
