package integration_test

import (
	"context"
	"sync"
	"testing"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/store"
)

// TestCancelWhileRunning cancels a batch on a real asynq server mid-way;
// every recipient ends sent or canceled, none pending, none twice.
func TestCancelWhileRunning(t *testing.T) {
	t.Parallel()
	e := bt.NewQueuedEnv(t, miniRedis(t), func(c *batch.Config) { c.ChunkSize = 1; c.Concurrency = 1 })
	cancelWhileRunning(t, e)
}

// cancelWhileRunning sends eight recipients, one chunk each, holds the
// first chunk in delivery, cancels, lets it go and checks the end: some
// sent, the rest canceled, none pending, and the deliveries match.
func cancelWhileRunning(t *testing.T, e *bt.Env) {
	t.Helper()
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.Rec.DeliverHook = func(context.Context, []store.Message) error {
		once.Do(func() { close(started); <-release })
		return nil
	}
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.EightRecipients))
	<-started
	r, _ := e.Cancel(t, bt.AdminKey, res.BatchID)
	close(release)
	if r.Status != 200 {
		t.Fatalf("cancel = %d %s", r.Status, r.Raw)
	}
	st := e.WaitFinished(t, bt.AdminKey, res.BatchID)
	if st.Status != "canceled" || st.Sent+st.Canceled != 8 || st.Pending != 0 || st.Sent == 0 || st.Canceled == 0 {
		t.Errorf("final %+v, want some sent, the rest canceled", st)
	}
	if n := len(e.Rec.Messages()); n != st.Sent {
		t.Errorf("%d messages delivered, %d recorded sent", n, st.Sent)
	}
	if r, _ := e.Cancel(t, bt.AdminKey, res.BatchID); r.Status != 409 {
		t.Errorf("second cancel = %d %s", r.Status, r.Raw)
	}
}

// TestRecallWhileRunningOnBunstore recalls a batch on a real asynq server
// and each database while its first chunk is held in delivery: the held
// chunk completes and is recalled by its worker, the rest is canceled, no
// message of the batch stays stored.
func TestRecallWhileRunningOnBunstore(t *testing.T) {
	t.Parallel()
	onBunstore(t, func(t *testing.T, newStore func(t *testing.T) *bunstore.Store) {
		e := bt.NewQueuedEnvOn(t, newStore(t), redisForBunstore(t), func(c *batch.Config) { c.ChunkSize = 1; c.Concurrency = 1 })
		started, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		e.Rec.DeliverHook = func(context.Context, []store.Message) error {
			once.Do(func() { close(started); <-release })
			return nil
		}
		id := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.EightRecipients)).BatchID
		<-started
		r, st := e.Recall(t, bt.AdminKey, id)
		close(release)
		if r.Status != 200 || st.Status != "recalled" {
			t.Fatalf("recall = %d %s", r.Status, r.Raw)
		}
		bt.WaitUntil(t, func() bool {
			_, st = e.Status(t, bt.AdminKey, id)
			return st.Pending == 0 && st.Sent == 0
		})
		delivered := len(e.Rec.Messages())
		if st.Recalled != delivered || st.Recalled+st.Canceled != 8 || len(e.Rec.Retracted()) != delivered {
			t.Errorf("final %+v: %d delivered, %d retracted", st, delivered, len(e.Rec.Retracted()))
		}
		for _, room := range []string{"room-001", "room-002", "room-003", store.DirectRoomID("system", "user-a"), store.DirectRoomID("system", "user-b")} {
			for _, m := range bt.RoomMessages(t, e.St, bt.TestApp, room) {
				if m.BatchID == id {
					t.Errorf("message %s of the recalled batch is still in %s", m.ID, room)
				}
			}
		}
	})
}
