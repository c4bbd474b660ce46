package batch_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	"github.com/chatbatch/chatbatch/store"
)

const twoReceivers = `{"message":"Hi $name$","messageType":"text","paras":[{"receiver":"user-a","$name$":"A"},{"receiver":"user-b","$name$":"B"}]}`

// checkStoredOnce asserts that batch id has exactly want messages in the
// one-on-one rooms of system with user-a and user-b, each stored once.
func checkStoredOnce(t *testing.T, st testStore, id string, want int) {
	t.Helper()
	seen := map[string]int{}
	for _, u := range []string{"user-a", "user-b"} {
		for _, m := range roomMessages(t, st, testApp, store.DirectRoomID("system", u)) {
			if m.BatchID == id {
				seen[m.ID]++
			}
		}
	}
	if len(seen) != want {
		t.Errorf("batch %s has %d distinct messages stored, want %d", id, len(seen), want)
	}
	for mid, n := range seen {
		if n != 1 {
			t.Errorf("message %s stored %d times", mid, n)
		}
	}
}

// recoveryConfig is a Config on a queue of its own with fast leases and
// sweeps; Run is left to the test.
func recoveryConfig(t *testing.T, st store.Store, redis asynq.RedisConnOpt) batch.Config {
	cfg := baseConfig(t, st, deliverytest.NewRecorder())
	cfg.Redis = redis
	cfg.Queue = "chatbatch-test-" + strings.ToLower(rand.Text()[:8])
	cfg.ServerConfig = fastServer()
	cfg.Lease = 300 * time.Millisecond
	cfg.SweepInterval = 50 * time.Millisecond
	return cfg
}

// recoveryEnv is a Service (not running) on a memstore seeded with the
// directory, seen through wrap (nil: as it is), with recoveryConfig.
func recoveryEnv(t *testing.T, redis asynq.RedisConnOpt, wrap func(store.Store) store.Store, mutate func(*batch.Config)) (*batch.Service, *env, *memstore.Store) {
	mem := memstore.New(nil)
	seedDirectory(t, mem)
	var st store.Store = mem
	if wrap != nil {
		st = wrap(mem)
	}
	cfg := recoveryConfig(t, st, redis)
	if mutate != nil {
		mutate(&cfg)
	}
	svc, e := newService(t, cfg)
	e.st = mem
	return svc, e, mem
}

// TestSweepRevivesArchivedChunk: the store fails to start the chunk until
// asynq has given up on its task (archived it); once the store answers
// again, a sweep deletes the archived task and enqueues the chunk, and
// the batch completes. Before, the sweep took the archived task's ID for
// "still queued" and the batch stayed running forever.
func TestSweepRevivesArchivedChunk(t *testing.T) {
	t.Parallel()
	redisBackends(t, func(t *testing.T, redis asynq.RedisConnOpt) {
		var fs *failingStore
		svc, e, mem := recoveryEnv(t, redis, func(st store.Store) store.Store {
			fs = &failingStore{Store: st, fail: map[string]int{"StartChunk": -1}}
			return fs
		}, func(c *batch.Config) {
			c.MaxRetry = 1
			c.SweepInterval = time.Hour // the test sweeps
		})
		cfg := e.cfg
		run(t, svc)
		res := accepted(t, e.post(t, adminKey, twoReceivers))
		insp := asynq.NewInspector(redis)
		defer insp.Close()
		waitUntil(t, func() bool {
			info, err := insp.GetTaskInfo(cfg.Queue, res.BatchID+":0")
			return err == nil && info.State == asynq.TaskStateArchived
		})
		fs.mu.Lock()
		fs.fail["StartChunk"] = 0 // the database is back
		fs.mu.Unlock()
		time.Sleep(cfg.Lease + 50*time.Millisecond) // the chunk is overdue
		n, err := svc.Sweep(t.Context())
		must(t, err)
		if n != 1 {
			t.Errorf("Sweep enqueued %d chunks, want the archived one", n)
		}
		st := e.waitFinished(t, adminKey, res.BatchID)
		if st.Status != "completed" || st.Sent != 2 {
			t.Errorf("after the sweep: %+v, want completed with 2 sent", st)
		}
		checkStoredOnce(t, mem, res.BatchID, 2)
	})
}

// TestSweepTakesOverChunkOfDeadWorker: a worker takes the chunk's task
// and starts the chunk (or dies before it could start it), then stops as
// a process killed with SIGKILL would: no lease renewal, the task left
// active in asynq. Once the chunk's lease runs out (or, not started, a
// sweep has seen it so for a lease), the sweep of another worker enqueues
// the chunk beside the orphaned task and that worker completes it, within
// about two leases and a sweep, not asynq's minute-long recovery.
func TestSweepTakesOverChunkOfDeadWorker(t *testing.T) {
	t.Parallel()
	for _, startsChunk := range []bool{true, false} {
		name := "died after starting the chunk"
		if !startsChunk {
			name = "died before starting the chunk"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			redisBackends(t, func(t *testing.T, redis asynq.RedisConnOpt) {
				testTakeover(t, redis, startsChunk)
			})
		})
	}
}

func testTakeover(t *testing.T, redis asynq.RedisConnOpt, startsChunk bool) {
	svc, e, mem := recoveryEnv(t, redis, nil, nil)
	cfg := e.cfg

	// The dead worker: it takes the task, maybe starts the chunk, and hangs.
	taken := make(chan struct{})
	release := make(chan struct{})
	zc := fastServer()
	zc.Concurrency, zc.Queues, zc.ShutdownTimeout = 1, map[string]int{cfg.Queue: 1}, 10*time.Millisecond
	zc.Logger, zc.LogLevel = nopLogger{}, asynq.FatalLevel
	zombie := asynq.NewServer(redis, zc)
	var once sync.Once
	must(t, zombie.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		if startsChunk {
			now := time.Now().UTC()
			var p struct {
				App, Batch string
				Chunk      int
			}
			must(t, json.Unmarshal(task.Payload(), &p))
			ref := store.ChunkRef{AppID: p.App, BatchID: p.Batch, No: p.Chunk}
			if _, _, err := mem.StartChunk(ctx, &store.StartChunkParams{Ref: ref, At: now, LeaseUntil: now.Add(cfg.Lease)}); err != nil {
				return err
			}
		}
		once.Do(func() { close(taken) })
		select {
		case <-release:
		case <-ctx.Done():
		}
		return context.Canceled
	})))
	t.Cleanup(func() { close(release); zombie.Shutdown() })

	res := accepted(t, e.post(t, adminKey, twoReceivers))
	select {
	case <-taken:
	case <-time.After(waitLimit):
		t.Fatal("the first worker never took the task")
	}
	begin := time.Now()
	run(t, svc)
	st := e.waitFinished(t, adminKey, res.BatchID)
	took := time.Since(begin)
	if st.Status != "completed" || st.Sent != 2 {
		t.Errorf("after the takeover: %+v, want completed with 2 sent", st)
	}
	if bound := 2*cfg.Lease + cfg.SweepInterval + 2*time.Second; took > bound {
		t.Errorf("the chunk of the dead worker resumed after %v, want within %v", took, bound)
	}
	checkStoredOnce(t, mem, res.BatchID, 2)
	c, err := mem.LoadChunk(t.Context(), store.ChunkRef{AppID: testApp, BatchID: res.BatchID})
	must(t, err)
	want := 1
	if startsChunk {
		want = 2
	}
	if c.Attempts != want {
		t.Errorf("the chunk was attempted %d times, want %d", c.Attempts, want)
	}
}

// TestSweepAfterTasksLost: the queue loses the tasks of an accepted batch
// (a flushed or replaced Redis) before any worker ran; the first worker
// to start sweeps them back within Lease.
func TestSweepAfterTasksLost(t *testing.T) {
	t.Parallel()
	redisBackends(t, func(t *testing.T, redis asynq.RedisConnOpt) {
		svc, e, mem := recoveryEnv(t, redis, nil, nil)
		cfg := e.cfg
		res := accepted(t, e.post(t, adminKey, twoReceivers))
		insp := asynq.NewInspector(redis)
		defer insp.Close()
		must(t, insp.DeleteQueue(cfg.Queue, true))
		begin := time.Now()
		run(t, svc)
		st := e.waitFinished(t, adminKey, res.BatchID)
		if st.Status != "completed" || st.Sent != 2 {
			t.Errorf("after the sweep: %+v, want completed with 2 sent", st)
		}
		if took, bound := time.Since(begin), cfg.Lease+cfg.SweepInterval+2*time.Second; took > bound {
			t.Errorf("the lost chunk resumed after %v, want within %v", took, bound)
		}
		checkStoredOnce(t, mem, res.BatchID, 2)
	})
}

// nopLogger silences an asynq server.
type nopLogger struct{}

func (nopLogger) Debug(...any) {}
func (nopLogger) Info(...any)  {}
func (nopLogger) Warn(...any)  {}
func (nopLogger) Error(...any) {}
func (nopLogger) Fatal(...any) {}

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
	mk := func() *env {
		return newEnvOn(t, mem, func(c *batch.Config) {
			c.ChunkSize = 1
			c.Now = func() time.Time { return *clock.Load() }
			c.OnBatchDone = func(context.Context, batch.BatchSummary) { calls.Add(1) }
		})
	}
	a, b := mk(), mk()
	res := accepted(t, a.post(t, adminKey, `{"message":"m","messageType":"text","paras":[{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"receiver":"user-d"}]}`))
	var wg sync.WaitGroup
	for no := range 4 {
		svc := a.svc
		if no%2 == 1 {
			svc = b.svc
		}
		wg.Go(func() {
			must(t, svc.ProcessChunk(t.Context(), store.ChunkRef{AppID: testApp, BatchID: res.BatchID, No: no}))
		})
	}
	wg.Wait()
	later := now.Add(time.Hour)
	clock.Store(&later)
	for _, e := range []*env{a, b, a} {
		_, err := e.svc.Sweep(t.Context())
		must(t, err)
	}
	if calls.Load() != 1 {
		t.Errorf("OnBatchDone ran %d times, want exactly 1", calls.Load())
	}
	got, err := mem.GetBatch(t.Context(), testApp, res.BatchID)
	must(t, err)
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
	e := newEnvOn(t, mem, func(c *batch.Config) {
		c.Now = func() time.Time { return *clock.Load() }
		c.Lease = time.Minute
	})
	res := accepted(t, e.post(t, adminKey, twoReceivers))
	e.processAll(t) // no OnBatchDone on this service: the "crashed" one
	// The crashed process had claimed the report.
	claimed, err := mem.ClaimDoneNotifications(t.Context(), &store.ClaimDoneNotificationsParams{
		AppID: testApp, BatchID: res.BatchID, FinishedBefore: now, At: now, Until: now.Add(time.Minute), Limit: 1,
	})
	must(t, err)
	if len(claimed) != 1 {
		t.Fatalf("claimed %d batches, want the finished one", len(claimed))
	}
	survivor := newEnvOn(t, mem, func(c *batch.Config) {
		c.Now = func() time.Time { return *clock.Load() }
		c.Lease = time.Minute
		c.OnBatchDone = func(_ context.Context, s batch.BatchSummary) { calls.Add(1); got = s }
	})
	sweepAt := func(d time.Duration, want int32) {
		t.Helper()
		at := now.Add(d)
		clock.Store(&at)
		_, err := survivor.svc.Sweep(t.Context())
		must(t, err)
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

// TestOnBatchDoneOnce runs two processors (two Services on one store and
// one Redis queue, as two worker processes would be) and checks that the
// completion callback fires exactly once per batch.
func TestOnBatchDoneOnce(t *testing.T) {
	t.Parallel()
	redisBackends(t, func(t *testing.T, redis asynq.RedisConnOpt) {
		var mu sync.Mutex
		calls := map[string][]batch.BatchSummary{}
		var callers [2]atomic.Int32
		onDone := func(worker int) func(context.Context, batch.BatchSummary) {
			return func(_ context.Context, s batch.BatchSummary) {
				callers[worker].Add(1)
				mu.Lock()
				defer mu.Unlock()
				calls[s.BatchID] = append(calls[s.BatchID], s)
			}
		}
		e := newQueuedEnv(t, redis, func(c *batch.Config) {
			c.ChunkSize = 2
			c.Concurrency = 3
			c.OnBatchDone = onDone(0)
		})
		second := e.cfg
		second.OnBatchDone = onDone(1)
		startService(t, second)

		const batches = 6
		var ids []string
		for range batches {
			res := accepted(t, e.post(t, adminKey, `{"message":"m","messageType":"text","paras":[
				{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"room":"room-001"},{"room":"room-002"},{"room":"room-003"},{"receiver":"user-d"}]}`))
			ids = append(ids, res.BatchID)
		}
		for _, id := range ids {
			e.waitFinished(t, adminKey, id)
		}
		time.Sleep(100 * time.Millisecond) // a duplicate call would come right after the last chunk
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			got := calls[id]
			if len(got) != 1 {
				t.Errorf("OnBatchDone for %s ran %d times, want once", id, len(got))
				continue
			}
			if s := got[0]; s.Status != store.StatusCompleted || s.Sent != 7 || s.Count != 7 || s.AppID != testApp || s.FinishedAt.IsZero() {
				t.Errorf("summary %+v", s)
			}
		}
		t.Logf("callbacks by worker: %d, %d", callers[0].Load(), callers[1].Load())
	})
}
