package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// redisTarget is the Redis the queues live in.
type redisTarget struct {
	opt     asynq.RedisConnOpt
	client  redis.UniversalClient
	mini    *miniredis.Miniredis // -redis=mem
	desc    string
	version string
}

func openRedis(ctx context.Context, spec string) (*redisTarget, error) {
	r := &redisTarget{}
	switch {
	case spec == "mem":
		m, err := miniredis.Run()
		if err != nil {
			return nil, fmt.Errorf("start miniredis: %w", err)
		}
		r.mini = m
		r.opt = asynq.RedisClientOpt{Addr: m.Addr()}
		r.desc = "in-process miniredis (" + m.Addr() + ")"
	case strings.Contains(spec, "://"):
		opt, err := asynq.ParseRedisURI(spec)
		if err != nil {
			return nil, &usageError{fmt.Sprintf("-redis: %v", err)}
		}
		r.opt = opt
		r.desc = redactURL(spec)
	default:
		r.opt = asynq.RedisClientOpt{Addr: spec}
		r.desc = spec
	}
	c, ok := r.opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		r.close()
		return nil, fmt.Errorf("-redis: unsupported connection option %T", r.opt)
	}
	r.client = c
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		r.close()
		return nil, fmt.Errorf("redis %s: %w", r.desc, err)
	}
	r.version = "miniredis"
	if r.mini == nil {
		if info, err := c.Info(ctx, "server").Result(); err == nil {
			r.version = "redis " + infoField(info, "redis_version")
		}
	}
	return r, nil
}

func (r *redisTarget) close() {
	if r.client != nil {
		r.client.Close()
	}
	if r.mini != nil {
		r.mini.Close()
	}
}

// usedMemory is INFO memory's used_memory; ok is false where INFO memory
// is not supported (miniredis).
func (r *redisTarget) usedMemory(ctx context.Context) (int64, bool) {
	if r.mini != nil {
		return 0, false
	}
	info, err := r.client.Info(ctx, "memory").Result()
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(infoField(info, "used_memory"), 10, 64)
	return n, err == nil
}

// queueMemory sums MEMORY USAGE over the keys of an asynq queue: what the
// queue itself holds, whatever else the shared Redis is doing.
func (r *redisTarget) queueMemory(ctx context.Context, queue string) (bytes int64, keys int, err error) {
	iter := r.client.Scan(ctx, 0, "asynq:{"+queue+"}:*", 1000).Iterator()
	for iter.Next(ctx) {
		n, err := r.client.MemoryUsage(ctx, iter.Val()).Result()
		if err != nil {
			return 0, 0, err
		}
		bytes += n
		keys++
	}
	return bytes, keys, iter.Err()
}

// deleteQueue removes an asynq queue and its tasks, and then the keys
// asynq keeps for it beyond those (its processed and failed counters), so
// that runs leave nothing behind in a shared Redis. The queue's name is
// random and unique to this run.
func (r *redisTarget) deleteQueue(queue string) {
	in := asynq.NewInspector(r.opt)
	_ = in.DeleteQueue(queue, true)
	in.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := r.client.Scan(ctx, 0, "asynq:{"+queue+"}:*", 1000).Iterator()
	for iter.Next(ctx) {
		_ = r.client.Del(ctx, iter.Val()).Err()
	}
}

func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// nopLogger silences an asynq server.
type nopLogger struct{}

func (nopLogger) Debug(...any) {}
func (nopLogger) Info(...any)  {}
func (nopLogger) Warn(...any)  {}
func (nopLogger) Error(...any) {}
func (nopLogger) Fatal(...any) {}
