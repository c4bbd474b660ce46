package integration_test

import (
	"testing"
	"time"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"
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
