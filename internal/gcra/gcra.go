// Package gcra is the generic cell rate algorithm on Redis, timed by the
// Redis server's clock, so that every process sharing a key shares one
// limit however their clocks differ. adapters/ratelimit (Redis) and
// batch (Config.RateLimit) use it.
//
// A limit is burst units at once, refilled at one unit every interval.
// One key holds the limit's theoretical arrival time (TAT, in
// microseconds of the server's clock): the time at which the limit would
// be back to its full burst. Taking n units moves it n intervals later;
// they may be taken while it stays within burst intervals of now.
//
// Its tests live in internal/integration (gcra_test.go): they run the
// script on miniredis, and batch imports this package, so a test here
// would put miniredis in the go.sum of every program that embeds batch.
package gcra

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Result is the outcome of Take.
type Result struct {
	// Allowed reports whether the n units were taken. When not, nothing
	// changed.
	Allowed bool
	// Remaining is how many units could be taken at once right after the
	// call (0 to burst).
	Remaining int
	// RetryAfter, when not allowed, is how long until n units can be
	// taken (unless others take them first). 0 when allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the limit is back to its full burst if
	// nothing more is taken (0 for a limit no one used lately).
	ResetAfter time.Duration
}

// script takes n units at the server's time if the TAT allows and
// returns {1, 0, reset, remaining}; otherwise it changes nothing and
// returns {0, retry, reset, remaining}, all durations in microseconds.
// KEYS[1]: the TAT (µs). ARGV: interval (µs), burst, n. The key expires
// when the limit is full again (plus a second).
var script = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local capacity = burst * interval
local new_tat = tat + n * interval
local allow_at = new_tat - capacity
if allow_at > now then
  return {0, allow_at - now, tat - now, math.floor((capacity - (tat - now)) / interval)}
end
if n > 0 then
  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
return {1, 0, new_tat - now, math.floor((capacity - (new_tat - now)) / interval)}
`)

// Take takes n units (0 only asks) of the limit at key on rdb: burst
// units at once, one more every interval (at least a microsecond). n
// larger than burst is never allowed.
func Take(ctx context.Context, rdb redis.Scripter, key string, interval time.Duration, burst, n int) (Result, error) {
	if burst < 1 || n < 0 {
		return Result{}, errors.New("gcra: burst must be positive and n not negative")
	}
	us := max(1, interval.Microseconds())
	v, err := script.Run(ctx, rdb, []string{key}, us, burst, n).Int64Slice()
	if err != nil {
		return Result{}, err
	}
	if len(v) != 4 {
		return Result{}, errors.New("gcra: unexpected reply of the script")
	}
	return Result{
		Allowed:    v[0] == 1,
		RetryAfter: time.Duration(v[1]) * time.Microsecond,
		ResetAfter: time.Duration(v[2]) * time.Microsecond,
		Remaining:  int(min(max(v[3], 0), int64(burst))),
	}, nil
}
