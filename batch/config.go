package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

// Config configures a Service. Pass it to New; the zero value of every
// optional field selects its default (the Default… constants). Negative
// numbers are refused by New.
type Config struct {
	// Store supplies Directory, Messages and Batches for any of those three
	// fields that is nil. Either Store or all three are required.
	Store store.Store
	// Directory looks up the host's users and rooms. Defaults to Store.
	Directory store.Directory
	// Messages stores the produced messages. Defaults to Store.
	Messages store.Messages
	// Batches keeps batch bookkeeping. Defaults to Store.
	Batches store.Batches

	// Deliverer hands stored messages to the host's real-time fan-out.
	// Required; use delivery.Discard{} if clients only read the store.
	Deliverer delivery.Deliverer
	// Pusher sends push notifications for requests with "push": true.
	// Defaults to none: push requests are accepted and no push is sent.
	Pusher delivery.Pusher
	// Authenticator maps the IM-API-KEY header (or IMKit's deprecated
	// API_KEY) to a Principal. Required unless AuthenticateRequest is set.
	Authenticator Authenticator
	// AuthenticateRequest, when set, authenticates each request first by
	// the host's own means (a session cookie, a JWT, mTLS; or a principal
	// the host's middleware put in the context: PrincipalFromRequest). It
	// returns the principal; an error wrapping ErrNoCredentials to fall
	// back to the IM-API-KEY header (401 without an Authenticator); one
	// wrapping ErrUnauthenticated for credentials it refuses (401); any
	// other error when it cannot tell (503). It runs within StoreTimeout.
	AuthenticateRequest func(r *http.Request) (Principal, error)

	// Redis is the Redis that the asynq queue lives in. Required unless
	// Enqueuer is set and Run is never called.
	Redis asynq.RedisConnOpt
	// Enqueuer puts chunk tasks on the queue. Defaults to an asynq.Client
	// on Redis, created by New and closed by Close.
	Enqueuer Enqueuer
	// Queue is the asynq queue the chunk tasks go to. Defaults to DefaultQueue ("chatbatch").
	Queue string
	// Concurrency is how many chunks Run processes at once. Defaults to
	// DefaultConcurrency (10).
	Concurrency int
	// TaskCheckInterval is how long Run's idle asynq server waits before
	// it looks for new tasks again once the queue is empty (asynq sleeps
	// between half and one and a half times it). It bounds how soon a
	// batch accepted while the workers are idle starts: asynq's own
	// default of 1 s halves the rate of a single 10,000-recipient batch.
	// An idle server polls Redis about 1/TaskCheckInterval times a
	// second. ServerConfig.TaskCheckInterval, when set, wins. Defaults
	// to DefaultTaskCheckInterval (50 ms).
	TaskCheckInterval time.Duration
	// ServerConfig tunes the asynq server that Run starts. Its Queues and
	// Logger are always set by Run, and Concurrency and TaskCheckInterval
	// are when the fields above are set; RetryDelayFunc defaults to
	// RetryDelay (which honours a Retry-After). Defaults to asynq's
	// defaults otherwise.
	ServerConfig asynq.Config
	// MaxRetry is how often a failing chunk is retried before its
	// remaining recipients are recorded as failed: the attempt that finds
	// asynq's retries used up, or the chunk started more than MaxRetry
	// times in all (the store counts), records them. Defaults to
	// DefaultMaxRetry (10: with RetryDelay's quick first retries and
	// asynq's exponential backoff after them, about four hours); NoRetry
	// asks for none. A failure to record anything (the store
	// itself is down) is retried until the store answers: then the chunk
	// ends within one attempt. asynq keeps the retry count of the process
	// that enqueues a chunk with its task, and the worker's own bounds the
	// attempts the store counts, so the smaller of the two wins: give the
	// API and the worker processes the same value.
	MaxRetry int

	// ChunkSize is the number of recipients per chunk (one queue task).
	// Defaults to DefaultChunkSize (500), or MaxRecipients if that is
	// smaller.
	ChunkSize int
	// MaxRecipients is the largest number of paras one request may carry;
	// more is answered with 413 PAYLOAD_TOO_LARGE. Defaults to
	// DefaultMaxRecipients (10,000).
	MaxRecipients int
	// MaxBodyBytes is the largest request body accepted; more is answered
	// with 413 PAYLOAD_TOO_LARGE. Defaults to DefaultMaxBodyBytes (8 MiB).
	MaxBodyBytes int64
	// MaxIDLength is the longest user or room ID accepted in a request, in
	// bytes. Defaults to DefaultMaxIDLength (255).
	MaxIDLength int

	// DefaultSender is the user the messages are sent as when a request
	// names no sender (only admin keys may name one). Defaults to
	// DefaultSender ("system").
	DefaultSender string
	// ExtraFields allow-lists top-level request fields, beyond the
	// documented ones, that are copied verbatim (as raw JSON) into every
	// message's Fields. Other unknown fields are answered with 400.
	// Defaults to none.
	ExtraFields []string
	// StrictVariables makes a template variable with no value for some
	// recipient an error (400 MISSING_VARIABLE) instead of leaving it as
	// written. Defaults to false.
	StrictVariables bool

	// IdempotencyTTL is how long an Idempotency-Key is remembered: a
	// request repeated with the same key within it gets the first
	// response. Defaults to DefaultIdempotencyTTL (24 hours).
	IdempotencyTTL time.Duration

	// Retention is how long a finished batch's bookkeeping — its row, its
	// chunks with their recipients and outcomes — is kept after it
	// finished (and its end was reported). Then Sweep deletes it, a few at
	// a time, and its status, list entry and recipients answer 404
	// BATCH_NOT_FOUND. The messages it sent are the host's and are never
	// deleted. It must be at least IdempotencyTTL, so that a replayed key
	// never names a batch that is gone. Defaults to DefaultRetention (30
	// days); KeepForever keeps everything.
	Retention time.Duration

	// MaxScheduleAhead is how far in the future sendAt may be; later is
	// answered with 400. A throttled batch (ratePerMinute) must also
	// finish within it. Defaults to DefaultMaxScheduleAhead (30 days).
	MaxScheduleAhead time.Duration

	// DefaultRatePerMinute paces every batch whose request sets no
	// ratePerMinute: no more recipients are sent a minute. Defaults to 0:
	// batches without ratePerMinute go as fast as the workers do.
	DefaultRatePerMinute int
	// MaxRatePerMinute, when positive, is the fastest pace a batch may
	// ask for (more is 400) and the pace of batches that ask for none
	// (when DefaultRatePerMinute is 0). Defaults to 0: no maximum.
	MaxRatePerMinute int

	// OnBatchDone, when set, is called when a batch reaches a final state
	// (completed, completed_with_errors, canceled), by the process whose
	// chunk completion or cancel made it final. It runs on the worker's
	// (or the cancel request's) goroutine: keep it short, or hand off.
	// The call is made at least once: the process claims it in the store
	// first (Batches.ClaimDoneNotifications), and if it dies before
	// recording the call as made, a Sweep makes it (Config.Lease after
	// the batch finished). It is made exactly once unless a process dies
	// between the call and the record. Defaults to none.
	OnBatchDone func(ctx context.Context, s BatchSummary)

	// BasePath is the path the handler is mounted at; the handler serves
	// BasePath itself and BasePath/{batchID}. A request path that does not
	// start with BasePath is taken as already relative to it (as under
	// http.StripPrefix). Defaults to DefaultBasePath
	// ("/messages/batch").
	BasePath string

	// Lease is how long the store takes a chunk's worker for alive
	// without hearing from it: a worker renews the lease of the chunk it
	// processes every Lease/3, and a Sweep hands the chunk to the queue
	// again once it ran out (the worker died). A due chunk not started
	// within Lease/2 gets its task checked by a Sweep (an enqueue that
	// failed after the batch was stored, a flushed Redis, a worker that
	// died between taking the task and starting the chunk). With
	// SweepInterval it bounds recovery: a chunk resumes within about
	// Lease + SweepInterval of its worker dying or its task being lost,
	// once a worker runs. Keep it above 2 × StoreTimeout, or a chunk
	// whose start waits on a slow store may be run a second time (which
	// is safe, only wasteful). Defaults to DefaultLease (10 seconds).
	Lease time.Duration
	// SweepInterval is how often Run sweeps (see Sweep). A sweep is a few
	// queries of the store and, for every overdue chunk, an enqueue
	// attempt in Redis. Defaults to DefaultSweepInterval (2 seconds).
	SweepInterval time.Duration
	// StoreTimeout bounds the waits of one API request on the store (and
	// the Authenticator), counted from when its body has been read, and
	// each store call of a worker. A database that does not answer (a
	// network partition that drops packets) then gives 503 UNAVAILABLE
	// with Retry-After within it instead of a request that hangs.
	// Defaults to DefaultStoreTimeout (5 seconds).
	StoreTimeout time.Duration
	// EnqueueTimeout bounds the enqueueing of a batch's tasks while the
	// client waits; what is not enqueued by then is left to the sweeper.
	// Defaults to DefaultEnqueueTimeout (5 seconds).
	EnqueueTimeout time.Duration

	// CrossOriginProtection guards the state-changing endpoints (POST,
	// DELETE, recall) against cross-site request forgery: a browser
	// request from another origin — which carries the host's session
	// cookie when AuthenticateRequest reads one — is refused with 403
	// CROSS_ORIGIN_REQUEST before anything else happens. It judges by
	// the Sec-Fetch-Site header, or the Origin header against Host;
	// requests with neither (servers, curl, the host's backend) pass, and
	// GET, HEAD and OPTIONS always do. A host whose own web app calls the
	// API from another origin adds that origin with AddTrustedOrigin.
	// Defaults to http.NewCrossOriginProtection(): no trusted origin.
	CrossOriginProtection *http.CrossOriginProtection

	// Admission bounds the backlog of recipients due and not yet
	// processed, in all and per app: a POST past a bound is refused with
	// 429 BACKLOG_FULL or 503 OVERLOADED and a Retry-After from the
	// measured drain rate, storing nothing (see Admission). Defaults to
	// nil: no bound.
	Admission *Admission

	// RateLimit limits each app's requests and recipients a minute,
	// across every process on the same Redis (see RateLimit). Defaults
	// to nil: no limits.
	RateLimit *RateLimit

	// Logger receives the Service's logs. It never receives API keys or
	// message bodies. Records logged within a traced operation carry its
	// trace_id and span_id. Defaults to slog.Default().
	Logger *slog.Logger

	// MeterProvider, TracerProvider and Propagator are where the Service
	// sends its OpenTelemetry metrics and spans (see ScopeName and the
	// package documentation for what it records) and how it carries trace
	// context through a chunk's task. They default to the global ones
	// (otel.GetMeterProvider and so on), which record nothing until the
	// host installs an SDK.
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator

	// Now returns the current time. Defaults to time.Now; tests set it.
	Now func() time.Time
}

// Enqueuer puts tasks on the asynq queue. *asynq.Client implements it.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

func (c *Config) withDefaults() {
	if c.Directory == nil && c.Store != nil {
		c.Directory = c.Store
	}
	if c.Messages == nil && c.Store != nil {
		c.Messages = c.Store
	}
	if c.Batches == nil && c.Store != nil {
		c.Batches = c.Store
	}
	c.Queue = orDefault(c.Queue, DefaultQueue)
	c.Concurrency = orDefault(c.Concurrency, DefaultConcurrency)
	c.TaskCheckInterval = orDefault(c.TaskCheckInterval, DefaultTaskCheckInterval)
	switch c.MaxRetry {
	case 0:
		c.MaxRetry = DefaultMaxRetry
	case NoRetry:
		c.MaxRetry = 0
	}
	c.MaxRecipients = orDefault(c.MaxRecipients, DefaultMaxRecipients)
	if c.ChunkSize == 0 {
		// A request of MaxRecipients fits one chunk when MaxRecipients is
		// below the default chunk: no need to set both.
		c.ChunkSize = DefaultChunkSize
		if c.MaxRecipients > 0 {
			c.ChunkSize = min(c.ChunkSize, c.MaxRecipients)
		}
	}
	c.MaxBodyBytes = orDefault(c.MaxBodyBytes, DefaultMaxBodyBytes)
	c.MaxIDLength = orDefault(c.MaxIDLength, DefaultMaxIDLength)
	c.DefaultSender = orDefault(c.DefaultSender, DefaultSender)
	c.BasePath = orDefault(c.BasePath, DefaultBasePath)
	c.Lease = orDefault(c.Lease, DefaultLease)
	c.SweepInterval = orDefault(c.SweepInterval, DefaultSweepInterval)
	c.EnqueueTimeout = orDefault(c.EnqueueTimeout, DefaultEnqueueTimeout)
	c.StoreTimeout = orDefault(c.StoreTimeout, DefaultStoreTimeout)
	c.MaxScheduleAhead = orDefault(c.MaxScheduleAhead, DefaultMaxScheduleAhead)
	c.IdempotencyTTL = orDefault(c.IdempotencyTTL, DefaultIdempotencyTTL)
	c.Retention = orDefault(c.Retention, DefaultRetention)
	c.RateLimit = c.RateLimit.withDefaults()
	if c.CrossOriginProtection == nil {
		c.CrossOriginProtection = http.NewCrossOriginProtection()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.ExtraFields = slices.Clone(c.ExtraFields)
}

// orDefault returns def when v is zero (negative values are refused by
// validate before this runs).
func orDefault[T int | int64 | time.Duration | string](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// The defaults of Config, used for fields left zero.
const (
	DefaultQueue             = "chatbatch"
	DefaultConcurrency       = 10
	DefaultTaskCheckInterval = 50 * time.Millisecond
	DefaultMaxRetry          = 10
	DefaultChunkSize         = 500
	DefaultMaxRecipients     = 10_000
	DefaultMaxBodyBytes      = 8 << 20
	DefaultMaxIDLength       = 255
	DefaultSender            = "system"
	DefaultBasePath          = "/messages/batch"
	DefaultLease             = 10 * time.Second
	DefaultSweepInterval     = 2 * time.Second
	DefaultEnqueueTimeout    = 5 * time.Second
	DefaultStoreTimeout      = 5 * time.Second
	DefaultMaxScheduleAhead  = 30 * 24 * time.Hour
	DefaultIdempotencyTTL    = 24 * time.Hour
	DefaultRetention         = 30 * 24 * time.Hour
)

// KeepForever, as Config.Retention, keeps every batch's bookkeeping: the
// sweep deletes none. (Retention 0 means the default.)
const KeepForever time.Duration = -1

// NoRetry, as Config.MaxRetry, means a failing chunk is not retried: its
// first failure records its open recipients as failed. (MaxRetry 0 means
// the default.)
const NoRetry = -1

// checkNotNegative refuses negative numbers, which would otherwise be
// taken for the default or do harm.
func (c *Config) checkNotNegative() []error {
	var errs []error
	for _, f := range []struct {
		name     string
		negative bool
		v        any
	}{
		{"Concurrency", c.Concurrency < 0, c.Concurrency}, {"TaskCheckInterval", c.TaskCheckInterval < 0, c.TaskCheckInterval},
		{"ChunkSize", c.ChunkSize < 0, c.ChunkSize}, {"MaxRecipients", c.MaxRecipients < 0, c.MaxRecipients},
		{"MaxBodyBytes", c.MaxBodyBytes < 0, c.MaxBodyBytes}, {"MaxIDLength", c.MaxIDLength < 0, c.MaxIDLength},
		{"Lease", c.Lease < 0, c.Lease}, {"SweepInterval", c.SweepInterval < 0, c.SweepInterval},
		{"EnqueueTimeout", c.EnqueueTimeout < 0, c.EnqueueTimeout}, {"StoreTimeout", c.StoreTimeout < 0, c.StoreTimeout},
		{"MaxScheduleAhead", c.MaxScheduleAhead < 0, c.MaxScheduleAhead}, {"IdempotencyTTL", c.IdempotencyTTL < 0, c.IdempotencyTTL},
		{"DefaultRatePerMinute", c.DefaultRatePerMinute < 0, c.DefaultRatePerMinute}, {"MaxRatePerMinute", c.MaxRatePerMinute < 0, c.MaxRatePerMinute},
	} {
		if f.negative {
			errs = append(errs, fmt.Errorf("batch: Config.%s is negative (%v); leave it zero for the default", f.name, f.v))
		}
	}
	errs = append(errs, c.RateLimit.checkNotNegative()...)
	if c.Retention < 0 && c.Retention != KeepForever {
		errs = append(errs, fmt.Errorf("batch: Config.Retention is %v; use a positive duration, 0 for the default (%v) or KeepForever", c.Retention, DefaultRetention))
	}
	if c.MaxRetry < 0 && c.MaxRetry != NoRetry {
		errs = append(errs, fmt.Errorf("batch: Config.MaxRetry is %d; use a positive number, 0 for the default (%d) or NoRetry", c.MaxRetry, DefaultMaxRetry))
	}
	return errs
}

func (c *Config) validate() error {
	var errs []error
	if c.Directory == nil || c.Messages == nil || c.Batches == nil {
		errs = append(errs, errors.New("batch: Config.Store is required (or all of Directory, Messages and Batches)"))
	}
	if c.Deliverer == nil {
		errs = append(errs, errors.New("batch: Config.Deliverer is required (use delivery.Discard{} for none)"))
	}
	if c.Authenticator == nil && c.AuthenticateRequest == nil {
		errs = append(errs, errors.New("batch: Config.Authenticator (or AuthenticateRequest) is required"))
	}
	if c.Redis == nil && c.Enqueuer == nil {
		errs = append(errs, errors.New("batch: Config.Redis is required (or Config.Enqueuer)"))
	}
	if c.ChunkSize > c.MaxRecipients {
		errs = append(errs, fmt.Errorf("batch: Config.ChunkSize (%d) exceeds Config.MaxRecipients (%d)", c.ChunkSize, c.MaxRecipients))
	}
	if len(c.BasePath) < 2 || c.BasePath[0] != '/' || c.BasePath[len(c.BasePath)-1] == '/' {
		errs = append(errs, fmt.Errorf("batch: Config.BasePath %q must start with / and not end with /", c.BasePath))
	}
	for _, f := range c.ExtraFields {
		if knownFields[f] {
			errs = append(errs, fmt.Errorf("batch: Config.ExtraFields: %q is a field of the API itself", f))
		}
	}
	if c.Retention > 0 && c.Retention < c.IdempotencyTTL {
		errs = append(errs, fmt.Errorf("batch: Config.Retention (%v) is shorter than Config.IdempotencyTTL (%v): a replayed Idempotency-Key could name a batch already deleted", c.Retention, c.IdempotencyTTL))
	}
	errs = append(errs, c.RateLimit.validate(c.Redis)...)
	errs = append(errs, c.Admission.validate()...)
	return errors.Join(errs...)
}
