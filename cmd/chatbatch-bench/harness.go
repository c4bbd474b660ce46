package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

// harness is chatbatch on one database: a store under a random table
// prefix, a Service with the default configuration on its own random
// queue, its API behind a real HTTP server, and a second prefix with the
// same schema for the baselines.
type harness struct {
	d       *database
	redis   *redisTarget
	conc    int
	streams int // pgx CopyFrom connections
	// taskCheck is the worker's batch.Config.TaskCheckInterval (0: its
	// default), and the naive baseline's idle poll.
	taskCheck time.Duration
	prefix    string
	st        *bunstore.Store
	caches    bool            // st keeps a directory cache (not on a MySQL server that refused its triggers)
	base      *bunstore.Store // the baselines' tables
	queue     string
	svc       *batch.Service
	srv       *httptest.Server
	client    *http.Client
	tracker   *tracker
	worker    *workerHandle
	// idemKeys makes every POST carry a fresh Idempotency-Key, as a
	// careful client's does: the bookkeeping scenarios (retention.go)
	// then measure the keys' table too.
	idemKeys bool

	floors map[floorKind]floorContender // the floor scenario's contenders (floor.go)
	// phaseCPU is the machine's CPU over the span the last rate was timed
	// over: a baseline's statements (runPlain, runCopy) or a worker phase
	// (workerRate, floorRate), never the rows' preparation or verification.
	phaseCPU cpuMeter
	// quietMax bounds how long quiet waits for a quiet machine before a
	// contender's measured span (-quiet; 0: it does not wait), and waited
	// is how long the last contender waited.
	quietMax, waited time.Duration
	// keptShape is how the kept contender writes the chunks' bookkeeping
	// (-kept-shape; keptshapes.go).
	keptShape keptShape
}

func randomName(tag string) string {
	return "cbb" + tag + "_" + strings.ToLower(rand.Text()[:8]) + "_"
}

func newHarness(ctx context.Context, d *database, r *redisTarget, conc int, tag string) (h *harness, err error) {
	h = &harness{d: d, redis: r, conc: conc, streams: conc, tracker: newTracker(), keptShape: keptStore}
	defer func() {
		if err != nil {
			h.close(context.WithoutCancel(ctx), false)
			h = nil
		}
	}()
	h.prefix = randomName(tag)
	if h.st, err = bunstore.New(d.bun, &bunstore.Options{TablePrefix: h.prefix}); err != nil {
		return h, err
	}
	if err = h.st.Migrate(ctx); err != nil {
		return h, err
	}
	if h.caches, err = h.st.CachesDirectory(ctx); err != nil {
		return h, err
	}
	if h.base, err = bunstore.New(d.bun, &bunstore.Options{TablePrefix: strings.TrimSuffix(h.prefix, "_") + "base_"}); err != nil {
		return h, err
	}
	if err = h.base.Migrate(ctx); err != nil {
		return h, err
	}
	h.queue = strings.TrimSuffix(h.prefix, "_")
	h.svc, err = batch.New(h.config())
	if err != nil {
		return h, err
	}
	h.srv = httptest.NewServer(h.svc.Handler())
	h.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	return h, nil
}

// config is the Service's configuration: chatbatch's defaults, but on
// SQLite with room for its one writer at a time.
func (h *harness) config() batch.Config {
	c := batch.Config{
		Store:             h.st,
		Deliverer:         delivery.Discard{},
		Authenticator:     batch.NewStaticKeys(map[string]batch.Principal{apiKey: {AppID: appID, Admin: true}}),
		Redis:             h.redis.opt,
		Queue:             h.queue,
		Concurrency:       h.conc,
		TaskCheckInterval: h.taskCheck,
		Logger:            slog.New(slog.DiscardHandler),
		OnBatchDone:       h.tracker.onDone,
	}
	if h.d.name == "sqlite" {
		// A POST's CreateBatch waits for SQLite's write lock behind the
		// worker's chunks (busy_timeout 10 s); on a loaded machine that
		// outlasted the default StoreTimeout (5 s) and a run failed with
		// 503 UNAVAILABLE. A rate benchmark is no latency test (those are
		// the fault suite's): give it the busy timeout, and a lease
		// above twice that (batch.Config.Lease).
		c.StoreTimeout, c.Lease = 15*time.Second, 40*time.Second
	}
	return c
}

// withAdmission serves the API (not the worker) with admission control
// on, as a second API process on the same store and queue would, until
// the returned func is called.
func (h *harness) withAdmission(adm *batch.Admission) (url string, stop func(), err error) {
	cfg := h.config()
	cfg.Admission = adm
	svc, err := batch.New(cfg)
	if err != nil {
		return "", nil, err
	}
	srv := httptest.NewServer(svc.Handler())
	return srv.URL, func() { srv.Close(); svc.Close() }, nil
}

// refusedError is a POST that admission control refused (429 or 503 with
// a Retry-After): nothing was stored, and the client may retry.
type refusedError struct {
	status     int
	retryAfter time.Duration
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("POST /messages/batch = %d, retry after %v", e.status, e.retryAfter)
}

// close stops the worker, the HTTP server and the Service, deletes the
// queue and drops the tables (unless keep).
func (h *harness) close(ctx context.Context, keep bool) error {
	var errs []error
	if h.worker != nil {
		errs = append(errs, h.stopWorker())
	}
	if h.srv != nil {
		h.srv.Close()
	}
	if h.client != nil {
		h.client.CloseIdleConnections()
	}
	if h.svc != nil {
		errs = append(errs, h.svc.Close())
	}
	for _, c := range h.floors {
		errs = append(errs, c.svc.Close())
	}
	if keep {
		return errors.Join(errs...)
	}
	if h.queue != "" {
		h.redis.deleteQueue(h.queue)
	}
	for _, st := range []*bunstore.Store{h.base, h.st} {
		if st != nil {
			errs = append(errs, st.Drop(ctx))
		}
	}
	return errors.Join(errs...)
}

func (h *harness) table(name string) string     { return h.prefix + name }
func (h *harness) baseTable(name string) string { return h.base.TablePrefix() + name }

// emptyMessages empties chatbatch's messages table and the baselines'
// before a contender of a rate scenario runs, so that every contender
// writes into an empty table, whatever ran before it. Without it each
// round's chatbatch contenders (first send, repeat send, the floor's
// nocheck) wrote three times the rows into theirs as the baseline did into
// its own, and the contender that ran later in the rotation met a bigger
// table: on MariaDB, with its default 128 MB buffer pool, rates fell run
// by run. Each contender's messages are verified before the next starts.
func (h *harness) emptyMessages(ctx context.Context) error {
	for _, t := range []string{h.st.TablePrefix() + "messages", h.baseTable("messages")} {
		q := "TRUNCATE TABLE " + t
		if h.d.name == "sqlite" {
			q = "DELETE FROM " + t
		}
		if _, err := h.d.sql.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("empty %s: %w", t, err)
		}
	}
	return nil
}

// seedUsers adds users to the chatbatch tables.
func (h *harness) seedUsers(ctx context.Context, ids []string) error {
	rows := make([][]any, len(ids))
	for i, id := range ids {
		rows[i] = []any{appID, id}
	}
	return h.d.load(ctx, h.table("users"), []string{"app_id", "id"}, rows)
}

// seedRooms adds rooms with their members to the chatbatch tables.
func (h *harness) seedRooms(ctx context.Context, rooms []string, members func(i int) []string) error {
	rrows := make([][]any, len(rooms))
	var mrows [][]any
	for i, id := range rooms {
		rrows[i] = []any{appID, id}
		for _, u := range members(i) {
			mrows = append(mrows, []any{appID, id, u})
		}
	}
	if err := h.d.load(ctx, h.table("rooms"), []string{"app_id", "id"}, rrows); err != nil {
		return err
	}
	return h.d.load(ctx, h.table("room_members"), []string{"app_id", "room_id", "user_id"}, mrows)
}

// seedPoolA adds users userA(0..n-1), each with a one-on-one room with the
// sender, and the sender.
func (h *harness) seedPoolA(ctx context.Context, n int) error {
	users := []string{sender}
	rooms := make([]string, n)
	for i := range n {
		users = append(users, userA(i))
		rooms[i] = store.DirectRoomID(sender, userA(i))
	}
	if err := h.seedUsers(ctx, users); err != nil {
		return err
	}
	return h.seedRooms(ctx, rooms, func(i int) []string { return []string{sender, userA(i)} })
}

// seedRoomsC adds rooms roomC(0..n-1), each with two pool-a users.
func (h *harness) seedRoomsC(ctx context.Context, n, poolA int) error {
	rooms := make([]string, n)
	for i := range n {
		rooms[i] = roomC(i)
	}
	return h.seedRooms(ctx, rooms, func(i int) []string { return []string{userA(i % poolA), userA((i + 1) % poolA)} })
}

// acceptedBatch is a request the API accepted.
type acceptedBatch struct {
	id        string
	count     int
	first     para
	postStart time.Time
	respAt    time.Time // when the 200 response had been read
}

// post sends one request.
func (h *harness) post(ctx context.Context, body []byte) (acceptedBatch, error) {
	return h.postTo(ctx, h.srv.URL, body)
}

// postTo is post to the API at base.
func (h *harness) postTo(ctx context.Context, base string, body []byte) (acceptedBatch, error) {
	a := acceptedBatch{postStart: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/messages/batch", bytes.NewReader(body))
	if err != nil {
		return a, err
	}
	req.Header.Set("IM-API-KEY", apiKey)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if h.idemKeys {
		req.Header.Set("Idempotency-Key", strings.ToLower(rand.Text()))
	}
	res, err := h.client.Do(req)
	if err != nil {
		return a, fmt.Errorf("POST /messages/batch: %w", err)
	}
	raw, err := io.ReadAll(res.Body)
	res.Body.Close()
	a.respAt = time.Now()
	if err != nil {
		return a, fmt.Errorf("POST /messages/batch: %w", err)
	}
	if (res.StatusCode == http.StatusTooManyRequests || res.StatusCode == http.StatusServiceUnavailable) &&
		(strings.Contains(string(raw), `"BACKLOG_FULL"`) || strings.Contains(string(raw), `"OVERLOADED"`)) {
		ra, _ := strconv.Atoi(res.Header.Get("Retry-After"))
		return a, &refusedError{status: res.StatusCode, retryAfter: time.Duration(ra) * time.Second}
	}
	if res.StatusCode != http.StatusOK {
		return a, fmt.Errorf("POST /messages/batch = %d %s", res.StatusCode, excerpt(raw))
	}
	var env struct {
		Result struct {
			BatchID string `json:"batchID"`
			Count   int    `json:"count"`
		} `json:"result"`
	}
	if err := json.Unmarshal(raw, &env); err != nil || env.Result.BatchID == "" {
		return a, fmt.Errorf("POST /messages/batch: unexpected answer %s", excerpt(raw))
	}
	a.id, a.count = env.Result.BatchID, env.Result.Count
	return a, nil
}

func excerpt(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// warmDirectory looks up p's users and resolves every receiver's
// one-on-one room through the store, as an earlier send to them would
// have (its accept, then its chunks): the directory cache then knows
// them.
func (h *harness) warmDirectory(ctx context.Context, p plan) error {
	for k := range p.requests {
		var bs []string
		for _, q := range p.gen(k) {
			if q.room == "" {
				bs = append(bs, q.receiver)
			}
		}
		if _, err := h.st.MissingUsers(ctx, appID, append(bs, sender)); err != nil {
			return err
		}
		for part := range slices.Chunk(bs, batch.DefaultChunkSize) {
			rs, err := h.st.DirectRooms(ctx, appID, sender, part)
			if err != nil {
				return err
			}
			for _, r := range rs {
				if r.Err != nil {
					return r.Err
				}
			}
		}
	}
	return nil
}

// acceptPlan posts every request of p from a few goroutines (not measured).
// The store's directory cache starts empty (a first send to these
// receivers): only what this accept looked up is known to the worker.
func (h *harness) acceptPlan(ctx context.Context, p plan) ([]acceptedBatch, error) {
	h.st.ForgetDirectory()
	out := make([]acceptedBatch, p.requests)
	errs := make([]error, p.requests)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(4, p.requests) {
		wg.Go(func() {
			for k := range next {
				ps := p.gen(k)
				a, err := h.post(ctx, requestBody(ps))
				if err == nil && a.count != len(ps) {
					err = fmt.Errorf("batch %s: count %d, want %d", a.id, a.count, len(ps))
				}
				a.first = ps[0]
				out[k], errs[k] = a, err
			}
		})
	}
	for k := range p.requests {
		next <- k
	}
	close(next)
	wg.Wait()
	return out, errors.Join(errs...)
}

// workerHandle is a running svc.Run.
type workerHandle struct {
	cancel context.CancelFunc
	exited chan struct{}
	err    error
}

func (h *harness) startWorker() { h.startWorkerOf(h.svc) }

// startWorkerOf runs svc's worker until stopWorker.
func (h *harness) startWorkerOf(svc *batch.Service) {
	if h.worker != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &workerHandle{cancel: cancel, exited: make(chan struct{})}
	go func() {
		w.err = svc.Run(ctx)
		close(w.exited)
	}()
	h.worker = w
}

func (h *harness) stopWorker() error {
	w := h.worker
	if w == nil {
		return nil
	}
	h.worker = nil
	w.cancel()
	<-w.exited
	return w.err
}

// tracker records Config.OnBatchDone calls.
type tracker struct {
	mu     sync.Mutex
	done   map[string]doneBatch
	notify chan struct{}
}

type doneBatch struct {
	summary batch.BatchSummary
	at      time.Time // when the callback ran
}

func newTracker() *tracker {
	return &tracker{done: map[string]doneBatch{}, notify: make(chan struct{}, 1)}
}

func (t *tracker) onDone(_ context.Context, s batch.BatchSummary) {
	at := time.Now()
	t.mu.Lock()
	t.done[s.BatchID] = doneBatch{s, at}
	t.mu.Unlock()
	select {
	case t.notify <- struct{}{}:
	default:
	}
}

// stallTimeout is how long waitDone waits without a batch finishing.
const stallTimeout = 3 * time.Minute

// waitDone waits until every batch has called OnBatchDone, and returns
// the time of the last call.
func (h *harness) waitDone(ctx context.Context, bs []acceptedBatch) (time.Time, error) {
	var exited chan struct{}
	if h.worker != nil {
		exited = h.worker.exited
	}
	progress := -1
	stall := time.NewTimer(stallTimeout)
	defer stall.Stop()
	for {
		var last time.Time
		n := 0
		h.tracker.mu.Lock()
		for _, b := range bs {
			if d, ok := h.tracker.done[b.id]; ok {
				n++
				if d.at.After(last) {
					last = d.at
				}
			}
		}
		h.tracker.mu.Unlock()
		if n == len(bs) {
			return last, nil
		}
		if n > progress {
			progress = n
			stall.Reset(stallTimeout)
		}
		select {
		case <-h.tracker.notify:
		case <-exited:
			return time.Time{}, fmt.Errorf("the worker stopped: %v", h.worker.err)
		case <-stall.C:
			return time.Time{}, fmt.Errorf("no batch finished for %v (%d of %d done): %s", stallTimeout, n, len(bs), h.describe(ctx, bs))
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// describe summarizes the batches' states for an error message.
func (h *harness) describe(ctx context.Context, bs []acceptedBatch) string {
	var parts []string
	for _, b := range bs {
		got, err := h.st.GetBatch(ctx, appID, b.id)
		if err != nil {
			parts = append(parts, b.id+": "+err.Error())
			continue
		}
		if got.Status(time.Now()) != store.StatusCompleted {
			parts = append(parts, fmt.Sprintf("%s: %s sent %d failed %d of %d", b.id, got.Status(time.Now()), got.Sent, got.Failed, got.Count))
		}
		if len(parts) > 5 {
			break
		}
	}
	return strings.Join(parts, "; ")
}

// span reads, from the store's tables, when the first chunk of bs started
// and when the last batch finished.
func (h *harness) span(ctx context.Context, bs []acceptedBatch) (first, last time.Time, err error) {
	ids := make([]any, 0, len(bs)+1)
	ids = append(ids, appID)
	var in []string
	for i, b := range bs {
		ids = append(ids, b.id)
		in = append(in, h.d.param(i+2))
	}
	list := strings.Join(in, ", ")
	var v any
	q := "SELECT MIN(started_at) FROM " + h.table("chunks") + " WHERE app_id = " + h.d.param(1) + " AND batch_id IN (" + list + ")"
	if err := h.d.sql.QueryRowContext(ctx, q, ids...).Scan(&v); err != nil {
		return first, last, err
	}
	if first, err = parseTime(v); err != nil {
		return first, last, fmt.Errorf("min(started_at): %w", err)
	}
	q = "SELECT MAX(finished_at) FROM " + h.table("batches") + " WHERE app_id = " + h.d.param(1) + " AND id IN (" + list + ")"
	if err := h.d.sql.QueryRowContext(ctx, q, ids...).Scan(&v); err != nil {
		return first, last, err
	}
	if last, err = parseTime(v); err != nil {
		return first, last, fmt.Errorf("max(finished_at): %w", err)
	}
	return first, last, nil
}

// verify checks every batch: completed with sent == count and nothing
// failed, as GET /messages/batch/{id} reports it; each message stored
// exactly once; the first message as the baselines write it.
func (h *harness) verify(ctx context.Context, bs []acceptedBatch) error {
	for _, b := range bs {
		st, err := h.status(ctx, b.id)
		if err != nil {
			return err
		}
		if st.Status != "completed" || st.Sent != b.count || st.Count != b.count || st.Failed != 0 || st.Canceled != 0 || st.Pending != 0 {
			return fmt.Errorf("batch %s: status %s count %d sent %d failed %d canceled %d pending %d; want completed with %d sent",
				b.id, st.Status, st.Count, st.Sent, st.Failed, st.Canceled, st.Pending, b.count)
		}
		rows, distinct, err := h.d.countMessages(ctx, h.table("messages"), b.id)
		if err != nil {
			return fmt.Errorf("batch %s: count messages: %w", b.id, err)
		}
		if rows != b.count || distinct != b.count {
			return fmt.Errorf("batch %s: %d messages stored (%d distinct IDs), want %d exactly once", b.id, rows, distinct, b.count)
		}
		if err := h.checkFirst(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// checkFirst compares the batch's first stored message with the row the
// baselines write for it, so that both write the same rows.
func (h *harness) checkFirst(ctx context.Context, b acceptedBatch) error {
	want := messageRow(h.d, b.id, 0, b.first, time.Time{})
	var got [7]string
	q := "SELECT id, room_id, receiver, sender, type, text, extra FROM " + h.table("messages") + " WHERE app_id = " + h.d.param(1) + " AND id = " + h.d.param(2)
	if err := h.d.sql.QueryRowContext(ctx, q, appID, want[1]).Scan(&got[0], &got[1], &got[2], &got[3], &got[4], &got[5], &got[6]); err != nil {
		return fmt.Errorf("batch %s: first message: %w", b.id, err)
	}
	for i, g := range got {
		if w := want[i+1].(string); g != w {
			return fmt.Errorf("batch %s: first message column %s = %q, the baselines write %q", b.id, messageColumnList[i+1], g, w)
		}
	}
	return nil
}

type batchStatus struct {
	Status   string `json:"status"`
	Count    int    `json:"count"`
	Sent     int    `json:"sent"`
	Failed   int    `json:"failed"`
	Pending  int    `json:"pending"`
	Canceled int    `json:"canceled"`
}

// status is GET /messages/batch/{id}.
func (h *harness) status(ctx context.Context, id string) (batchStatus, error) {
	var st batchStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+"/messages/batch/"+id, nil)
	if err != nil {
		return st, err
	}
	req.Header.Set("IM-API-KEY", apiKey)
	res, err := h.client.Do(req)
	if err != nil {
		return st, fmt.Errorf("GET batch %s: %w", id, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return st, fmt.Errorf("GET batch %s: %w", id, err)
	}
	if res.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET batch %s = %d %s", id, res.StatusCode, excerpt(raw))
	}
	var env struct {
		Result batchStatus `json:"result"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return st, fmt.Errorf("GET batch %s: %w", id, err)
	}
	return env.Result, nil
}

// verifyBaseline checks that a baseline stored every row of each of its
// batches exactly once.
func (h *harness) verifyBaseline(ctx context.Context, counts map[string]int) error {
	for id, want := range counts {
		rows, distinct, err := h.d.countMessages(ctx, h.baseTable("messages"), id)
		if err != nil {
			return fmt.Errorf("baseline batch %s: %w", id, err)
		}
		if rows != want || distinct != want {
			return fmt.Errorf("baseline batch %s: %d rows (%d distinct IDs), want %d exactly once", id, rows, distinct, want)
		}
	}
	return nil
}

// quiet waits until the machine is quiet (waitQuiet), at most
// h.quietMax, before a contender's measured span, and records the wait in
// h.waited.
func (h *harness) quiet(ctx context.Context) error {
	w, err := waitQuiet(ctx, h.quietMax)
	h.waited = w
	return err
}
