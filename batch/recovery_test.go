package batch_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bt "github.com/chatbatch/chatbatch/internal/batchtest"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

// TestOnBatchDoneExactlyOnceAcrossServices: two services share a store
// and process the chunks of one batch between them; each sweeps
// afterwards. OnBatchDone runs once in all.
func TestOnBatchDoneExactlyOnceAcrossServices(t *testing.T) {
	t.Parallel()
	mem := memstore.New(nil)
	var clock atomic.Pointer[time.Time]
	now := time.Now()
	clock.Store(&now)
	var calls atomic.Int32
	mk := func() *bt.Env {
		return bt.NewEnvOn(t, mem, func(c *batch.Config) {
			c.ChunkSize = 1
			c.Now = func() time.Time { return *clock.Load() }
			c.OnBatchDone = func(context.Context, batch.BatchSummary) { calls.Add(1) }
		})
	}
	a, b := mk(), mk()
	res := bt.Accepted(t, a.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","paras":[{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"receiver":"user-d"}]}`))
	var wg sync.WaitGroup
	for no := range 4 {
		svc := a.Svc
		if no%2 == 1 {
			svc = b.Svc
		}
		wg.Go(func() {
			bt.Must(t, svc.ProcessChunk(t.Context(), store.ChunkRef{AppID: bt.TestApp, BatchID: res.BatchID, No: no}))
		})
	}
	wg.Wait()
	later := now.Add(time.Hour)
	clock.Store(&later)
	for _, e := range []*bt.Env{a, b, a} {
		_, err := e.Svc.Sweep(t.Context())
		bt.Must(t, err)
	}
	if calls.Load() != 1 {
		t.Errorf("OnBatchDone ran %d times, want exactly 1", calls.Load())
	}
	got, err := mem.GetBatch(t.Context(), bt.TestApp, res.BatchID)
	bt.Must(t, err)
	if got.NotifiedAt.IsZero() {
		t.Error("the batch is not marked reported")
	}
}

// TestOnBatchDoneAfterCrash: the process that finished a batch claimed
// its report and died before making it. Until the claim ends, sweeps
// leave it; then one sweep makes the report, once.
func TestOnBatchDoneAfterCrash(t *testing.T) {
	t.Parallel()
	mem := memstore.New(nil)
	var clock atomic.Pointer[time.Time]
	now := time.Now().UTC()
	clock.Store(&now)
	var calls atomic.Int32
	var got batch.BatchSummary
	e := bt.NewEnvOn(t, mem, func(c *batch.Config) {
		c.Now = func() time.Time { return *clock.Load() }
		c.Lease = time.Minute
	})
	res := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.TwoReceivers))
	e.ProcessAll(t) // no OnBatchDone on this service: the "crashed" one
	// The crashed process had claimed the report.
	claimed, err := mem.ClaimDoneNotifications(t.Context(), &store.ClaimDoneNotificationsParams{
		AppID: bt.TestApp, BatchID: res.BatchID, FinishedBefore: now, At: now, Until: now.Add(time.Minute), Limit: 1,
	})
	bt.Must(t, err)
	if len(claimed) != 1 {
		t.Fatalf("claimed %d batches, want the finished one", len(claimed))
	}
	survivor := bt.NewEnvOn(t, mem, func(c *batch.Config) {
		c.Now = func() time.Time { return *clock.Load() }
		c.Lease = time.Minute
		c.OnBatchDone = func(_ context.Context, s batch.BatchSummary) { calls.Add(1); got = s }
	})
	sweepAt := func(d time.Duration, want int32) {
		t.Helper()
		at := now.Add(d)
		clock.Store(&at)
		_, err := survivor.Svc.Sweep(t.Context())
		bt.Must(t, err)
		if calls.Load() != want {
			t.Fatalf("after a sweep %v after the crash OnBatchDone ran %d times, want %d", d, calls.Load(), want)
		}
	}
	sweepAt(30*time.Second, 0) // the dead process's claim still holds
	sweepAt(61*time.Second, 1)
	sweepAt(2*time.Minute, 1)
	sweepAt(time.Hour, 1)
	if got.BatchID != res.BatchID || got.Status != store.StatusCompleted || got.Sent != 2 {
		t.Errorf("OnBatchDone got %+v", got)
	}
}
