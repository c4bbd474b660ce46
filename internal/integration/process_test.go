package integration_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
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

// TestPushRetriedAloneOnBunstore runs a batch whose first push fails
// transiently through a real asynq server on each database: the retry
// pushes what failed and delivers nothing again.
func TestPushRetriedAloneOnBunstore(t *testing.T) {
	t.Parallel()
	onBunstore(t, func(t *testing.T, newStore func(t *testing.T) *bunstore.Store) {
		e := bt.NewQueuedEnvOn(t, newStore(t), redisForBunstore(t), nil)
		var calls atomic.Int32
		e.Rec.PushHook = func(_ context.Context, ns []delivery.Notification) error {
			if calls.Add(1) > 1 {
				return nil
			}
			failed := map[int]error{}
			for i, n := range ns {
				if n.UserID == "user-b" {
					failed[i] = errors.New("push provider unavailable")
				}
			}
			return &delivery.PartialError{Failed: failed}
		}
		res := bt.Accepted(t, e.Post(t, bt.AdminKey, seedTemplate))
		st := e.WaitFinished(t, bt.AdminKey, res.BatchID)
		if st.Status != "completed" || st.Sent != 2 || st.PushFailed != 0 {
			t.Errorf("status %+v, want completed with 2 sent", st)
		}
		if n, c := len(e.Rec.Messages()), e.Rec.DeliverCalls(); n != 2 || c != 1 {
			t.Errorf("%d messages in %d Deliver calls, want 2 in 1", n, c)
		}
		var pushed []string
		for _, n := range e.Rec.Notifications() {
			pushed = append(pushed, n.UserID)
		}
		slices.Sort(pushed)
		if !slices.Equal(pushed, []string{"user-a", "user-b"}) || calls.Load() != 2 {
			t.Errorf("pushed %q in %d calls, want user-a and user-b once each in 2", pushed, calls.Load())
		}
		_, page := e.Recipients(t, res.BatchID, "")
		for _, r := range page.Recipients {
			if r.Status != "sent" || r.Push != "sent" {
				t.Errorf("recipient %+v, want sent with push sent", r)
			}
		}
	})
}
