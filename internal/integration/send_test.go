package integration_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"

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
		e := bt.NewQueuedEnv(t, redis, func(c *batch.Config) { c.ChunkSize = 1 })
		start := time.Now()
		res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","ratePerMinute":60,"paras":[
			{"receiver":"user-a"},{"receiver":"user-b"},{"room":"room-001"}]}`))
		r, _ := e.Status(t, bt.AdminKey, res.BatchID)
		var est struct {
			EstimatedFinishAt time.Time `json:"estimatedFinishAt"`
		}
		bt.Must(t, json.Unmarshal(r.Result, &est))
		if d := est.EstimatedFinishAt.Sub(start); d < 2900*time.Millisecond || d > 3100*time.Millisecond {
			t.Errorf("estimatedFinishAt is %v after the start, want 3 s (3 at 1 a second)", d)
		}
		st := e.WaitFinished(t, bt.AdminKey, res.BatchID)
		if st.Sent != 3 {
			t.Fatalf("final %+v", st)
		}
		msgs := e.Rec.Messages()
		slices.SortFunc(msgs, func(a, b store.Message) int { return a.CreatedAt.Compare(b.CreatedAt) })
		for i := 1; i < len(msgs); i++ {
			if gap := msgs[i].CreatedAt.Sub(msgs[i-1].CreatedAt); gap < 800*time.Millisecond {
				t.Errorf("messages %d and %d only %v apart, want about 1 s", i-1, i, gap)
			}
		}
		if first := msgs[0].CreatedAt.Sub(start); first > time.Second {
			t.Errorf("the first chunk waited %v; it is due at once", first)
		}
	})
}
