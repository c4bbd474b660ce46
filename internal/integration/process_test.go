package integration_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/store"
)

// TestRetriesExhausted runs a chunk whose delivery always fails through
// a real asynq server: after MaxRetry retries its recipients are failed.
func TestRetriesExhausted(t *testing.T) {
	t.Parallel()
	e := bt.NewQueuedEnv(t, miniRedis(t), func(c *batch.Config) { c.MaxRetry = 1 })
	var calls atomic.Int32
	e.Rec.DeliverHook = func(context.Context, []store.Message) error {
		calls.Add(1)
		return errors.New("hub unreachable")
	}
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, seedTemplate))
	st := e.WaitFinished(t, bt.AdminKey, res.BatchID)
	if st.Status != "completed_with_errors" || st.Failed != 2 || st.Sent != 0 {
		t.Errorf("status %+v, want 2 failed", st)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("delivery was attempted %d times, want 2 (1 + MaxRetry 1)", n)
	}
	c, err := e.St.LoadChunk(t.Context(), store.ChunkRef{AppID: bt.TestApp, BatchID: res.BatchID})
	bt.Must(t, err)
	if !strings.Contains(c.Outcomes[0].Error, "gave up after repeated failures") {
		t.Errorf("outcome %+v", c.Outcomes[0])
	}
	// Messages were stored before delivery failed: exactly once each.
	for _, u := range []string{"user-a", "user-b"} {
		if n := len(bt.RoomMessages(t, e.St, bt.TestApp, store.DirectRoomID("system", u))); n != 1 {
			t.Errorf("%s's room holds %d messages", u, n)
		}
	}
}
