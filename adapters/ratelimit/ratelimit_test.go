package ratelimit_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/chatbatch/chatbatch/adapters/ratelimit"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	"github.com/chatbatch/chatbatch/store"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

// The wrapper passes the conformance suites around a Recorder: nothing is
// lost, changed or hidden by the limiting.
func TestConformance(t *testing.T) {
	t.Run("Pusher", func(t *testing.T) {
		deliverytest.RunPusher(t, func(t *testing.T) deliverytest.PusherHarness {
			rec := deliverytest.NewRecorder()
			return pushHarness{rec, ratelimit.NewPusher(rec, ratelimit.Local(10000, 3))}
		})
	})
	t.Run("Deliverer", func(t *testing.T) {
		deliverytest.RunDeliverer(t, func(t *testing.T) deliverytest.DelivererHarness {
			rec := deliverytest.NewRecorder()
			return delivHarness{rec, ratelimit.NewDeliverer(rec, ratelimit.Local(10000, 2))}
		})
	})
}

type pushHarness struct {
	*deliverytest.Recorder
	p delivery.Pusher
}

func (h pushHarness) Pusher() delivery.Pusher { return h.p }
func (h pushHarness) Received(context.Context) ([]delivery.Notification, error) {
	return h.Recorder.Notifications(), nil
}

type delivHarness struct {
	*deliverytest.Recorder
	d delivery.Deliverer
}

func (h delivHarness) Deliverer() delivery.Deliverer { return h.d }

// countingPusher counts notifications and when they arrived.
type countingPusher struct {
	mu    sync.Mutex
	times []time.Time
}

func (c *countingPusher) Push(ctx context.Context, ns []delivery.Notification) error {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for range ns {
		c.times = append(c.times, now)
	}
	return nil
}

func notifications(n int) []delivery.Notification {
	out := make([]delivery.Notification, n)
	for i := range out {
		out[i] = delivery.Notification{AppID: "a", UserID: "u", MessageID: "m"}
	}
	return out
}

// TestSharedLimit: three workers, each with its own limiter on one Redis
// key of 1,000 a second, push as fast as they can for 3 s; together they
// stay within the limit (±10 %).
func TestSharedLimit(t *testing.T) {
	addr := os.Getenv("CHATBATCH_TEST_REDIS")
	if addr == "" {
		testenv.Skip(t, "set CHATBATCH_TEST_REDIS=127.0.0.1:6379 to check the shared limit on a real Redis")
	}
	rdb := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(addr, "redis://")})
	defer rdb.Close()
	key := "chatbatch-test-ratelimit-" + time.Now().Format("150405.000000000")
	defer rdb.Del(context.Background(), key)
	const perSecond, run = 1000, 3 * time.Second
	sink := &countingPusher{}
	ctx, cancel := context.WithTimeout(t.Context(), run)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range 3 {
		l, err := ratelimit.Redis(rdb, key, perSecond, 0)
		if err != nil {
			t.Fatal(err)
		}
		p := ratelimit.NewPusher(sink, l)
		wg.Go(func() {
			for ctx.Err() == nil {
				_ = p.Push(ctx, notifications(250))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	sink.mu.Lock()
	n := len(sink.times)
	sink.mu.Unlock()
	// The burst (100) may pass at once; the rest at the rate.
	want := perSecond*elapsed.Seconds() + 100
	t.Logf("%d notifications in %v through 3 limiters of %d/s (%.0f/s)", n, elapsed.Round(time.Millisecond), perSecond, float64(n)/elapsed.Seconds())
	if float64(n) > want*1.1 || float64(n) < want*0.9 {
		t.Errorf("%d notifications passed in %v, want %.0f ± 10 %%", n, elapsed, want)
	}
}

// TestWaitsInsteadOfFailing: a call larger than the burst waits its turn
// and delivers everything; a deadline too short fails the rest
// transiently.
func TestWaitsInsteadOfFailing(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	for name, l := range map[string]func() ratelimit.Limiter{
		"local": func() ratelimit.Limiter { return ratelimit.Local(200, 20) },
		"redis": func() ratelimit.Limiter {
			l, err := ratelimit.Redis(rdb, "k-"+time.Now().Format("150405.000000000"), 200, 20)
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
	} {
		t.Run(name, func(t *testing.T) {
			sink := &countingPusher{}
			p := ratelimit.NewPusher(sink, l())
			start := time.Now()
			if err := p.Push(t.Context(), notifications(100)); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took < 300*time.Millisecond || len(sink.times) != 100 {
				t.Errorf("100 notifications at 200/s (burst 20) took %v and %d passed; want about 0.4 s and all", took, len(sink.times))
			}
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			var pushed atomic.Int64
			err := p.Push(ctx, notifications(100))
			pushed.Store(int64(len(sink.times) - 100))
			errs := delivery.ItemErrors(err, 100)
			if err == nil || delivery.IsPermanent(errs[99]) || errs[99] == nil || pushed.Load() >= 100 {
				t.Errorf("a deadline shorter than the limit allows: %v (%d pushed)", err, pushed.Load())
			}
		})
	}
}

func (h delivHarness) Received(context.Context) ([]store.Message, error) {
	return h.Recorder.Messages(), nil
}
