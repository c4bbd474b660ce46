package integration_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/chatbatch/chatbatch/internal/gcra"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

// TestGCRAArithmetic runs the script on miniredis with a clock the test sets:
// a limit of 3 at once, one back a second.
func TestGCRAArithmetic(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	now := time.Unix(1_800_000_000, 0)
	mr.SetTime(now)
	ctx := t.Context()
	take := func(n int) gcra.Result {
		t.Helper()
		r, err := gcra.Take(ctx, rdb, "k", time.Second, 3, n)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for i, c := range []struct {
		advance time.Duration
		n       int
		want    gcra.Result
	}{
		{0, 0, gcra.Result{Allowed: true, Remaining: 3}}, // asking takes nothing
		{0, 1, gcra.Result{Allowed: true, Remaining: 2, ResetAfter: time.Second}},
		{0, 2, gcra.Result{Allowed: true, Remaining: 0, ResetAfter: 3 * time.Second}},
		{0, 1, gcra.Result{Remaining: 0, RetryAfter: time.Second, ResetAfter: 3 * time.Second}},
		{500 * time.Millisecond, 1, gcra.Result{Remaining: 0, RetryAfter: 500 * time.Millisecond, ResetAfter: 2500 * time.Millisecond}},
		{500 * time.Millisecond, 2, gcra.Result{Remaining: 1, RetryAfter: time.Second, ResetAfter: 2 * time.Second}},
		{0, 1, gcra.Result{Allowed: true, Remaining: 0, ResetAfter: 3 * time.Second}},
		{time.Hour, 4, gcra.Result{Remaining: 3, RetryAfter: time.Second}}, // more than the burst: never
		{0, 3, gcra.Result{Allowed: true, Remaining: 0, ResetAfter: 3 * time.Second}},
	} {
		now = now.Add(c.advance)
		mr.SetTime(now)
		if got := take(c.n); got != c.want {
			t.Errorf("step %d: take %d = %+v, want %+v", i, c.n, got, c.want)
		}
	}
	if ttl := mr.TTL("k"); ttl <= 3*time.Second || ttl > 5*time.Second {
		t.Errorf("the key expires in %v, want when the limit is full again (3 s) and a second", ttl)
	}
	if _, err := gcra.Take(ctx, rdb, "k", time.Second, 0, 1); err == nil {
		t.Error("a burst of 0 was accepted")
	}
}

// TestGCRARealRedis checks the script on a real Redis (its Lua and its TIME).
func TestGCRARealRedis(t *testing.T) {
	addr := os.Getenv("CHATBATCH_TEST_REDIS")
	if addr == "" {
		testenv.Skip(t, "set CHATBATCH_TEST_REDIS=127.0.0.1:6379 to run this test against a real Redis")
	}
	opt := &redis.Options{Addr: addr}
	if strings.Contains(addr, "://") {
		var err error
		if opt, err = redis.ParseURL(addr); err != nil {
			t.Fatal(err)
		}
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	key := "chatbatch-test-gcra-" + time.Now().Format("150405.000000000")
	defer rdb.Del(context.Background(), key)
	ctx := t.Context()
	const interval = 6 * time.Second // 10 a minute: the test's own time does not count
	for i := range 5 {
		r, err := gcra.Take(ctx, rdb, key, interval, 5, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Allowed || r.Remaining != 4-i || r.ResetAfter <= time.Duration(i)*interval || r.ResetAfter > time.Duration(i+1)*interval {
			t.Errorf("take %d: %+v", i, r)
		}
	}
	r, err := gcra.Take(ctx, rdb, key, interval, 5, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Allowed || r.RetryAfter <= 0 || r.RetryAfter > interval || r.Remaining != 0 || r.ResetAfter <= 4*interval {
		t.Errorf("over the burst: %+v", r)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 4*interval || ttl > 5*interval+time.Second {
		t.Errorf("the key expires in %v, want when the limit is full again (30 s) and a second", ttl)
	}
}
