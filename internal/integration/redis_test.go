package integration_test

import (
	"os"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

// miniRedis starts an in-process Redis for the test.
func miniRedis(t testing.TB) asynq.RedisConnOpt {
	t.Helper()
	m := miniredis.RunT(t)
	return asynq.RedisClientOpt{Addr: m.Addr()}
}

// realRedis returns the Redis of CHATBATCH_TEST_REDIS ("host:port" or a
// redis:// URL) or skips the test.
func realRedis(t testing.TB) asynq.RedisConnOpt {
	t.Helper()
	addr := os.Getenv("CHATBATCH_TEST_REDIS")
	if addr == "" {
		testenv.Skip(t, "set CHATBATCH_TEST_REDIS=127.0.0.1:6379 to run this test against a real Redis")
	}
	if strings.Contains(addr, "://") {
		opt, err := asynq.ParseRedisURI(addr)
		if err != nil {
			t.Fatalf("CHATBATCH_TEST_REDIS: %v", err)
		}
		return opt
	}
	return asynq.RedisClientOpt{Addr: addr}
}

// redisBackends runs fn on an in-process Redis, and on a real one when
// CHATBATCH_TEST_REDIS is set.
func redisBackends(t *testing.T, fn func(t *testing.T, redis asynq.RedisConnOpt)) {
	t.Run("miniredis", func(t *testing.T) {
		t.Parallel()
		fn(t, miniRedis(t))
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		fn(t, realRedis(t))
	})
}
