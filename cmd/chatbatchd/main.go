// Command chatbatchd is a small but real chat server that embeds chatbatch
// the way a host's backend would: its own users, rooms and messages in a
// SQL database (adapters/bunstore), chatbatch's POST /messages/batch on
// top, messages fanned out live to browsers over Server-Sent Events, and
// a web page to watch them arrive.
//
//	go run ./cmd/chatbatchd -demo
//
// starts it with nothing installed: SQLite in a file and an in-process
// Redis. Run chatbatchd -h for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/chatbatch/chatbatch/adapters/fcm"
	"github.com/chatbatch/chatbatch/adapters/webhook"
	"github.com/chatbatch/chatbatch/batch"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if target, ok := healthcheckArgs(os.Args[1:]); ok {
		os.Exit(healthcheck(target, os.Stderr)) // healthcheck.go
	}
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// options are the parsed flags.
// defaultMaxPending is -max-pending's default: about 20 s of work for one
// worker process on a 2-core machine (it drains ~11k recipients a second),
// so that a flood of batches is refused at the door rather than left to
// finish minutes after it stopped.
const defaultMaxPending = 200_000

type options struct {
	addr        string
	db          string
	redis       string
	api         bool
	worker      bool
	concurrency int
	pollEvery   time.Duration
	demo        bool
	push        string
	deliver     string
	webhookURL  string
	webhookKey  string
	pushRate    float64
	logFormat   string
	app         string
	queue       string
	apiKey      string

	fcmCredentials string
	fcmEndpoint    string
	fcmTokensFile  string
	fcmTokens      *deviceTokens // -fcm-tokens, read by parseFlags

	readTimeout    time.Duration
	writeTimeout   time.Duration
	idleTimeout    time.Duration
	maxHeaderBytes int
	storeTimeout   time.Duration
	retention      time.Duration
	lease          time.Duration
	sweepInterval  time.Duration
	maxRetry       int
	metrics        bool
	metricsAddr    string
	rateLimit      int
	maxPending     int
	maxPendingApp  int
	extraFields    []string // -extra-fields, split
	clientKey      string
	tokenTTL       time.Duration
	defaultSender  string
	corsOrigins    []string // -cors-origins, split and checked
}

// imkitMessageFields is -extra-fields' default: the fields of a message
// IMKit's documentation names beside message, messageType, room and extra
// (its "Sending Message Format" and Message model, imkit/api-doc), which
// IMKit's own clients read (its Vue SDK's image, video, file, sticker,
// location, template and flex messages) — the request's own fields
// (sender, push, paras, …) and IMKit's reserved ones (_id, batchID,
// reactions) excepted.
var imkitMessageFields = []string{
	"originalUrl", "thumbnailUrl", "width", "height", "duration", "images",
	"latitude", "longitude", "sticker", "mentions", "reply", "template", "contents",
}

// usageError is a bad flag or environment value: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

const usageHead = `chatbatchd: a reference chat server embedding chatbatch's Batch Send Messages API.

Usage: chatbatchd [flags]
       chatbatchd -healthcheck URL

Every flag can also be set with the environment variable in brackets; a
flag on the command line wins. The API key comes from IM_API_KEY only.
Durations are written 500ms, 30s, 2m, 720h.
`

// flagGroups order chatbatchd -h by concern; every flag is in one group
// (TestHelp checks).
var flagGroups = []struct {
	title string
	names []string
}{
	{"Server: where it listens and what it is", []string{"addr", "app", "demo", "api", "worker", "cors-origins", "healthcheck"}},
	{"Database and queue", []string{"db", "redis", "queue", "store-timeout", "retention"}},
	{"Worker", []string{"concurrency", "task-check-interval", "lease", "sweep-interval", "max-retry"}},
	{"Messages", []string{"default-sender", "extra-fields"}},
	{"IMKit's clients", []string{"client-key", "token-ttl"}},
	{"Delivery and push", []string{"deliver", "push", "push-rate", "webhook-url", "webhook-secret", "fcm-credentials", "fcm-tokens", "fcm-endpoint"}},
	{"Limits", []string{"rate-limit", "max-pending", "max-pending-per-app", "read-timeout", "write-timeout", "idle-timeout", "max-header-bytes"}},
	{"Observability", []string{"metrics", "metrics-addr", "log-format"}},
}

// secretFlags never show their value (which may come from the
// environment) in -h.
var secretFlags = map[string]bool{"webhook-secret": true}

// printUsage writes -h: the flags by group, each with its type, its
// default (unless zero or secret) and its help.
func printUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprint(w, usageHead)
	for _, g := range flagGroups {
		fmt.Fprintf(w, "\n%s:\n", g.title)
		for _, name := range g.names {
			f := fs.Lookup(name)
			if f == nil {
				continue
			}
			typ, help := flag.UnquoteUsage(f)
			line := "  -" + f.Name
			if name == "healthcheck" {
				typ = "URL"
			}
			if typ != "" {
				line += " " + typ
			}
			def := f.DefValue
			if !secretFlags[name] && def != "" && def != "false" && def != "0" && def != "0s" {
				if typ == "string" || typ == "value" {
					def = strconv.Quote(def)
				}
				help += " (default " + def + ")"
			}
			fmt.Fprintf(w, "%s\n    \t%s\n", line, strings.ReplaceAll(help, "\n", "\n    \t"))
		}
	}
}

// parseFlags reads flags and their environment variables.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("chatbatchd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	envStr := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var envErr error
	envBool := func(name string, def bool) bool {
		v := getenv(name)
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil && envErr == nil {
			envErr = usagef("%s=%q: not a boolean", name, v)
		}
		return b
	}
	envInt := func(name string, def int) int {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil && envErr == nil {
			envErr = usagef("%s=%q: not a number", name, v)
		}
		return n
	}
	envFloat := func(name string, def float64) float64 {
		v := getenv(name)
		if v == "" {
			return def
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil && envErr == nil {
			envErr = usagef("%s=%q: not a number", name, v)
		}
		return f
	}
	envDuration := func(name string, def time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil && envErr == nil {
			envErr = usagef("%s=%q: not a duration such as 50ms", name, v)
		}
		return d
	}
	fs.StringVar(&o.addr, "addr", envStr("CHATBATCHD_ADDR", "127.0.0.1:8080"), "listen address, host:port; the default answers on this machine only, 0.0.0.0:8080 on every interface [CHATBATCHD_ADDR]")
	fs.StringVar(&o.db, "db", envStr("CHATBATCHD_DB", "sqlite:chatbatch.db"), "database: sqlite:PATH, sqlite::memory:, postgres://… or mysql://… [CHATBATCHD_DB]")
	fs.StringVar(&o.redis, "redis", envStr("CHATBATCHD_REDIS", ""), "Redis for the queue: redis://host:port/db, or Redis Sentinel redis-sentinel://host:port,…/db?master=NAME; empty runs an in-process Redis, for development only [CHATBATCHD_REDIS]")
	fs.BoolVar(&o.api, "api", envBool("CHATBATCHD_API", true), "serve the HTTP API and the web page [CHATBATCHD_API]")
	fs.BoolVar(&o.worker, "worker", envBool("CHATBATCHD_WORKER", true), "run the queue worker and the sweeper [CHATBATCHD_WORKER]")
	fs.IntVar(&o.concurrency, "concurrency", envInt("CHATBATCHD_CONCURRENCY", batch.DefaultConcurrency), "chunks (of up to 500 recipients) the worker processes at once [CHATBATCHD_CONCURRENCY]")
	fs.DurationVar(&o.pollEvery, "task-check-interval", envDuration("CHATBATCHD_TASK_CHECK_INTERVAL", batch.DefaultTaskCheckInterval), "how often an idle worker looks for new chunks; shorter starts batches sooner and polls Redis more [CHATBATCHD_TASK_CHECK_INTERVAL]")
	fs.BoolVar(&o.demo, "demo", envBool("CHATBATCHD_DEMO", false), "seed demo users and rooms; API key demo-key unless IM_API_KEY is set [CHATBATCHD_DEMO]")
	fs.StringVar(&o.push, "push", envStr("CHATBATCHD_PUSH", "log"), "push notifications: log (a log line per notification), webhook (POST them to -webhook-url), fcm (Firebase Cloud Messaging, see -fcm-credentials and -fcm-tokens) or none [CHATBATCHD_PUSH]")
	fs.Float64Var(&o.pushRate, "push-rate", envFloat("CHATBATCHD_PUSH_RATE", 0), "most push notifications per second (not per minute, unlike -rate-limit), across every worker on this Redis; 0: no limit [CHATBATCHD_PUSH_RATE]")
	fs.StringVar(&o.deliver, "deliver", envStr("CHATBATCHD_DELIVER", "redis"), "where delivered messages go: redis (the live stream of this server's page), webhook (POST each chunk to -webhook-url, signed) or none [CHATBATCHD_DELIVER]")
	fs.StringVar(&o.webhookURL, "webhook-url", envStr("CHATBATCHD_WEBHOOK_URL", ""), "the host endpoint of -deliver webhook and -push webhook [CHATBATCHD_WEBHOOK_URL]")
	fs.StringVar(&o.webhookKey, "webhook-secret", getenv("CHATBATCHD_WEBHOOK_SECRET"), "the Standard Webhooks secret (whsec_<base64>) that signs -deliver/-push webhook requests; prefer the environment variable, which ps does not show [CHATBATCHD_WEBHOOK_SECRET]")
	fs.IntVar(&o.rateLimit, "rate-limit", envInt("CHATBATCHD_RATE_LIMIT", 1000), "most API requests per minute per app (IMKit's documented limit), counted on every endpoint that takes the key (the batch API, admin, rooms, users, /events) and shared by every API process on this Redis; past it 429 RATE_LIMIT_EXCEEDED; 0: no limit [CHATBATCHD_RATE_LIMIT]")
	fs.BoolVar(&o.metrics, "metrics", envBool("CHATBATCHD_METRICS", true), "serve GET /metrics (Prometheus text: chatbatch's metrics, asynq's queues, Go runtime); expose it to your scrapers only [CHATBATCHD_METRICS]")
	fs.StringVar(&o.metricsAddr, "metrics-addr", envStr("CHATBATCHD_METRICS_ADDR", ""), "serve /metrics on this address instead of -addr (for -api=false workers, or an internal-only port) [CHATBATCHD_METRICS_ADDR]")
	fs.StringVar(&o.fcmCredentials, "fcm-credentials", envStr("CHATBATCHD_FCM_CREDENTIALS", ""), "-push fcm: the Firebase service-account key, a JSON FILE (its project_id is the FCM project) [CHATBATCHD_FCM_CREDENTIALS]")
	fs.StringVar(&o.fcmEndpoint, "fcm-endpoint", envStr("CHATBATCHD_FCM_ENDPOINT", fcm.DefaultEndpoint), "-push fcm: FCM's base URL [CHATBATCHD_FCM_ENDPOINT]")
	fs.StringVar(&o.fcmTokensFile, "fcm-tokens", envStr("CHATBATCHD_FCM_TOKENS", ""), "-push fcm: the users' device tokens, a JSON FILE {\"<app>\":{\"<user>\":[\"<token>\",…]}} read at start; tokens FCM reports invalid are dropped from memory and logged (the file is not rewritten) [CHATBATCHD_FCM_TOKENS]")
	fs.StringVar(&o.logFormat, "log-format", envStr("CHATBATCHD_LOG_FORMAT", "text"), "log format: text or json [CHATBATCHD_LOG_FORMAT]")
	fs.StringVar(&o.queue, "queue", envStr("CHATBATCHD_QUEUE", batch.DefaultQueue), "asynq queue; processes that share a Redis and a database use the same one [CHATBATCHD_QUEUE]")
	fs.StringVar(&o.app, "app", envStr("CHATBATCHD_APP", "demo"), "the application ID the API key belongs to: every batch, user and room is scoped by it [CHATBATCHD_APP]")
	fs.DurationVar(&o.readTimeout, "read-timeout", envDuration("CHATBATCHD_READ_TIMEOUT", 30*time.Second), "longest time to read a request, body included [CHATBATCHD_READ_TIMEOUT]")
	fs.DurationVar(&o.writeTimeout, "write-timeout", envDuration("CHATBATCHD_WRITE_TIMEOUT", 30*time.Second), "longest time to handle a request and write its response (the live stream /events is exempt) [CHATBATCHD_WRITE_TIMEOUT]")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", envDuration("CHATBATCHD_IDLE_TIMEOUT", 2*time.Minute), "how long an idle keep-alive connection stays open [CHATBATCHD_IDLE_TIMEOUT]")
	fs.IntVar(&o.maxHeaderBytes, "max-header-bytes", envInt("CHATBATCHD_MAX_HEADER_BYTES", 64<<10), "largest request header accepted, in bytes [CHATBATCHD_MAX_HEADER_BYTES]")
	fs.DurationVar(&o.retention, "retention", envDuration("CHATBATCHD_RETENTION", batch.DefaultRetention), "how long a finished batch's bookkeeping (its row, chunks, recipients and outcomes; never the messages) is kept; then the workers' sweep deletes it and its status answers 404; at least 24h (the Idempotency-Key window); 0: keep everything [CHATBATCHD_RETENTION]")
	fs.DurationVar(&o.storeTimeout, "store-timeout", envDuration("CHATBATCHD_STORE_TIMEOUT", batch.DefaultStoreTimeout), "longest wait of a request (and of each worker call) on the database; past it a request gets 503 with Retry-After [CHATBATCHD_STORE_TIMEOUT]")
	fs.DurationVar(&o.lease, "lease", envDuration("CHATBATCHD_LEASE", batch.DefaultLease), "a worker's hold on the chunk it processes; a chunk whose worker died is taken over after it [CHATBATCHD_LEASE]")
	fs.DurationVar(&o.sweepInterval, "sweep-interval", envDuration("CHATBATCHD_SWEEP_INTERVAL", batch.DefaultSweepInterval), "how often the worker sweeps for lost, archived and abandoned chunks [CHATBATCHD_SWEEP_INTERVAL]")
	fs.IntVar(&o.maxPending, "max-pending", envInt("CHATBATCHD_MAX_PENDING", defaultMaxPending), "admission control: most recipients due and not yet sent, all apps together; a batch past it is refused with 503 OVERLOADED and a Retry-After from the measured drain rate, nothing stored (the default is about 20 s of one worker on 2 cores: scale it with your workers); 0: no bound [CHATBATCHD_MAX_PENDING]")
	fs.IntVar(&o.maxPendingApp, "max-pending-per-app", envInt("CHATBATCHD_MAX_PENDING_PER_APP", defaultMaxPending/2), "admission control: the most recipients due and not yet sent per app, refused with 429 BACKLOG_FULL; 0: no bound [CHATBATCHD_MAX_PENDING_PER_APP]")
	extra := fs.String("extra-fields", envStr("CHATBATCHD_EXTRA_FIELDS", strings.Join(imkitMessageFields, ",")), "top-level request fields, beyond the API's own, copied verbatim (as JSON) into every message of the batch — IMKit's rich messages; a comma-separated list; '' or none: refuse every unknown field with 400 [CHATBATCHD_EXTRA_FIELDS]")
	fs.StringVar(&o.clientKey, "client-key", envStr("CHATBATCHD_CLIENT_KEY", ""), "IMKit's client key (IM-CLIENT-KEY): with it, a user's token (IM-Authorization, issued by POST /admin/clients with issueAccessToken) authenticates requests as that user; it is public, like IMKit's; empty: no client tokens are taken (with -demo: demo-client-key) [CHATBATCHD_CLIENT_KEY]")
	fs.DurationVar(&o.tokenTTL, "token-ttl", envDuration("CHATBATCHD_TOKEN_TTL", 7*24*time.Hour), "how long a client token POST /admin/clients issues is valid (the default: the 7 days of IMKit's documented example) [CHATBATCHD_TOKEN_TTL]")
	fs.StringVar(&o.defaultSender, "default-sender", envStr("CHATBATCHD_DEFAULT_SENDER", batch.DefaultSender), "the user a batch the API key sends without a sender is sent as (a client token's batches are its user's); created at start when it is missing [CHATBATCHD_DEFAULT_SENDER]")
	cors := fs.String("cors-origins", envStr("CHATBATCHD_CORS_ORIGINS", ""), "web origins (scheme://host[:port], comma-separated) whose pages may call the API from the browser — an IMKit UI served from another site: CORS preflights are answered for them and their POSTs pass the cross-origin check; empty: none [CHATBATCHD_CORS_ORIGINS]")
	healthcheckURL := fs.String("healthcheck", "", "GET URL and exit 0 on a 2xx answer within 5 s, else 1; starts nothing, takes no other flag (a container health check: chatbatchd -healthcheck http://127.0.0.1:8080/readyz)")
	fs.IntVar(&o.maxRetry, "max-retry", envInt("CHATBATCHD_MAX_RETRY", batch.DefaultMaxRetry), "retries (a count) of a failing chunk before its open recipients are failed; 0: none. Give API and worker processes the same value: the enqueuing process's rides with the task (asynq), the worker's bounds the attempts the database counts, and the smaller wins [CHATBATCHD_MAX_RETRY]")
	err := fs.Parse(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, stderr)
			return nil, flag.ErrHelp
		}
		return nil, usagef("%v (run chatbatchd -h for the flags)", err)
	}
	if *healthcheckURL != "" {
		return nil, usagef("-healthcheck URL takes no other flag: chatbatchd -healthcheck http://127.0.0.1:8080/readyz")
	}
	if envErr != nil {
		return nil, envErr
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q (run chatbatchd -h for the flags)", fs.Arg(0))
	}
	switch {
	case !o.api && !o.worker:
		return nil, usagef("-api=false and -worker=false: nothing to run")
	case o.concurrency < 1:
		return nil, usagef("-concurrency: must be at least 1, not %d", o.concurrency)
	case o.pollEvery < time.Millisecond:
		return nil, usagef("-task-check-interval: must be at least 1ms, not %v", o.pollEvery)
	case o.readTimeout <= 0 || o.writeTimeout <= 0 || o.idleTimeout <= 0 || o.storeTimeout <= 0:
		return nil, usagef("-read-timeout, -write-timeout, -idle-timeout and -store-timeout must be positive")
	case o.lease < 10*time.Millisecond || o.sweepInterval < time.Millisecond:
		return nil, usagef("-lease (at least 10ms) and -sweep-interval (at least 1ms) are too short")
	case o.pushRate < 0:
		return nil, usagef("-push-rate: must not be negative, not %v", o.pushRate)
	case o.rateLimit < 0:
		return nil, usagef("-rate-limit: must not be negative, not %d", o.rateLimit)
	case o.retention < 0:
		return nil, usagef("-retention: must not be negative, not %v", o.retention)
	case o.maxPending < 0:
		return nil, usagef("-max-pending: must not be negative, not %d", o.maxPending)
	case o.maxPendingApp < 0:
		return nil, usagef("-max-pending-per-app: must not be negative, not %d", o.maxPendingApp)
	case o.tokenTTL < time.Minute:
		return nil, usagef("-token-ttl: must be at least 1m, not %v", o.tokenTTL)
	case o.maxRetry < 0:
		return nil, usagef("-max-retry: must not be negative, not %d", o.maxRetry)
	case o.maxHeaderBytes < 1024:
		return nil, usagef("-max-header-bytes: must be at least 1024, not %d", o.maxHeaderBytes)
	case o.push != "log" && o.push != "none" && o.push != "webhook" && o.push != "fcm":
		return nil, usagef("-push: %q is not log, webhook, fcm or none", o.push)
	case o.deliver != "redis" && o.deliver != "webhook" && o.deliver != "none":
		return nil, usagef("-deliver: %q is not redis, webhook or none", o.deliver)
	case o.logFormat != "text" && o.logFormat != "json":
		return nil, usagef("-log-format: %q is not text or json", o.logFormat)
	case o.app == "":
		return nil, usagef("-app: must not be empty")
	case o.queue == "":
		return nil, usagef("-queue: must not be empty")
	case checkIDValue("-default-sender", o.defaultSender) != nil:
		return nil, usagef("%v", checkIDValue("-default-sender", o.defaultSender))
	}
	if o.deliver == "webhook" || o.push == "webhook" {
		// The secret comes from the environment only (a flag would show
		// it in the process list); checked here, its value never printed.
		if _, err := webhook.NewDeliverer(&webhook.Options{URL: o.webhookURL, Secrets: []string{o.webhookKey}}); err != nil {
			return nil, usagef("-deliver/-push webhook: %v (set -webhook-url and CHATBATCHD_WEBHOOK_SECRET=whsec_…)", err)
		}
	}
	if o.push == "fcm" {
		if err := o.checkFCM(); err != nil {
			return nil, err
		}
	}
	if o.extraFields, err = splitFields(*extra); err != nil {
		return nil, err
	}
	if o.corsOrigins, err = splitOrigins(*cors); err != nil {
		return nil, err
	}
	o.apiKey = getenv("IM_API_KEY")
	if o.apiKey == "" && o.api {
		if !o.demo {
			return nil, usagef("IM_API_KEY is not set (or run with -demo to use demo-key)")
		}
		o.apiKey = "demo-key"
	}
	if o.demo && o.clientKey == "" {
		o.clientKey = "demo-client-key"
	}
	return o, nil
}

// splitFields reads -extra-fields: names separated by commas (spaces
// around them ignored), each a JSON object key of at most 64 bytes without
// control characters; "" or "none" is none. That a name is not one of the
// API's own fields is checked by batch.New.
func splitFields(v string) ([]string, error) {
	v = strings.TrimSpace(v)
	if v == "" || v == "none" {
		return nil, nil
	}
	var out []string
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
			return nil, usagef("-extra-fields %q: an empty name", v)
		case len(f) > 64 || !utf8.ValidString(f) || strings.ContainsFunc(f, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			return nil, usagef("-extra-fields: %q is not a field name (at most 64 bytes of UTF-8, no control characters)", f)
		case strings.HasPrefix(f, "$") && strings.HasSuffix(f, "$"):
			return nil, usagef("-extra-fields: %q is a template variable, which goes in each element of paras", f)
		case slices.Contains(out, f):
			return nil, usagef("-extra-fields: %q is listed twice", f)
		}
		out = append(out, f)
	}
	return out, nil
}

// splitOrigins reads -cors-origins: web origins, scheme://host[:port],
// separated by commas.
func splitOrigins(v string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(v, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, usagef("-cors-origins: %q is not a web origin such as https://chat.example.com (scheme://host[:port], no path)", o)
		}
		out = append(out, strings.ToLower(o))
	}
	return out, nil
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// run is main without os.Exit, for tests: 0 on a clean stop, 1 on a
// failure while running, 2 on bad flags or a dependency that cannot be
// reached at start.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "chatbatchd: %v\n", err)
		return 2
	}
	log := newLogger(o.logFormat, stderr)
	srv, err := start(ctx, o, log, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "chatbatchd: %v\n", err)
		var ue *usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	if err := srv.wait(ctx); err != nil {
		log.Error("chatbatchd stopped with an error", "err", err)
		return 1
	}
	return 0
}

// shutdownTimeout bounds the graceful stop of the HTTP side.
const shutdownTimeout = 15 * time.Second

// workerShutdownTimeout is how long a stopping worker waits for the chunks
// it runs (asynq's ShutdownTimeout); a chunk not done by then goes back to
// the queue. A container's grace period must outlast it
// (deploy/kubernetes, TestKubernetesManifests).
const workerShutdownTimeout = 10 * time.Second
