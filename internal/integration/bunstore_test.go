package integration_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/uptrace/bun"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/adapters/bunstore/bunopen"
	"github.com/chatbatch/chatbatch/batch"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/internal/seed"
	"github.com/chatbatch/chatbatch/store"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

// The end-to-end tests run on bunstore too: SQLite always, PostgreSQL and
// MariaDB/MySQL when CHATBATCH_TEST_POSTGRES / CHATBATCH_TEST_MYSQL are
// set. Server databases are opened once per test binary; each test gets
// its own tables through a random prefix.

type sqlBackend struct {
	name, env string
	once      sync.Once
	db        *bun.DB
	err       error
}

var sqlBackends = []*sqlBackend{
	{name: "sqlite"},
	{name: "postgres", env: "CHATBATCH_TEST_POSTGRES"},
	{name: "mysql", env: "CHATBATCH_TEST_MYSQL"},
}

// newBunstore returns a migrated bunstore on backend b, isolated for t.
func (b *sqlBackend) newBunstore(t testing.TB) *bunstore.Store {
	t.Helper()
	var db *bun.DB
	if b.env == "" {
		var err error
		// A file (not :memory:) so that several connections and two
		// services can share it, as processes would.
		db, err = bunopen.Open(t.Context(), "sqlite:"+filepath.Join(t.TempDir(), "chatbatch.db"))
		bt.Must(t, err)
		t.Cleanup(func() { db.Close() })
	} else {
		dsn := os.Getenv(b.env)
		if dsn == "" {
			testenv.Skip(t, "set %s to run this test on %s", b.env, b.name)
		}
		b.once.Do(func() { b.db, b.err = bunopen.Open(context.Background(), dsn) })
		if b.err != nil {
			t.Fatalf("%s=%s: %v", b.env, dsn, b.err)
		}
		db = b.db
	}
	st, err := bunstore.New(db, &bunstore.Options{TablePrefix: "t" + strings.ToLower(rand.Text()[:10]) + "_"})
	bt.Must(t, err)
	bt.Must(t, st.Migrate(t.Context()))
	t.Cleanup(func() {
		_ = st.Drop(context.Background())
	})
	return st
}

// onBunstore runs fn once per SQL backend.
func onBunstore(t *testing.T, fn func(t *testing.T, newStore func(t *testing.T) *bunstore.Store)) {
	for _, b := range sqlBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, func(t *testing.T) *bunstore.Store { return b.newBunstore(t) })
		})
	}
}

// redisForBunstore is the real Redis when CHATBATCH_TEST_REDIS is set, the
// in-process one otherwise.
func redisForBunstore(t *testing.T) asynq.RedisConnOpt {
	if os.Getenv("CHATBATCH_TEST_REDIS") != "" {
		return realRedis(t)
	}
	return miniRedis(t)
}

// TestSeedExamplesOnBunstore is TestSeedExamples with bunstore as the store.
func TestSeedExamplesOnBunstore(t *testing.T) {
	t.Parallel()
	onBunstore(t, func(t *testing.T, newStore func(t *testing.T) *bunstore.Store) {
		e := bt.NewQueuedEnvOn(t, newStore(t), redisForBunstore(t), nil)
		direct := func(u string) string { return store.DirectRoomID("system", u) }
		b1 := bt.Accepted(t, e.Post(t, bt.AdminKey, seed.Broadcast))
		b2 := bt.Accepted(t, e.Post(t, bt.AdminKey, seed.Template))
		b3 := bt.Accepted(t, e.Post(t, bt.AdminKey, seed.Rooms))
		for _, id := range []string{b1.BatchID, b2.BatchID, b3.BatchID} {
			if st := e.WaitFinished(t, bt.AdminKey, id); st.Status != "completed" {
				t.Errorf("batch %s: %+v", id, st)
			}
		}
		texts := func(room, batchID string) []string {
			var out []string
			for _, m := range bt.RoomMessages(t, e.St, bt.TestApp, room) {
				if m.BatchID == batchID {
					out = append(out, m.Text)
				}
			}
			return out
		}
		for u, want := range map[string]string{"user-a": "Hi Alice,您的訂單 ORD-001 已出貨!", "user-b": "Hi Bob,您的訂單 ORD-002 已出貨!"} {
			if got := texts(direct(u), b2.BatchID); len(got) != 1 || got[0] != want {
				t.Errorf("%s got %q, want %q", u, got, want)
			}
		}
		for _, u := range []string{"user-a", "user-b", "user-c"} {
			if got := texts(direct(u), b1.BatchID); len(got) != 1 || got[0] != "系統公告:明天將進行例行維護" {
				t.Errorf("%s got %q from the broadcast", u, got)
			}
		}
		for _, room := range []string{"room-001", "room-002", "room-003"} {
			if got := texts(room, b3.BatchID); len(got) != 1 || got[0] != "活動提醒:明天 14:00 開始" {
				t.Errorf("%s got %q", room, got)
			}
		}
		if n := len(e.Rec.Notifications()); n != 5 {
			t.Errorf("%d notifications, want 5 (3 + 2 receivers; the rooms example does not push)", n)
		}
		_, page := e.Recipients(t, b1.BatchID, "?status=sent")
		if page.Total != 3 || len(page.Recipients) != 3 || page.Recipients[2].Room != direct("user-c") {
			t.Errorf("recipients of the broadcast: %+v", page)
		}
	})
}

// TestIdempotencyConcurrentOnBunstore sends fifty identical requests with
// one key at once against each database: exactly one batch.
func TestIdempotencyConcurrentOnBunstore(t *testing.T) {
	t.Parallel()
	onBunstore(t, func(t *testing.T, newStore func(t *testing.T) *bunstore.Store) {
		e := bt.NewEnvOn(t, newStore(t), nil)
		bt.CheckOneBatch(t, e.BlastOneKey(t, 50), len(e.Enq.All()))
		// Afterwards every retry gets the batch.
		r := e.DoWith(t, http.MethodPost, "/messages/batch", bt.AdminKey, strings.NewReader(seed.Template), map[string]string{"Idempotency-Key": "blast-2026-11"})
		if r.Status != 200 || r.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("a retry after the blast = %d %s", r.Status, r.Raw)
		}
	})
}

// TestOnBatchDoneOnceOnBunstore runs two services (two worker processes)
// on one database and one Redis: each batch's callback fires once.
func TestOnBatchDoneOnceOnBunstore(t *testing.T) {
	t.Parallel()
	onBunstore(t, func(t *testing.T, newStore func(t *testing.T) *bunstore.Store) {
		var mu sync.Mutex
		calls := map[string]int{}
		var byWorker [2]atomic.Int32
		onDone := func(w int) func(context.Context, batch.BatchSummary) {
			return func(_ context.Context, s batch.BatchSummary) {
				byWorker[w].Add(1)
				mu.Lock()
				calls[s.BatchID]++
				mu.Unlock()
			}
		}
		e := bt.NewQueuedEnvOn(t, newStore(t), redisForBunstore(t), func(c *batch.Config) {
			c.ChunkSize = 1
			c.Concurrency = 4
			c.OnBatchDone = onDone(0)
		})
		second := e.Cfg
		second.OnBatchDone = onDone(1)
		bt.StartService(t, second)
		var ids []string
		for range 4 {
			ids = append(ids, bt.Accepted(t, e.Post(t, bt.AdminKey, bt.EightRecipients)).BatchID)
		}
		for _, id := range ids {
			if st := e.WaitFinished(t, bt.AdminKey, id); st.Sent != 8 {
				t.Errorf("batch %s: %+v", id, st)
			}
		}
		// The callback runs after the last chunk is recorded, so a batch
		// can look finished a moment before it comes.
		bt.WaitUntil(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if calls[id] == 0 {
					return false
				}
			}
			return true
		})
		time.Sleep(100 * time.Millisecond) // a duplicate call would come right after the first
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if calls[id] != 1 {
				t.Errorf("OnBatchDone for %s ran %d times, want once", id, calls[id])
			}
		}
		t.Logf("callbacks by worker: %d, %d", byWorker[0].Load(), byWorker[1].Load())
	})
}

// TestCancelOnBunstore cancels a running batch on each database.
func TestCancelOnBunstore(t *testing.T) {
	t.Parallel()
	onBunstore(t, func(t *testing.T, newStore func(t *testing.T) *bunstore.Store) {
		cancelWhileRunning(t, bt.NewQueuedEnvOn(t, newStore(t), redisForBunstore(t), func(c *batch.Config) { c.ChunkSize = 1; c.Concurrency = 1 }))
	})
}

// TestOwnershipOnBunstore: who created a batch, not its sender, decides
// who sees and controls it (bunstore keeps CreatedBy).
func TestOwnershipOnBunstore(t *testing.T) {
	t.Parallel()
	onBunstore(t, func(t *testing.T, newStore func(t *testing.T) *bunstore.Store) {
		bt.CheckOwnershipByCreator(t, bt.NewEnvOn(t, newStore(t), func(c *batch.Config) { c.AuthenticateRequest = bt.UserHeaderAuth }))
	})
}

// BenchmarkProcessChunk measures the worker side of one chunk of 500
// one-on-one recipients on each database: resolving rooms, rendering,
// saving, delivering to a Recorder and recording outcomes. "new-rooms"
// sends to users who have no room with the sender yet (each room is
// created); "existing-rooms" sends to the same users again.
//
//	CHATBATCH_TEST_POSTGRES=… CHATBATCH_TEST_MYSQL=… go test -run='^$' -bench=ProcessChunk -benchtime=10x ./internal/integration/
func BenchmarkProcessChunk(b *testing.B) {
	// The API description checks (TestMain) cost more than what is measured
	// here, and their garbage would be collected on the clock.
	resp, req := bt.CheckResponse, bt.CheckRequest
	bt.CheckResponse, bt.CheckRequest = nil, nil
	defer func() { bt.CheckResponse, bt.CheckRequest = resp, req }()
	for _, be := range sqlBackends {
		b.Run(be.name, func(b *testing.B) {
			for _, mode := range []string{"new-rooms", "existing-rooms"} {
				b.Run(mode, func(b *testing.B) {
					st := be.newBunstore(b)
					e := bt.NewEnvOn(b, st, nil)
					const n = 500
					body := func(round int) string {
						users := make([]string, n)
						var paras strings.Builder
						for i := range users {
							users[i] = fmt.Sprintf("bench-%d-%d", round, i)
							if i > 0 {
								paras.WriteByte(',')
							}
							fmt.Fprintf(&paras, `{"receiver":%q,"$n$":%d}`, users[i], i)
						}
						if err := st.AddUsers(b.Context(), bt.TestApp, users...); err != nil {
							b.Fatal(err)
						}
						return `{"message":"Hi #$n$, your order shipped","messageType":"text","paras":[` + paras.String() + `]}`
					}
					existing := body(0)
					if mode == "existing-rooms" {
						// Create the rooms before the clock starts.
						if r := e.Post(b, bt.AdminKey, existing); r.Status != 200 {
							b.Fatalf("POST = %d %s", r.Status, r.Raw)
						}
						tasks := e.Enq.All()
						if err := e.Svc.Processor().ProcessTask(b.Context(), tasks[len(tasks)-1].Task); err != nil {
							b.Fatal(err)
						}
					}
					for i := 0; b.Loop(); i++ {
						b.StopTimer()
						req := existing
						if mode == "new-rooms" {
							req = body(i + 1)
						}
						r := e.Post(b, bt.AdminKey, req)
						tasks := e.Enq.All()
						b.StartTimer()
						if r.Status != 200 {
							b.Fatalf("POST = %d %s", r.Status, r.Raw)
						}
						if err := e.Svc.Processor().ProcessTask(b.Context(), tasks[len(tasks)-1].Task); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "recipients/s")
				})
			}
		})
	}
}
