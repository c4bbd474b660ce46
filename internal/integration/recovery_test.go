package integration_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/store"
	"github.com/hibiken/asynq"
)

// checkStoredOnce asserts that batch id has exactly want messages in the
// one-on-one rooms of system with user-a and user-b, each stored once.
func checkStoredOnce(t *testing.T, st bt.TestStore, id string, want int) {
	t.Helper()
	seen := map[string]int{}
	for _, u := range []string{"user-a", "user-b"} {
		for _, m := range bt.RoomMessages(t, st, bt.TestApp, store.DirectRoomID("system", u)) {
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
	cfg := bt.BaseConfig(t, st, deliverytest.NewRecorder())
	cfg.Redis = redis
	cfg.Queue = "chatbatch-test-" + strings.ToLower(rand.Text()[:8])
	cfg.ServerConfig = bt.FastServer()
	cfg.Lease = 300 * time.Millisecond
	cfg.SweepInterval = 50 * time.Millisecond
	return cfg
}

// recoveryEnv is a Service (not running) on a memstore seeded with the
// directory, seen through wrap (nil: as it is), with recoveryConfig.
func recoveryEnv(t *testing.T, redis asynq.RedisConnOpt, wrap func(store.Store) store.Store, mutate func(*batch.Config)) (*batch.Service, *bt.Env, *memstore.Store) {
	mem := memstore.New(nil)
	bt.SeedDirectory(t, mem)
	var st store.Store = mem
	if wrap != nil {
		st = wrap(mem)
	}
	cfg := recoveryConfig(t, st, redis)
	if mutate != nil {
		mutate(&cfg)
	}
	svc, e := bt.NewService(t, cfg)
	e.St = mem
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
		var fs *bt.FailingStore
		svc, e, mem := recoveryEnv(t, redis, func(st store.Store) store.Store {
			fs = &bt.FailingStore{Store: st, Fail: map[string]int{"StartChunk": -1}}
			return fs
		}, func(c *batch.Config) {
			c.MaxRetry = 1
			c.SweepInterval = time.Hour // the test sweeps
		})
		cfg := e.Cfg
		bt.Run(t, svc)
		res := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.TwoReceivers))
		insp := asynq.NewInspector(redis)
		defer insp.Close()
		bt.WaitUntil(t, func() bool {
			info, err := insp.GetTaskInfo(cfg.Queue, res.BatchID+":0")
			return err == nil && info.State == asynq.TaskStateArchived
		})
		fs.Mu.Lock()
		fs.Fail["StartChunk"] = 0 // the database is back
		fs.Mu.Unlock()
		time.Sleep(cfg.Lease + 50*time.Millisecond) // the chunk is overdue
		n, err := svc.Sweep(t.Context())
		bt.Must(t, err)
		if n != 1 {
			t.Errorf("Sweep enqueued %d chunks, want the archived one", n)
		}
		st := e.WaitFinished(t, bt.AdminKey, res.BatchID)
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
	cfg := e.Cfg

	// The dead worker: it takes the task, maybe starts the chunk, and hangs.
	taken := make(chan struct{})
	release := make(chan struct{})
	zc := bt.FastServer()
	zc.Concurrency, zc.Queues, zc.ShutdownTimeout = 1, map[string]int{cfg.Queue: 1}, 10*time.Millisecond
	zc.Logger, zc.LogLevel = nopLogger{}, asynq.FatalLevel
	zombie := asynq.NewServer(redis, zc)
	var once sync.Once
	bt.Must(t, zombie.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		if startsChunk {
			now := time.Now().UTC()
			var p struct {
				App, Batch string
				Chunk      int
			}
			bt.Must(t, json.Unmarshal(task.Payload(), &p))
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

	res := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.TwoReceivers))
	select {
	case <-taken:
	case <-time.After(bt.WaitLimit):
		t.Fatal("the first worker never took the task")
	}
	begin := time.Now()
	bt.Run(t, svc)
	st := e.WaitFinished(t, bt.AdminKey, res.BatchID)
	took := time.Since(begin)
	if st.Status != "completed" || st.Sent != 2 {
		t.Errorf("after the takeover: %+v, want completed with 2 sent", st)
	}
	if bound := 2*cfg.Lease + cfg.SweepInterval + 2*time.Second; took > bound {
		t.Errorf("the chunk of the dead worker resumed after %v, want within %v", took, bound)
	}
	checkStoredOnce(t, mem, res.BatchID, 2)
	c, err := mem.LoadChunk(t.Context(), store.ChunkRef{AppID: bt.TestApp, BatchID: res.BatchID})
	bt.Must(t, err)
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
		cfg := e.Cfg
		res := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.TwoReceivers))
		insp := asynq.NewInspector(redis)
		defer insp.Close()
		bt.Must(t, insp.DeleteQueue(cfg.Queue, true))
		begin := time.Now()
		bt.Run(t, svc)
		st := e.WaitFinished(t, bt.AdminKey, res.BatchID)
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

func (nopLogger) Info(...any) {}

func (nopLogger) Warn(...any) {}

func (nopLogger) Error(...any) {}

func (nopLogger) Fatal(...any) {}

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
		e := bt.NewQueuedEnv(t, redis, func(c *batch.Config) {
			c.ChunkSize = 2
			c.Concurrency = 3
			c.OnBatchDone = onDone(0)
		})
		second := e.Cfg
		second.OnBatchDone = onDone(1)
		bt.StartService(t, second)

		const batches = 6
		var ids []string
		for range batches {
			res := bt.Accepted(t, e.Post(t, bt.AdminKey, `{"message":"m","messageType":"text","paras":[
				{"receiver":"user-a"},{"receiver":"user-b"},{"receiver":"user-c"},{"room":"room-001"},{"room":"room-002"},{"room":"room-003"},{"receiver":"user-d"}]}`))
			ids = append(ids, res.BatchID)
		}
		for _, id := range ids {
			e.WaitFinished(t, bt.AdminKey, id)
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
			if s := got[0]; s.Status != store.StatusCompleted || s.Sent != 7 || s.Count != 7 || s.AppID != bt.TestApp || s.FinishedAt.IsZero() {
				t.Errorf("summary %+v", s)
			}
		}
		t.Logf("callbacks by worker: %d, %d", callers[0].Load(), callers[1].Load())
	})
}

// TestSweepRunsChunkRetryingAfterStoreFailure: a chunk whose attempt
// failed because the store did waits in asynq's retry set — here for an
// hour, as asynq's backoff makes it after a few failures — and the sweep,
// which reads the store, runs it at once when the store answers again.
// A chunk that waits because its deliverer failed keeps its backoff.
func TestSweepRunsChunkRetryingAfterStoreFailure(t *testing.T) {
	t.Parallel()
	anHour := func(int, error, *asynq.Task) time.Duration { return time.Hour }
	redisBackends(t, func(t *testing.T, redis asynq.RedisConnOpt) {
		t.Run("store", func(t *testing.T) {
			svc, e, mem := recoveryEnv(t, redis, func(st store.Store) store.Store {
				return &bt.FailingStore{Store: st, Fail: map[string]int{"StartChunk": 1}}
			}, func(c *batch.Config) { c.ServerConfig.RetryDelayFunc = anHour })
			bt.Run(t, svc)
			res := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.TwoReceivers))
			start := time.Now()
			st := e.WaitFinished(t, bt.AdminKey, res.BatchID)
			if took := time.Since(start); st.Status != "completed" || st.Sent != 2 || took > 5*time.Second {
				t.Errorf("after one failed start: %+v in %v, want completed with 2 sent within 5 s (the retry was an hour away)", st, took)
			}
			checkStoredOnce(t, mem, res.BatchID, 2)
		})
		t.Run("deliverer", func(t *testing.T) {
			svc, e, _ := recoveryEnv(t, redis, nil, func(c *batch.Config) { c.ServerConfig.RetryDelayFunc = anHour })
			var failed atomic.Bool
			e.Cfg.Deliverer.(*deliverytest.Recorder).DeliverHook = func(context.Context, []store.Message) error {
				if failed.CompareAndSwap(false, true) {
					return errors.New("the hub is down")
				}
				return nil
			}
			bt.Run(t, svc)
			res := bt.Accepted(t, e.Post(t, bt.AdminKey, bt.TwoReceivers))
			insp := asynq.NewInspector(redis)
			defer insp.Close()
			bt.WaitUntil(t, func() bool {
				info, err := insp.GetTaskInfo(e.Cfg.Queue, res.BatchID+":0")
				return err == nil && info.State == asynq.TaskStateRetry
			})
			time.Sleep(e.Cfg.Lease + 20*e.Cfg.SweepInterval) // overdue, and many sweeps
			info, err := insp.GetTaskInfo(e.Cfg.Queue, res.BatchID+":0")
			bt.Must(t, err)
			if info.State != asynq.TaskStateRetry {
				t.Errorf("a task retrying after a deliverer failure is %v after the sweeps, want still retry (its backoff kept)", info.State)
			}
			if _, st := e.Status(t, bt.AdminKey, res.BatchID); st.FinishedAt != nil {
				t.Errorf("the batch finished: %+v", st)
			}
		})
	})
}

// stuckSweep is a store whose PendingChunks, once armed, blocks without
// regard to its context until released: a sweep waiting on a database
// that stopped answering.
type stuckSweep struct {
	store.Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *stuckSweep) PendingChunks(ctx context.Context, p *store.PendingChunksParams) ([]store.Chunk, error) {
	if s.armed.Load() {
		s.once.Do(func() { close(s.entered) })
		<-s.release
	}
	return s.Store.PendingChunks(ctx, p)
}

// TestRunStopsWhileSweepIsStuck: Run, told to stop while its sweep waits
// on the store, stops taking chunks and returns within the shutdown
// timeout plus StoreTimeout, not when the store answers. (Before, the
// sweep ran in Run's own loop, and a worker whose database stalled went
// on taking chunks for as long as the sweep waited.)
func TestRunStopsWhileSweepIsStuck(t *testing.T) {
	t.Parallel()
	redisBackends(t, func(t *testing.T, redis asynq.RedisConnOpt) {
		stuck := &stuckSweep{entered: make(chan struct{}), release: make(chan struct{})}
		defer close(stuck.release)
		svc, _, _ := recoveryEnv(t, redis, func(st store.Store) store.Store { stuck.Store = st; return stuck }, func(c *batch.Config) {
			c.StoreTimeout = time.Second
			c.ServerConfig.ShutdownTimeout = time.Second
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx) }()
		stuck.armed.Store(true)
		select {
		case <-stuck.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("no sweep reached PendingChunks")
		}
		cancel()
		stopped := time.Now()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if took := time.Since(stopped); took > 4*time.Second {
				t.Errorf("Run returned %v after the cancel, want within the shutdown timeout + StoreTimeout (2 s) and a margin", took)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return within 10 s of the cancel while its sweep was stuck in the store")
		}
	})
}
