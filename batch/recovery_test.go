package batch_test

import (
	"context"
	"net/http"
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

// Retention: a finished batch's bookkeeping goes Config.Retention after
// it finished (once its end was reported); its status and recipients are
// then 404 BATCH_NOT_FOUND, the list leaves it out, and the messages it
// sent stay. A batch still running is never pruned; KeepForever prunes
// nothing.
func TestRetention(t *testing.T) {
	t.Parallel()
	for _, keep := range []bool{false, true} {
		t.Run(map[bool]string{false: "48h", true: "KeepForever"}[keep], func(t *testing.T) {
			t.Parallel()
			clk := &clock{t: time.Now()}
			e := bt.NewEnv(t, func(c *batch.Config) {
				c.Now = clk.Now
				c.Retention = 48 * time.Hour
				if keep {
					c.Retention = batch.KeepForever
				}
			})
			sweep := func() {
				t.Helper()
				if _, err := e.Svc.Sweep(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			done := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"messageType":"text","message":"m","paras":[{"receiver":"user-a"},{"room":"room-001"}]}`)).BatchID
			e.ProcessAll(t)
			running := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"messageType":"text","message":"m","paras":[{"receiver":"user-b"}]}`)).BatchID
			clk.add(time.Minute)
			sweep() // reports the finished batch's end
			clk.add(47 * time.Hour)
			sweep()
			if r, _ := e.Status(t, bt.AdminKey, done); r.Status != 200 {
				t.Fatalf("47 h after it finished the batch is gone: %d %s", r.Status, r.Raw)
			}
			clk.add(2 * time.Hour)
			sweep()
			for _, path := range []string{"/messages/batch/" + done, "/messages/batch/" + done + "/recipients"} {
				r := e.Do(t, http.MethodGet, path, bt.AdminKey, "", nil)
				switch {
				case keep && r.Status != 200:
					t.Errorf("GET %s with KeepForever: %d %s", path, r.Status, r.Raw)
				case !keep && (r.Status != 404 || r.Error == nil || r.Error.Code != batch.CodeBatchNotFound):
					t.Errorf("GET %s 49 h after it finished: %d %s, want 404 BATCH_NOT_FOUND", path, r.Status, r.Raw)
				}
			}
			if r, _ := e.Status(t, bt.AdminKey, running); r.Status != 200 {
				t.Errorf("a batch still running was pruned: %d %s", r.Status, r.Raw)
			}
			if msgs := bt.RoomMessages(t, e.St, bt.TestApp, "room-001"); len(msgs) != 1 || msgs[0].BatchID != done {
				t.Errorf("room-001 holds %d messages after the pruning, want the batch's 1 (messages are the host's)", len(msgs))
			}
		})
	}
}
