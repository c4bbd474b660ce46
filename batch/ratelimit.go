package batch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/chatbatch/chatbatch/internal/gcra"
)

// RateLimit limits how much of the API each app (Principal.AppID) may
// use, across every process that shares the limiter (by default:
// Config.Redis). Set it as Config.RateLimit; nil, the default, is no
// limit. At least one of RequestsPerMinute and RecipientsPerMinute must
// be set.
//
// A limit of N a minute allows a burst of N at once (the Burst fields
// change it) and then one more every minute/N: a GCRA, timed by the Redis
// server's clock, so no process's clock matters. With the default burst,
// a client that never makes more than N requests in any 60 seconds is
// never refused. Over a limit the handler answers 429 RATE_LIMIT_EXCEEDED
// with Retry-After (seconds, rounded up) and stores nothing: the request
// limit is checked before anything else, the recipient limit before the
// recipients are looked up (a request refused by it frees its
// Idempotency-Key like any failed request).
//
// Responses carry X-RateLimit-Limit (the burst), X-RateLimit-Remaining
// (how many more requests could be made at once right now) and
// X-RateLimit-Reset (seconds, rounded up, until Remaining is back at
// Limit if no more requests are made) for the request limit, on every
// authenticated response, and X-RateLimit-Recipients-Limit, -Remaining and
// -Reset for the recipient limit, on POSTs that reached its check.
//
// When the limiter fails or does not answer within Timeout (Redis is
// down) requests are served without limits (fail open): the failing
// request waits Timeout at most, the limiter is then left alone for 10 ×
// Timeout (requests pass without asking it), and the failures are
// logged at error level at most once a minute.
type RateLimit struct {
	// RequestsPerMinute is how many requests an app may make a minute:
	// every request the handler authenticated (POST, GET, HEAD and
	// DELETE alike; a request without a valid key is not counted). 0: no
	// request limit.
	RequestsPerMinute int
	// RequestBurst is the most requests an app may make at once.
	// Defaults to RequestsPerMinute.
	RequestBurst int
	// RecipientsPerMinute is how many recipients (paras) an app may send
	// to a minute, counted when a POST has been decoded and validated,
	// before its recipients are looked up: a POST that fails later (an
	// unknown receiver) counts too, a dry run does not. 0: no recipient
	// limit.
	RecipientsPerMinute int
	// RecipientBurst is the most recipients an app may send to at once;
	// a POST with more paras is answered with 413 PAYLOAD_TOO_LARGE.
	// Defaults to RecipientsPerMinute.
	RecipientBurst int

	// Limiter keeps the counts. Defaults to RedisRateLimiter on a
	// go-redis client made from Config.Redis (asynq's MakeRedisClient)
	// on the first request, and closed by Service.Close.
	Limiter RateLimiter
	// KeyPrefix starts the limiter's keys: KeyPrefix + "requests:" +
	// AppID and KeyPrefix + "recipients:" + AppID. Defaults to
	// DefaultRateLimitKeyPrefix ("chatbatch:ratelimit:").
	KeyPrefix string
	// Timeout bounds each call of the limiter; past it the request is
	// served as if there were no limit, and so are the requests of the
	// next 10 × Timeout. Defaults to DefaultRateLimitTimeout (100 ms).
	Timeout time.Duration

	rt *rateRuntime // New's copy only
}

// The defaults of RateLimit.
const (
	DefaultRateLimitKeyPrefix = "chatbatch:ratelimit:"
	DefaultRateLimitTimeout   = 100 * time.Millisecond
)

// Rate is one limit as a RateLimiter applies it.
type Rate struct {
	// PerMinute is the sustained rate: one unit comes back every
	// minute/PerMinute (Interval).
	PerMinute int
	// Burst is the most units that may be taken at once, when the limit
	// is full.
	Burst int
}

// Interval is how long one unit takes to come back: a minute divided by
// PerMinute.
func (r Rate) Interval() time.Duration { return time.Minute / time.Duration(max(r.PerMinute, 1)) }

// RateDecision is a RateLimiter's answer.
type RateDecision struct {
	// Allowed reports whether the units were taken.
	Allowed bool
	// Remaining is how many units could be taken at once right after the
	// call (0 to Burst).
	Remaining int
	// RetryAfter, when not Allowed, is how long until the units asked
	// for could be taken.
	RetryAfter time.Duration
	// ResetAfter is how long until the limit is back to its full Burst
	// if nothing more is taken.
	ResetAfter time.Duration
}

// RateLimiter keeps the counts of Config.RateLimit.
//
// Allow takes n units (1 to rate.Burst) of the limit named key, if they
// are available, and reports what is left; when they are not, it takes
// nothing. key is unique per app and limit (RateLimit.KeyPrefix +
// "requests:" or "recipients:" + AppID), and rate is the same for a key
// on every call unless the host changes its configuration. Allow must be
// safe for concurrent use, and must decide atomically: two calls that
// race may not both take the last units. To limit apps across processes,
// every process must share the state (RedisRateLimiter does, through
// Redis). Its context carries RateLimit.Timeout, but the handler waits
// no longer than that even if Allow ignores it. An error means the
// limiter could not decide: the request is served, and the error logged.
type RateLimiter interface {
	Allow(ctx context.Context, key string, rate Rate, n int) (RateDecision, error)
}

// RedisRateLimiter is the RateLimiter that RateLimit uses by default, on
// a client the host owns: a GCRA in a Lua script on rdb, timed by the
// Redis server's clock, one key per app and limit (expiring when the
// limit is full again). Every process using the same Redis and KeyPrefix
// shares the limits.
func RedisRateLimiter(rdb redis.UniversalClient) RateLimiter { return redisRateLimiter{rdb} }

type redisRateLimiter struct{ rdb redis.UniversalClient }

func (l redisRateLimiter) Allow(ctx context.Context, key string, rate Rate, n int) (RateDecision, error) {
	res, err := gcra.Take(ctx, l.rdb, key, rate.Interval(), rate.Burst, n)
	if err != nil {
		return RateDecision{}, fmt.Errorf("batch: rate limit on Redis: %w", err)
	}
	return RateDecision{Allowed: res.Allowed, Remaining: res.Remaining, RetryAfter: res.RetryAfter, ResetAfter: res.ResetAfter}, nil
}

// rateLimitLogInterval is the least time between two records of the
// limiter failing (and between two of it answering again).
const rateLimitLogInterval = time.Minute

// rateLimitPause is how many Timeouts the limiter is left alone after it
// failed: while it is down, one request in that time waits for it.
const rateLimitPause = 10

// rateRuntime is the state of a Service's rate limits: the limiter (the
// default one made on first use) and the throttle of failure logs.
type rateRuntime struct {
	limiter atomic.Pointer[RateLimiter]
	failing atomic.Bool
	pause   atomic.Int64 // until when (Unix ns) the limiter is not asked, after a failure

	mu         sync.Mutex
	client     io.Closer // the default limiter's go-redis client
	closed     bool
	lastError  time.Time // last error record
	lastBack   time.Time // last "answers again" record
	suppressed int       // failures not logged since the last record
}

// withDefaults returns a copy of rl with the defaults filled in and its
// runtime state; nil for nil.
func (rl *RateLimit) withDefaults() *RateLimit {
	if rl == nil {
		return nil
	}
	c := *rl
	c.RequestBurst = orDefault(c.RequestBurst, c.RequestsPerMinute)
	c.RecipientBurst = orDefault(c.RecipientBurst, c.RecipientsPerMinute)
	c.KeyPrefix = orDefault(c.KeyPrefix, DefaultRateLimitKeyPrefix)
	c.Timeout = orDefault(c.Timeout, DefaultRateLimitTimeout)
	c.rt = &rateRuntime{}
	if c.Limiter != nil {
		c.rt.limiter.Store(&c.Limiter)
	}
	return &c
}

// checkNotNegative refuses negative numbers in rl (nil is fine).
func (rl *RateLimit) checkNotNegative() []error {
	if rl == nil {
		return nil
	}
	var errs []error
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"RequestsPerMinute", int64(rl.RequestsPerMinute)}, {"RequestBurst", int64(rl.RequestBurst)},
		{"RecipientsPerMinute", int64(rl.RecipientsPerMinute)}, {"RecipientBurst", int64(rl.RecipientBurst)},
		{"Timeout", int64(rl.Timeout)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("batch: Config.RateLimit.%s is negative; leave it zero for the default", f.name))
		}
	}
	return errs
}

// validate checks rl after withDefaults (nil is fine).
func (rl *RateLimit) validate(redisOpt asynq.RedisConnOpt) []error {
	if rl == nil {
		return nil
	}
	var errs []error
	if rl.RequestsPerMinute == 0 && rl.RecipientsPerMinute == 0 {
		errs = append(errs, errors.New("batch: Config.RateLimit sets no limit; set RequestsPerMinute or RecipientsPerMinute, or leave RateLimit nil"))
	}
	if rl.RequestBurst > 0 && rl.RequestsPerMinute == 0 {
		errs = append(errs, errors.New("batch: Config.RateLimit.RequestBurst is set without RequestsPerMinute"))
	}
	if rl.RecipientBurst > 0 && rl.RecipientsPerMinute == 0 {
		errs = append(errs, errors.New("batch: Config.RateLimit.RecipientBurst is set without RecipientsPerMinute"))
	}
	if rl.Limiter == nil && redisOpt == nil {
		errs = append(errs, errors.New("batch: Config.RateLimit needs Config.Redis or RateLimit.Limiter"))
	}
	return errs
}

// close closes the default limiter's client, if it was made.
func (rl *RateLimit) close() error {
	if rl == nil {
		return nil
	}
	rt := rl.rt
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.closed = true
	if rt.client == nil {
		return nil
	}
	err := rt.client.Close()
	rt.client = nil
	return err
}

// get returns the limiter, making the default one on first use.
func (rt *rateRuntime) get(redisOpt asynq.RedisConnOpt) (RateLimiter, error) {
	if l := rt.limiter.Load(); l != nil {
		return *l, nil
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if l := rt.limiter.Load(); l != nil {
		return *l, nil
	}
	if rt.closed {
		return nil, errors.New("batch: the Service is closed")
	}
	c := redisOpt.MakeRedisClient()
	rdb, ok := c.(redis.UniversalClient)
	if !ok {
		if cl, ok := c.(io.Closer); ok {
			_ = cl.Close()
		}
		return nil, fmt.Errorf("batch: Config.Redis (%T) makes no go-redis client for the rate limiter; set RateLimit.Limiter", redisOpt)
	}
	var l RateLimiter = RedisRateLimiter(rdb)
	rt.client = rdb
	rt.limiter.Store(&l)
	return l, nil
}

// limitRequest counts an authenticated request against its app's
// RequestsPerMinute and sets the X-RateLimit-* headers. Over the limit it
// answers 429 and returns false.
func (s *Service) limitRequest(w http.ResponseWriter, r *http.Request, p Principal) bool {
	rl := s.cfg.RateLimit
	if rl == nil || rl.RequestsPerMinute == 0 {
		return true
	}
	rate := Rate{PerMinute: rl.RequestsPerMinute, Burst: rl.RequestBurst}
	d, ok := s.takeRate(r.Context(), "requests", p.AppID, rate, 1)
	if !ok {
		return true
	}
	setRateHeaders(w.Header(), "X-RateLimit-", rate, d)
	if d.Allowed {
		return true
	}
	ra := max(1, ceilSeconds(d.RetryAfter))
	aerr := newError(http.StatusTooManyRequests, CodeRateLimitExceeded,
		"this app is over its limit of %d requests a minute; retry after %d s", rl.RequestsPerMinute, ra)
	aerr.retryAfter = ra
	writeError(w, aerr)
	return false
}

// limitRecipients counts the n recipients of a POST against its app's
// RecipientsPerMinute and sets the X-RateLimit-Recipients-* headers; over
// the limit it returns 429 (413 for more than the burst).
func (s *Service) limitRecipients(ctx context.Context, w http.ResponseWriter, p Principal, n int) *apiError {
	rl := s.cfg.RateLimit
	if rl == nil || rl.RecipientsPerMinute == 0 || n == 0 {
		return nil
	}
	rate := Rate{PerMinute: rl.RecipientsPerMinute, Burst: rl.RecipientBurst}
	if n > rate.Burst {
		return newError(http.StatusRequestEntityTooLarge, CodePayloadTooLarge,
			"%d recipients exceed the %d this app may send to at once (its rate limit); split the request", n, rate.Burst).
			with(Detail{Field: "paras", Value: strconv.Itoa(n), Reason: "more recipients than the app's rate limit allows at once"})
	}
	d, ok := s.takeRate(ctx, "recipients", p.AppID, rate, n)
	if !ok {
		return nil
	}
	setRateHeaders(w.Header(), "X-RateLimit-Recipients-", rate, d)
	if d.Allowed {
		return nil
	}
	ra := max(1, ceilSeconds(d.RetryAfter))
	aerr := newError(http.StatusTooManyRequests, CodeRateLimitExceeded,
		"%d recipients would put this app over its limit of %d recipients a minute (%d left now); retry after %d s",
		n, rl.RecipientsPerMinute, d.Remaining, ra).
		with(Detail{Field: "paras", Value: strconv.Itoa(n), Reason: "over the app's recipients rate limit"})
	aerr.retryAfter = ra
	return aerr
}

// takeRate asks the limiter for n units of the app's limit of kind,
// waiting at most RateLimit.Timeout. ok is false when the limiter could
// not decide: the request goes on unlimited.
func (s *Service) takeRate(ctx context.Context, kind, app string, rate Rate, n int) (d RateDecision, ok bool) {
	rl := s.cfg.RateLimit
	if time.Now().UnixNano() < rl.rt.pause.Load() {
		return RateDecision{}, false
	}
	l, err := rl.rt.get(s.cfg.Redis)
	if err == nil {
		d, err = allowWithin(ctx, l, rl.Timeout, rl.KeyPrefix+kind+":"+app, rate, n)
	}
	if err != nil {
		if ctx.Err() == nil { // not the request ending
			rl.rt.pause.Store(time.Now().Add(rateLimitPause * rl.Timeout).UnixNano())
			rl.rt.failed(ctx, s.log, err, rl.Timeout)
		}
		return RateDecision{}, false
	}
	rl.rt.answered(ctx, s.log)
	d.Remaining = min(max(d.Remaining, 0), rate.Burst)
	d.RetryAfter, d.ResetAfter = max(d.RetryAfter, 0), max(d.ResetAfter, 0)
	return d, true
}

// allowWithin calls l.Allow and waits for it at most timeout, even if it
// ignores its context (go-redis does unless ContextTimeoutEnabled): a
// hung Redis delays a request by timeout at most.
func allowWithin(ctx context.Context, l RateLimiter, timeout time.Duration, key string, rate Rate, n int) (RateDecision, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type answer struct {
		d   RateDecision
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		d, err := l.Allow(ctx, key, rate, n)
		ch <- answer{d, err}
	}()
	select {
	case a := <-ch:
		return a.d, a.err
	case <-ctx.Done():
		return RateDecision{}, fmt.Errorf("batch: the rate limiter did not answer within RateLimit.Timeout: %w", ctx.Err())
	}
}

// failed logs a failure of the limiter: at error level at most once per
// rateLimitLogInterval, with the number of failures not logged since.
func (rt *rateRuntime) failed(ctx context.Context, log *slog.Logger, err error, timeout time.Duration) {
	rt.failing.Store(true)
	now := time.Now()
	rt.mu.Lock()
	if !rt.lastError.IsZero() && now.Sub(rt.lastError) < rateLimitLogInterval {
		rt.suppressed++
		rt.mu.Unlock()
		return
	}
	n := rt.suppressed
	rt.lastError, rt.suppressed = now, 0
	rt.mu.Unlock()
	log.ErrorContext(ctx, "batch: the rate limiter failed; serving requests without rate limits until it answers",
		"err", err, "timeout", timeout, "failures_not_logged", n)
}

// answered notes a decision of the limiter: the first after failures is
// logged (at most once per rateLimitLogInterval).
func (rt *rateRuntime) answered(ctx context.Context, log *slog.Logger) {
	if !rt.failing.Load() || !rt.failing.CompareAndSwap(true, false) {
		return
	}
	now := time.Now()
	rt.mu.Lock()
	if !rt.lastBack.IsZero() && now.Sub(rt.lastBack) < rateLimitLogInterval {
		rt.mu.Unlock()
		return
	}
	n := rt.suppressed
	rt.lastBack, rt.suppressed = now, 0
	rt.mu.Unlock()
	log.InfoContext(ctx, "batch: the rate limiter answers again; rate limits are enforced", "failures_not_logged", n)
}

// setRateHeaders sets prefix+Limit (the burst), Remaining and Reset
// (whole seconds, rounded up, until the limit is full again).
func setRateHeaders(h http.Header, prefix string, rate Rate, d RateDecision) {
	h.Set(prefix+"Limit", strconv.Itoa(rate.Burst))
	h.Set(prefix+"Remaining", strconv.Itoa(d.Remaining))
	h.Set(prefix+"Reset", strconv.Itoa(ceilSeconds(d.ResetAfter)))
}

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}
