package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"
	"go.opentelemetry.io/otel/metric"

	"github.com/chatbatch/chatbatch"
	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/adapters/bunstore/bunopen"
	"github.com/chatbatch/chatbatch/adapters/ratelimit"
	"github.com/chatbatch/chatbatch/adapters/redispub"
	"github.com/chatbatch/chatbatch/adapters/webhook"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/dashboard"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

// server is one running chatbatchd process.
type server struct {
	o     *options
	log   *slog.Logger
	mini  *miniredis.Miniredis // nil with -redis
	rdb   redis.UniversalClient
	db    *bun.DB
	st    *bunstore.Store
	svc   *batch.Service
	auth  batch.Authenticator
	hub   *hub
	admin *admin   // IMKit's admin calls, client tokens and rooms
	met   *metrics // nil with -metrics=false

	httpSrv    *http.Server
	httpErr    chan error
	metricsSrv *http.Server // with -metrics-addr
	stopWorker context.CancelFunc
	workerDone chan error
	stopSub    context.CancelFunc
	subDone    chan struct{}
}

// demoUsers and demoRooms make the API description's examples work verbatim.
var (
	demoUsers = []string{"system", "user-a", "user-b", "user-c"}
	demoRooms = map[string][]string{
		"room-001": {"user-a", "user-b"},
		"room-002": {"user-a", "user-c"},
		"room-003": {"user-a", "user-b", "user-c"},
	}
)

// start acquires every resource in an order that writes nothing until
// the flags are known to be good: listen, reach Redis, then open the
// database. On error it releases what it took.
func start(ctx context.Context, o *options, log *slog.Logger, stdout io.Writer) (_ *server, err error) {
	s := &server{o: o, log: log}
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	var ln, metricsLn net.Listener
	if o.metrics && o.metricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", o.metricsAddr); err != nil {
			return nil, usagef("-metrics-addr: %v", err)
		}
		defer func() {
			if err != nil {
				metricsLn.Close()
			}
		}()
	}
	if o.api {
		if ln, err = net.Listen("tcp", o.addr); err != nil {
			return nil, usagef("-addr: %v", err)
		}
		defer func() {
			if err != nil {
				ln.Close()
			}
		}()
	}

	var redisOpt asynq.RedisConnOpt
	if o.redis == "" {
		s.mini = miniredis.NewMiniRedis()
		if err := s.mini.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("in-process Redis: %w", err)
		}
		log.Warn("using an in-process Redis (miniredis): this default is for development only; pass -redis redis://host:port for production")
		redisOpt = asynq.RedisClientOpt{Addr: s.mini.Addr()}
	} else if redisOpt, err = parseRedis(o.redis); err != nil {
		return nil, usagef("-redis: %v", err)
	}
	s.rdb = redisOpt.MakeRedisClient().(redis.UniversalClient)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.rdb.Ping(pctx).Err(); err != nil {
		return nil, usagef("-redis: cannot reach %s: %v", redactRedis(o.redis), err)
	}

	if s.db, err = bunopen.Open(pctx, o.db); err != nil {
		return nil, usagef("-db: %v", err)
	}
	if s.st, err = bunstore.New(s.db, nil); err != nil {
		return nil, usagef("-db: %v", err)
	}
	if err := s.st.Migrate(ctx); err != nil {
		return nil, fmt.Errorf("-db: migrate: %w", err)
	}
	if err := s.ensureDefaultSender(ctx); err != nil {
		return nil, fmt.Errorf("-db: creating the default sender %q: %w", o.defaultSender, err)
	}
	if o.demo {
		if err := s.seed(ctx); err != nil {
			return nil, fmt.Errorf("seeding demo data: %w", err)
		}
	}

	s.auth = batch.NewStaticKeys(map[string]batch.Principal{o.apiKey: {AppID: o.app, Admin: true}})
	s.admin = newAdmin(s)
	hook := &webhook.Options{URL: o.webhookURL, Secrets: []string{o.webhookKey}}
	var pusher delivery.Pusher
	switch o.push {
	case "log":
		pusher = logPusher{log}
	case "webhook":
		if pusher, err = webhook.NewPusher(hook); err != nil {
			return nil, usagef("-push webhook: %v", err)
		}
	case "fcm":
		if pusher, err = o.newFCMPusher(log); err != nil {
			return nil, usagef("-fcm-credentials: %v", err)
		}
	}
	if pusher != nil && o.pushRate > 0 {
		l, err := ratelimit.Redis(s.rdb, "chatbatchd:"+o.app+":push-rate", o.pushRate, 0)
		if err != nil {
			return nil, usagef("-push-rate: %v", err)
		}
		pusher = ratelimit.NewPusher(pusher, l)
	}
	var deliverer delivery.Deliverer = delivery.Discard{}
	switch o.deliver {
	case "redis":
		if deliverer, err = redispub.New(s.rdb, &redispub.Options{Channel: eventsPattern, Members: s.st}); err != nil {
			return nil, err
		}
	case "webhook":
		if deliverer, err = webhook.NewDeliverer(hook); err != nil {
			return nil, usagef("-deliver webhook: %v", err)
		}
	}
	var meter metric.MeterProvider // the global one (no-op) with -metrics=false
	if o.metrics {
		if s.met, err = newMetrics(redisOpt); err != nil {
			return nil, err
		}
		meter = s.met.provider
	}
	var limit *batch.RateLimit
	if o.rateLimit > 0 {
		limit = &batch.RateLimit{RequestsPerMinute: o.rateLimit, Limiter: batch.RedisRateLimiter(s.rdb), KeyPrefix: "chatbatchd:ratelimit:"}
	}
	cop := http.NewCrossOriginProtection()
	for _, origin := range o.corsOrigins {
		if err := cop.AddTrustedOrigin(origin); err != nil {
			return nil, usagef("-cors-origins: %v", err)
		}
	}
	s.svc, err = batch.New(batch.Config{
		CrossOriginProtection: cop,
		Store:                 s.st,
		Deliverer:             deliverer,
		Pusher:                pusher,
		Authenticator:         s.auth,
		// A client token's user, put in the context by clientAuth.
		AuthenticateRequest: batch.PrincipalFromRequest,
		Redis:               redisOpt,
		Queue:               o.queue,
		Concurrency:         o.concurrency,
		TaskCheckInterval:   o.pollEvery,
		ServerConfig:        asynq.Config{ShutdownTimeout: workerShutdownTimeout},
		StoreTimeout:        o.storeTimeout,
		Lease:               o.lease,
		SweepInterval:       o.sweepInterval,
		MaxRetry:            maxRetry(o.maxRetry),
		Logger:              log,
		MeterProvider:       meter,
		RateLimit:           limit,
		Admission:           &batch.Admission{MaxPending: o.maxPending, MaxPendingPerApp: o.maxPendingApp},
		Retention:           retention(o.retention),
		ExtraFields:         o.extraFields,
		DefaultSender:       o.defaultSender,
	})
	if err != nil {
		// Everything New checks comes from the flags (-extra-fields naming
		// one of the API's own fields, -retention shorter than a day, …).
		return nil, usagef("%v", err)
	}

	if o.worker {
		wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		s.stopWorker, s.workerDone = stop, make(chan error, 1)
		go func() { s.workerDone <- s.svc.Run(wctx) }()
	}
	if o.api {
		s.hub = newHub()
		sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		s.stopSub, s.subDone = stop, make(chan struct{})
		go func() {
			defer close(s.subDone)
			s.hub.subscribe(sctx, s.rdb, eventsChannel(o.app), log)
		}()
		s.httpSrv = &http.Server{
			Handler:           s.routes(),
			ReadHeaderTimeout: min(10*time.Second, o.readTimeout),
			ReadTimeout:       o.readTimeout,
			WriteTimeout:      o.writeTimeout,
			IdleTimeout:       o.idleTimeout,
			MaxHeaderBytes:    o.maxHeaderBytes,
		}
		s.httpErr = make(chan error, 1)
		go func() { s.httpErr <- s.httpSrv.Serve(ln) }()
		fmt.Fprintf(stdout, "chatbatchd listening on http://%s\n", ln.Addr())
		if o.demo {
			fmt.Fprintf(stdout, "demo API key: %s (set IM_API_KEY to choose your own)\n", o.apiKey)
		}
	}
	if metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", s.met.handler())
		// A worker-only process serves nothing else: its probes come here.
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
			writeResult(w, map[string]string{"status": "ok"})
		})
		mux.HandleFunc("GET /readyz", s.ready)
		s.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = s.metricsSrv.Serve(metricsLn) }()
		fmt.Fprintf(stdout, "chatbatchd metrics on http://%s/metrics\n", metricsLn.Addr())
	}
	log.Info("chatbatchd started", "api", o.api, "worker", o.worker, "db", dbKind(o.db), "redis", redisKind(o.redis), "app", o.app)
	return s, nil
}

// ensureDefaultSender creates the default sender (-default-sender) when
// it is missing, so that on a fresh database the first batch that names
// no sender is sent, not refused with 404 CLIENT_NOT_FOUND. It is a user
// like any other (its profile is set with POST /admin/clients).
func (s *server) ensureDefaultSender(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.o.storeTimeout)
	defer cancel()
	gone, err := s.st.MissingUsers(ctx, s.o.app, []string{s.o.defaultSender})
	if err != nil || len(gone) == 0 {
		return err
	}
	if err := s.st.AddUsers(ctx, s.o.app, s.o.defaultSender); err != nil {
		return err
	}
	s.log.Info("created the default sender: batches that name no sender are sent as this user", "user", s.o.defaultSender, "app", s.o.app)
	return nil
}

func (s *server) seed(ctx context.Context) error {
	if err := s.st.AddUsers(ctx, s.o.app, demoUsers...); err != nil {
		return err
	}
	for room, members := range demoRooms {
		if err := s.st.AddRoom(ctx, s.o.app, room, members...); err != nil {
			return err
		}
	}
	s.log.Info("demo data seeded", "users", len(demoUsers), "rooms", len(demoRooms))
	return nil
}

// wait runs until ctx is canceled or the HTTP server fails, then stops
// gracefully: no new requests, SSE streams closed, in-flight chunks
// finished or returned to the queue, pools closed.
func (s *server) wait(ctx context.Context) error {
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-s.httpErr:
	}
	s.log.Info("chatbatchd stopping")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if s.metricsSrv != nil {
		_ = s.metricsSrv.Shutdown(sctx)
	}
	if s.httpSrv != nil {
		s.hub.close()
		if err := s.httpSrv.Shutdown(sctx); err != nil {
			s.log.Warn("http shutdown", "err", err)
		}
	}
	s.close()
	s.log.Info("chatbatchd stopped")
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// close releases everything start acquired, in reverse order.
func (s *server) close() {
	if s.stopWorker != nil {
		s.stopWorker()
		if err := <-s.workerDone; err != nil {
			s.log.Error("worker", "err", err)
		}
	}
	if s.stopSub != nil {
		s.stopSub()
		<-s.subDone
	}
	if s.svc != nil {
		_ = s.svc.Close()
	}
	if s.met != nil {
		_ = s.met.close(context.Background())
	}
	if s.db != nil {
		_ = s.db.Close()
	}
	if s.rdb != nil {
		_ = s.rdb.Close()
	}
	if s.mini != nil {
		s.mini.Close()
	}
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	s.svc.Mount(mux)
	s.admin.routes(mux) // IMKit's admin calls, client tokens, rooms and the JSON 404 (admin.go, clients.go, rooms.go)
	mux.HandleFunc("GET /rooms/{roomID}/messages", s.authed(s.roomMessages))
	mux.HandleFunc("GET /users/{userID}/rooms", s.authed(s.userRooms))
	mux.HandleFunc("GET /events", s.authed(s.events))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeResult(w, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.ready)
	mux.HandleFunc("GET /openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(chatbatch.OpenAPI)
	})
	if s.met != nil && s.o.metricsAddr == "" {
		mux.Handle("GET /metrics", s.met.handler())
	}
	dash := s.dashboardHandler(mux)
	for _, path := range []string{"/{$}", "/index.html", "/assets/", dashboard.EventsPath, dashboard.RoomNamesPath} {
		mux.Handle("GET "+path, dash)
	}
	return s.allowOrigins(s.clientAuth(mux))
}

// corsExposed are the answer headers a page of another origin may read.
var corsExposed = "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, " +
	"X-RateLimit-Recipients-Limit, X-RateLimit-Recipients-Remaining, X-RateLimit-Recipients-Reset"

// allowOrigins answers CORS for the pages of -cors-origins: their
// preflights (204 with the methods and the headers asked for: the API's
// credentials are headers, never cookies, so no header needs holding
// back) and, on their requests, Access-Control-Allow-Origin. The batch
// API's cross-origin check trusts the same origins (batch.Config's
// CrossOriginProtection). Requests from anywhere else pass untouched.
func (s *server) allowOrigins(next http.Handler) http.Handler {
	if len(s.o.corsOrigins) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || !slices.Contains(s.o.corsOrigins, strings.ToLower(origin)) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Allow-Origin", origin)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Add("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", req)
			}
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", corsExposed)
		next.ServeHTTP(w, r)
	})
}

// authedAny admits a request to one of chatbatchd's own endpoints as the
// batch API admits its own (batch.Service.Authenticate): a client token
// (clientAuth put its user in the context), the API key of the IM-API-KEY
// header, or IMKit's deprecated API_KEY — never a query parameter: URLs
// end up in logs and browser history; the page reads GET /events with
// fetch, which can send the header — and the same -rate-limit, counted per
// app with the batch API's requests.
func (s *server) authedAny(next func(http.ResponseWriter, *http.Request, batch.Principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.svc.Authenticate(w, r)
		if !ok {
			return
		}
		// r.URL.Query() drops what it cannot decode: ?limit=%zz would
		// be answered as if it had no limit.
		if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
			writeErr(w, http.StatusBadRequest, batch.CodeInvalidParameter, "the query string is malformed: "+err.Error())
			return
		}
		next(w, r, p)
	}
}

// authed is authedAny for the operator's endpoints: the API key only; a
// user's client token is refused with 403.
func (s *server) authed(next func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return s.authedAny(func(w http.ResponseWriter, r *http.Request, p batch.Principal) {
		if !p.Admin {
			adminErr(w, http.StatusForbidden, batch.CodeInsufficientPermission, fmt.Sprintf("%s %s is the operator's: send the API key (IM-API-KEY); a user's client token may call POST /messages/batch, GET /rooms, GET /rooms/{id} and its messages/v3", r.Method, r.URL.Path))
			return
		}
		next(w, r, p.AppID)
	})
}

func (s *server) roomMessages(w http.ResponseWriter, r *http.Request, app string) {
	limit := 50
	for k := range r.URL.Query() {
		if k != "limit" {
			writeErr(w, http.StatusBadRequest, "INVALID_PARAMETER", fmt.Sprintf("unknown query parameter %q", k))
			return
		}
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeErr(w, http.StatusBadRequest, "INVALID_PARAMETER", fmt.Sprintf("limit: %q is not a positive number", v))
			return
		}
		limit = min(n, 500)
	}
	room := r.PathValue("roomID")
	if !s.checkID(w, "roomID", room) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.o.storeTimeout)
	defer cancel()
	msgs, err := s.st.RoomMessages(ctx, app, room, limit)
	if err != nil {
		s.storeErr(w, r, "room messages", err)
		return
	}
	out := make([]delivery.MessageJSON, len(msgs))
	for i, m := range msgs {
		out[i] = delivery.NewMessageJSON(m)
	}
	writeResult(w, map[string]any{"room": room, "messages": out})
}

func (s *server) userRooms(w http.ResponseWriter, r *http.Request, app string) {
	user := r.PathValue("userID")
	if !s.checkID(w, "userID", user) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.o.storeTimeout)
	defer cancel()
	rooms, err := s.st.UserRooms(ctx, app, user)
	if err != nil {
		s.storeErr(w, r, "user rooms", err)
		return
	}
	// roomDetails name the rooms for the page: their members, and whether
	// the room is the one-on-one room of its two members.
	members, err := s.st.RoomMembers(ctx, app, rooms)
	if err != nil {
		s.storeErr(w, r, "room members", err)
		return
	}
	details := make([]map[string]any, len(rooms))
	for i, room := range rooms {
		m := members[room]
		if m == nil {
			m = []string{}
		}
		slices.Sort(m)
		details[i] = map[string]any{"room": room, "members": m, "direct": len(m) == 2 && s.st.DirectRoomID(m[0], m[1]) == room}
	}
	writeResult(w, map[string]any{"user": user, "rooms": rooms, "roomDetails": details})
}

// checkID answers 400 for a path ID that no user or room can have: one
// with a NUL byte or invalid UTF-8 (the API refuses those in requests).
func (s *server) checkID(w http.ResponseWriter, name, id string) bool {
	if utf8.ValidString(id) && !strings.ContainsRune(id, 0) {
		return true
	}
	writeErr(w, http.StatusBadRequest, "INVALID_PARAMETER", name+" contains a NUL byte or invalid UTF-8")
	return false
}

// storeErr answers a store error: 404 for what does not exist, 503 with
// Retry-After for a database that failed or did not answer in time.
func (s *server) storeErr(w http.ResponseWriter, r *http.Request, op string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeErr(w, http.StatusNotFound, "NOT_FOUND", op+": not found")
	case errors.Is(r.Context().Err(), context.Canceled):
		s.log.Info("request canceled by the client", "op", op)
	default:
		s.log.Error("the database failed", "op", op, "err", err)
		w.Header().Set("Retry-After", "5")
		writeErr(w, http.StatusServiceUnavailable, "UNAVAILABLE", "the database is unavailable; retry later")
	}
}

func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	// The database and Redis are asked at once, each within its own 2 s:
	// one that hangs must not use up the other's time and be blamed too.
	var storeErr, redisErr error
	var wg sync.WaitGroup
	check := func(dst *error, ping func(context.Context) error) {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		*dst = ping(ctx)
	}
	wg.Add(2)
	go check(&storeErr, s.st.Ping)
	go check(&redisErr, func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() })
	wg.Wait()
	checks := map[string]string{"store": "ok", "redis": "ok"}
	status := http.StatusOK
	if storeErr != nil {
		checks["store"], status = storeErr.Error(), http.StatusServiceUnavailable
	}
	if redisErr != nil {
		checks["redis"], status = redisErr.Error(), http.StatusServiceUnavailable
	}
	if status != http.StatusOK {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"RC": status, "RM": http.StatusText(status), "error": map[string]any{
			"code": "UNAVAILABLE", "message": "not ready", "details": []any{checks},
		}})
		return
	}
	writeResult(w, map[string]any{"status": "ready", "checks": checks})
}

func writeResult(w http.ResponseWriter, result any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"RC": 0, "RM": "OK", "result": result})
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"RC": status, "RM": http.StatusText(status),
		"error": map[string]any{"code": code, "message": msg, "details": []any{}}})
}

// logPusher is the default Pusher: one log line per push call, and one
// per notification at debug level. It never logs message bodies.
type logPusher struct{ log *slog.Logger }

func (p logPusher) Push(ctx context.Context, ns []delivery.Notification) error {
	if len(ns) == 0 {
		return ctx.Err()
	}
	p.log.Info("push notifications", "count", len(ns), "first_user", ns[0].UserID, "first_message", ns[0].MessageID)
	for _, n := range ns {
		p.log.Debug("push", "user", n.UserID, "message", n.MessageID, "room", n.RoomID, "badge", n.Badge)
	}
	return ctx.Err()
}

func dbKind(dsn string) string {
	for i := range dsn {
		if dsn[i] == ':' {
			return dsn[:i]
		}
	}
	return "mysql"
}

func redisKind(u string) string {
	if u == "" {
		return "in-process"
	}
	return "external"
}

// retention maps -retention to Config.Retention, where 0 would mean the
// default: for the flag it keeps everything.
func retention(d time.Duration) time.Duration {
	if d == 0 {
		return batch.KeepForever
	}
	return d
}

// maxRetry maps -max-retry to batch.Config.MaxRetry, where 0 would mean
// the default.
func maxRetry(n int) int {
	if n == 0 {
		return batch.NoRetry
	}
	return n
}
