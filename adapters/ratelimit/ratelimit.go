// Package ratelimit limits how fast a delivery.Pusher (or Deliverer) is
// called: push providers cap notifications per second, per project or per
// app, and a burst of 10,000 recipients must not overrun them. The
// wrapper waits for its turn within the call's context instead of failing;
// when the context ends first, the notifications not yet pushed fail
// transiently (the chunk's push is retried).
//
// Two limiters: [Local] for one process (golang.org/x/time/rate) and
// [Redis], shared by every worker that uses the same Redis key (a GCRA
// in a Lua script, timed by the Redis server's clock).
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/internal/gcra"
	"github.com/chatbatch/chatbatch/store"
)

// Limiter hands out permission for n items.
type Limiter interface {
	// Wait blocks until n items (at most Burst) may pass, or ctx ends.
	Wait(ctx context.Context, n int) error
	// Burst is the most items one Wait may ask for.
	Burst() int
}

// Pusher calls its Pusher no faster than its Limiter allows, in slices of
// at most the limiter's burst.
type Pusher struct {
	next    delivery.Pusher
	limiter Limiter
}

// NewPusher limits next with l.
func NewPusher(next delivery.Pusher, l Limiter) *Pusher { return &Pusher{next: next, limiter: l} }

// Push implements delivery.Pusher.
func (p *Pusher) Push(ctx context.Context, ns []delivery.Notification) error {
	return limited(ctx, p.limiter, len(ns), func(ctx context.Context, from, to int) error { return p.next.Push(ctx, ns[from:to]) })
}

// Deliverer calls its Deliverer no faster than its Limiter allows.
type Deliverer struct {
	next    delivery.Deliverer
	limiter Limiter
}

// NewDeliverer limits next with l.
func NewDeliverer(next delivery.Deliverer, l Limiter) *Deliverer {
	return &Deliverer{next: next, limiter: l}
}

// Deliver implements delivery.Deliverer.
func (d *Deliverer) Deliver(ctx context.Context, msgs []store.Message) error {
	return limited(ctx, d.limiter, len(msgs), func(ctx context.Context, from, to int) error { return d.next.Deliver(ctx, msgs[from:to]) })
}

// limited calls send for consecutive slices of n items, each after the
// limiter's permission, and merges the outcomes into one error with the
// items' indexes of the whole call.
func limited(ctx context.Context, l Limiter, n int, send func(ctx context.Context, from, to int) error) error {
	if n == 0 {
		return ctx.Err()
	}
	step := max(1, l.Burst())
	if n <= step { // one call: its error as it is
		if err := l.Wait(ctx, n); err != nil {
			return fmt.Errorf("ratelimit: waiting for the limit: %w", err)
		}
		return send(ctx, 0, n)
	}
	failed := map[int]error{}
	for from := 0; from < n; from += step {
		to := min(from+step, n)
		if err := l.Wait(ctx, to-from); err != nil {
			err = fmt.Errorf("ratelimit: waiting for the limit: %w", err)
			for i := from; i < n; i++ {
				failed[i] = err
			}
			break
		}
		for i, e := range delivery.ItemErrors(send(ctx, from, to), to-from) {
			if e != nil {
				failed[from+i] = e
			}
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return &delivery.PartialError{Failed: failed}
}

// Local is a per-process limiter of perSecond items a second with bursts
// of burst (perSecond when burst is 0).
func Local(perSecond float64, burst int) Limiter {
	if burst <= 0 {
		burst = max(1, int(perSecond))
	}
	return localLimiter{rate.NewLimiter(rate.Limit(perSecond), burst)}
}

type localLimiter struct{ l *rate.Limiter }

func (l localLimiter) Wait(ctx context.Context, n int) error { return l.l.WaitN(ctx, n) }
func (l localLimiter) Burst() int                            { return l.l.Burst() }

// Redis is a limiter of perSecond items a second, with bursts of burst
// (perSecond/10 when burst is 0, at least 1), shared by every process
// that uses the same key on rdb (a GCRA on the Redis server's clock:
// internal/gcra).
func Redis(rdb redis.UniversalClient, key string, perSecond float64, burst int) (Limiter, error) {
	if rdb == nil || key == "" || perSecond <= 0 {
		return nil, errors.New("ratelimit: Redis needs a client, a key and a positive rate")
	}
	if burst <= 0 {
		burst = max(1, int(perSecond/10))
	}
	return &redisLimiter{rdb: rdb, key: key, interval: time.Duration(float64(time.Second) / perSecond), burst: burst}, nil
}

type redisLimiter struct {
	rdb      redis.UniversalClient
	key      string
	interval time.Duration // between two items
	burst    int
}

func (l *redisLimiter) Burst() int { return l.burst }

func (l *redisLimiter) Wait(ctx context.Context, n int) error {
	if n > l.burst {
		return fmt.Errorf("ratelimit: %d items exceed the burst of %d", n, l.burst)
	}
	for {
		res, err := gcra.Take(ctx, l.rdb, l.key, l.interval, l.burst, n)
		if err != nil {
			return fmt.Errorf("ratelimit: %w", err)
		}
		if res.Allowed {
			return nil
		}
		d := res.RetryAfter
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			return fmt.Errorf("ratelimit: the next slot is %v away, past the deadline: %w", d, context.DeadlineExceeded)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
