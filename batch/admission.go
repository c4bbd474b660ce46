package batch

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/chatbatch/chatbatch/store"
)

// Admission bounds the backlog the API accepts work into, so that a
// flood of batches is refused at the door instead of queueing for
// minutes: the backlog is the recipients of the chunks that are due and
// not done yet (store.Batches.Backlog: scheduled and paced chunks count
// only once due), across all apps and per app. A POST that would take the
// backlog past a bound is refused before anything is stored: 429
// BACKLOG_FULL past its app's bound, 503 OVERLOADED past the total, each
// with a Retry-After of how long the workers take, at the rate they were
// measured to drain the backlog, to make room for it.
//
// A batch is admitted whatever its size when the backlog it would join is
// empty, so a bound below MaxRecipients still lets every batch in
// eventually. Dry runs and batches scheduled for later are not checked.
// Each API process reads the backlog at most once per Refresh and adds
// what it accepted since, so processes together may overshoot a bound by
// what the others accept within a Refresh.
type Admission struct {
	// MaxPending is the most recipients due and not yet processed, across
	// all apps, before a POST is refused with 503 OVERLOADED. 0: no bound.
	MaxPending int
	// MaxPendingPerApp is the most recipients due and not yet processed
	// of one app before its POSTs are refused with 429 BACKLOG_FULL. 0:
	// no bound.
	MaxPendingPerApp int
	// Refresh is how often a process reads the backlog from the store
	// (one aggregate query), at most. Defaults to DefaultAdmissionRefresh
	// (1 s).
	Refresh time.Duration
}

// DefaultAdmissionRefresh is Admission.Refresh's default.
const DefaultAdmissionRefresh = time.Second

// The bounds of a Retry-After of an admission refusal; unknownDrainWait
// is the answer while no drain rate has been measured yet.
const (
	minAdmissionWait = 1 * time.Second
	maxAdmissionWait = 2 * time.Minute
	unknownDrainWait = 10 * time.Second
)

// admitter is the admission state of one Service: the last backlog read,
// what this process accepted since, and the drain rate measured between
// reads.
type admitter struct {
	cfg *Admission // nil: admission off
	s   *Service

	refreshMu sync.Mutex // one refresh at a time
	mu        sync.Mutex
	at        time.Time      // when the backlog was read; zero: never
	perApp    map[string]int // due recipients per app at `at`
	total     int
	accepted  map[string]int // recipients this process accepted since `at`
	rate      float64        // recipients a second the workers drain, smoothed; 0: unknown
	// for the drain rate: the asynq queue's processed-task counter and
	// the average size of a due chunk at the last read
	processed   int
	chunkSize   float64
	haveCounter bool
	reported    map[string]bool // apps whose backlog the gauge shows
}

func newAdmitter(s *Service) *admitter {
	a := &admitter{cfg: s.cfg.Admission, s: s, perApp: map[string]int{}, accepted: map[string]int{}, reported: map[string]bool{}}
	if a.cfg != nil && a.cfg.Refresh <= 0 {
		c := *a.cfg
		c.Refresh = DefaultAdmissionRefresh
		a.cfg = &c
	}
	return a
}

// dueNow is how many recipients of req are due at once: none for a batch
// scheduled later, the first chunk of a paced one, all of the others.
func (s *Service) dueNow(req *sendRequest, now time.Time) int {
	if req.SendAt.After(now) {
		return 0
	}
	n := len(req.Paras)
	if rate := s.paceOf(req); rate > 0 {
		n = min(n, s.cfg.ChunkSize, rate) // as checkRate and accept pace it
	}
	return n
}

// admit decides whether n more due recipients of app may be accepted.
func (a *admitter) admit(ctx context.Context, app string, n int) *apiError {
	if a.cfg == nil || n == 0 || (a.cfg.MaxPending <= 0 && a.cfg.MaxPendingPerApp <= 0) {
		return nil
	}
	a.refresh(ctx)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.at.IsZero() {
		return nil // the backlog could not be read: admit (the store's own errors answer for it)
	}
	appPending := a.perApp[app] + a.accepted[app]
	total := a.total
	for _, v := range a.accepted {
		total += v
	}
	// A bound refuses only a backlog that is not empty: a batch larger
	// than the bound still gets in once the workers are idle.
	refuse := func(bound, pending int, status int, code, who, boundName string) *apiError {
		if bound <= 0 || pending == 0 || pending+n <= bound {
			return nil
		}
		wait := seconds64(a.waitFor(pending + n - bound))
		a.s.tel.admissionRefused.Add(ctx, 1, metric.WithAttributes(attrApp.String(app), attrBound.String(boundName)))
		aerr := newError(status, code,
			"%s has %d recipients waiting to be sent, and %d more would pass its bound of %d; retry in %d s, when the workers have made room",
			who, pending, n, bound, wait)
		aerr.retryAfter = wait
		return aerr
	}
	if aerr := refuse(a.cfg.MaxPendingPerApp, appPending, http.StatusTooManyRequests, CodeBacklogFull, "this app", "app"); aerr != nil {
		return aerr
	}
	return refuse(a.cfg.MaxPending, total, http.StatusServiceUnavailable, CodeOverloaded, "the server", "total")
}

// record counts n due recipients of app that this process stored since
// the last read.
func (a *admitter) record(app string, n int) {
	if a.cfg == nil || n == 0 {
		return
	}
	a.mu.Lock()
	a.accepted[app] += n
	a.mu.Unlock()
}

// waitFor is how long the workers take to drain excess recipients at the
// measured rate, within the bounds. Called with a.mu held.
func (a *admitter) waitFor(excess int) time.Duration {
	if a.rate <= 0 {
		return unknownDrainWait
	}
	d := time.Duration(float64(excess) / a.rate * float64(time.Second))
	return min(max(d, minAdmissionWait), maxAdmissionWait)
}

func seconds64(d time.Duration) int { return int(math.Ceil(d.Seconds())) }

// refresh reads the backlog when the last read is older than Refresh. One
// request reads it; those that come meanwhile use the last read. A store
// that fails leaves the last read in place (or none: then all admit).
func (a *admitter) refresh(ctx context.Context) {
	a.mu.Lock()
	fresh := !a.at.IsZero() && a.s.cfg.Now().Sub(a.at) < a.cfg.Refresh
	a.mu.Unlock()
	if fresh || !a.refreshMu.TryLock() {
		return
	}
	defer a.refreshMu.Unlock()
	now := a.s.cfg.Now()
	backlog, err := bounded(ctx, a.s, "Backlog", func(ctx context.Context) ([]store.AppBacklog, error) {
		return a.s.cfg.Batches.Backlog(ctx, &store.BacklogParams{DueBefore: now.UTC()})
	})
	if err != nil {
		a.s.log.WarnContext(ctx, "batch: reading the backlog for admission control failed; admitting by the last reading", "err", err)
		return
	}
	processed, haveCounter := a.processedTasks()
	perApp := make(map[string]int, len(backlog))
	total, chunks := 0, 0
	for _, b := range backlog {
		perApp[b.AppID] = b.Recipients
		total += b.Recipients
		chunks += b.Chunks
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.at.IsZero() {
		if elapsed := now.Sub(a.at).Seconds(); elapsed > 0 {
			a.measure(elapsed, total, processed, haveCounter)
		}
	}
	a.at, a.perApp, a.total, a.accepted = now, perApp, total, map[string]int{}
	a.processed, a.haveCounter = processed, haveCounter
	a.chunkSize = float64(a.s.cfg.ChunkSize)
	if chunks > 0 {
		a.chunkSize = float64(total) / float64(chunks)
	}
	for app, n := range perApp {
		a.s.tel.backlog.Record(ctx, int64(n), metric.WithAttributes(attrApp.String(app)))
		a.reported[app] = true
	}
	for app := range a.reported {
		if _, ok := perApp[app]; !ok {
			a.s.tel.backlog.Record(ctx, 0, metric.WithAttributes(attrApp.String(app)))
			delete(a.reported, app)
		}
	}
}

// measure updates the drain rate from one interval of elapsed seconds:
// the chunk tasks asynq counted processed in it times the average size
// of a due chunk; without asynq's counter, by how much the backlog
// shrank beyond what this process added to it. Called with a.mu held.
func (a *admitter) measure(elapsed float64, total, processed int, haveCounter bool) {
	var r float64
	switch {
	case haveCounter && a.haveCounter && processed >= a.processed:
		r = float64(processed-a.processed) * a.chunkSize / elapsed
	default:
		added := 0
		for _, v := range a.accepted {
			added += v
		}
		drained := a.total + added - total
		if drained < 0 {
			return // more became due than this process knows of: no reading
		}
		r = float64(drained) / elapsed
	}
	if a.rate == 0 {
		a.rate = r
	} else {
		a.rate = 0.7*a.rate + 0.3*r
	}
	a.s.tel.drainRate.Record(context.Background(), a.rate)
}

// processedTasks reads asynq's count of the queue's processed tasks
// (successes only), when the Service has an inspector. A POST waits for
// it at most queueInfoWait: asynq's inspector takes no context, and a
// Redis that hangs must not hold the request (the reading is then left
// out, and the drain rate measured from the backlog).
func (a *admitter) processedTasks() (int, bool) {
	if a.s.inspector == nil {
		return 0, false
	}
	type result struct {
		n  int
		ok bool
	}
	ch := make(chan result, 1)
	go func() {
		info, err := a.s.inspector.GetQueueInfo(a.s.cfg.Queue)
		if err != nil {
			ch <- result{}
			return
		}
		ch <- result{info.ProcessedTotal - info.FailedTotal, true}
	}()
	select {
	case r := <-ch:
		return r.n, r.ok
	case <-time.After(queueInfoWait):
		return 0, false
	}
}

// queueInfoWait bounds processedTasks.
const queueInfoWait = 250 * time.Millisecond

// attrBound says which bound refused a request.
var attrBound = attribute.Key("chatbatch.admission.bound")

func (a *Admission) validate() []error {
	if a == nil {
		return nil
	}
	var errs []error
	if a.MaxPending < 0 || a.MaxPendingPerApp < 0 || a.Refresh < 0 {
		errs = append(errs, fmt.Errorf("batch: Config.Admission has a negative field (%+v); leave a field zero for no bound or the default", *a))
	}
	return errs
}
