package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/store"
)

// Recovery. The store is the truth and the queue is disposable: a chunk
// that is not done is owned by a worker only while its lease in the store
// holds (StartChunk takes it, the worker renews it every Lease/3), and a
// chunk not started yet is expected to have a task in the queue. Sweep,
// run every SweepInterval, looks for the chunks for which neither holds
// and hands them to the queue again; processing is idempotent (message
// IDs are deterministic, SaveMessages skips stored IDs, CompleteChunk
// succeeds once), so the price of a needless re-run is a repeated
// delivery of one chunk, never a second message.

// inspector is what Sweep needs of asynq's Inspector — the state of the
// task that carries a chunk — and what QueueStats reads.
type inspector interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
	DeleteTask(queue, id string) error
	RunTask(queue, id string) error
	GetQueueInfo(queue string) (*asynq.QueueInfo, error)
	// and what QueueStats shows
	Queues() ([]string, error)
	Servers() ([]*asynq.ServerInfo, error)
	ListActiveTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	ListRetryTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	ListArchivedTasks(queue string, opts ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	Close() error
}

// sweepPage is how many chunks and finished batches one Sweep handles.
const sweepPage = 1000

// SweepReport says what one Sweep did.
type SweepReport struct {
	// Enqueued is the number of chunks handed to the queue: their task
	// was lost, never made, archived by asynq, or held by a dead worker.
	Enqueued int
	// Queued is the number of overdue chunks whose task is still waiting
	// in the queue (pending, scheduled or retrying): left alone.
	Queued int
	// Reported is the number of finished batches whose OnBatchDone call
	// had not been made (or not recorded) and now was.
	Reported int
	// Recalls is the number of recalled batches whose recall had chunks
	// left (completed after the recall, or interrupted) and now has not.
	Recalls int
	// Pruned is the number of finished batches whose bookkeeping was
	// deleted, past Config.Retention.
	Pruned int
}

// prunePage is how many batches one Sweep deletes at most: at a sweep
// every two seconds, 180,000 an hour, with each statement short.
const prunePage = 100

// Sweep repairs what the queue lost or gave up on, and returns how many
// chunks it handed to the queue. Run calls it every Config.SweepInterval;
// hosts with their own asynq server call it that often themselves.
//
// It looks at every chunk that is not done and either not started
// Config.Lease/2 after it was due, or started with a lease that ran out
// (its worker died, or its attempt failed). It enqueues the chunk's task
// again; if that task ID is taken, it asks asynq (with Config.Redis) what
// the task is doing: an archived task (asynq gave up) is deleted and the
// chunk enqueued again, a task held by a dead worker gets a second task
// beside it (for a chunk not started: when sweeps have seen the task held
// and the chunk not started for Config.Lease/2), and a task still waiting
// or retrying is left alone. Without
// Config.Redis (an Enqueuer only) taken IDs are left alone. It also
// reports finished batches whose Config.OnBatchDone call was not made (see
// there) and forgets expired idempotency keys.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	r, err := s.sweep(ctx)
	return r.Enqueued, err
}

func (s *Service) sweep(ctx context.Context) (SweepReport, error) {
	var r SweepReport
	now := s.cfg.Now().UTC()
	cctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	chunks, err := s.cfg.Batches.PendingChunks(cctx, &store.PendingChunksParams{
		DueBefore: now.Add(-s.cfg.Lease / 2), LeaseExpiredBefore: now, Limit: sweepPage,
	})
	cancel()
	if err != nil {
		return r, fmt.Errorf("batch: sweep: %w", err)
	}
	s.suspects.keepOnly(chunks)
	for _, c := range chunks {
		queued, err := s.requeue(ctx, c)
		if err != nil {
			return r, fmt.Errorf("batch: sweep: %w", err)
		}
		if queued {
			r.Enqueued++
		} else {
			r.Queued++
		}
	}
	if r.Reported, err = s.reportDone(ctx, now); err != nil {
		return r, fmt.Errorf("batch: sweep: %w", err)
	}
	if r.Recalls, err = s.resumeRecalls(ctx); err != nil {
		return r, fmt.Errorf("batch: sweep recalls: %w", err)
	}
	if s.cfg.Retention > 0 {
		err = s.storeCall(ctx, "PruneBatches", func(ctx context.Context) (err error) {
			r.Pruned, err = s.cfg.Batches.PruneBatches(ctx, &store.PruneBatchesParams{FinishedBefore: now.Add(-s.cfg.Retention), Limit: prunePage})
			return err
		})
		if err != nil {
			return r, fmt.Errorf("batch: sweep retention: %w", err)
		}
	}
	err = s.storeCall(ctx, "DeleteExpiredIdempotencyKeys", func(ctx context.Context) error {
		_, err := s.cfg.Batches.DeleteExpiredIdempotencyKeys(ctx, &store.DeleteExpiredIdempotencyKeysParams{Before: now, Limit: sweepPage})
		return err
	})
	if err != nil {
		return r, fmt.Errorf("batch: sweep idempotency keys: %w", err)
	}
	if r.Enqueued > 0 || r.Reported > 0 || r.Recalls > 0 || r.Pruned > 0 {
		s.log.InfoContext(ctx, "batch sweep", "enqueued", r.Enqueued, "still_queued", r.Queued, "reported", r.Reported, "recalls", r.Recalls, "pruned", r.Pruned)
	} else if r.Queued > 0 {
		s.log.DebugContext(ctx, "batch sweep", "still_queued", r.Queued)
	}
	return r, nil
}

// requeue hands chunk c, which the sweep found overdue, to the queue
// unless its task is still waiting there. It reports whether it enqueued.
func (s *Service) requeue(ctx context.Context, c store.Chunk) (bool, error) {
	// Built only when there is something to say: most overdue chunks of a
	// backlog are still queued and say nothing.
	log := func() *slog.Logger {
		return s.log.With("app", c.AppID, "batch", c.BatchID, "chunk", c.No, "attempts", c.Attempts)
	}
	why := "its task was lost (never enqueued, or Redis lost it)"
	if !c.StartedAt.IsZero() {
		why = "its worker stopped renewing its lease"
	}
	id := chunkTaskID(c.ChunkRef)
	err := s.enqueueTask(ctx, c.ChunkRef, id, time.Time{})
	if err == nil {
		log().Info("batch: sweep re-enqueued a chunk", "reason", why)
		return true, nil
	}
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		return false, err
	}
	if s.inspector == nil {
		log().Debug("batch: sweep left a chunk whose task ID is taken (no Config.Redis to look at the task)")
		return false, nil
	}
	info, err := s.inspector.GetTaskInfo(s.cfg.Queue, id)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return false, nil // it finished or went away in between: the next sweep sees
	}
	if err != nil {
		return false, fmt.Errorf("look at task %s: %w", id, err)
	}
	switch info.State {
	case asynq.TaskStateArchived, asynq.TaskStateCompleted:
		// asynq gave up on it (its retries ran out while the store
		// failed), yet the chunk is not done: start over.
		if err := s.inspector.DeleteTask(s.cfg.Queue, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return false, fmt.Errorf("delete archived task %s: %w", id, err)
		}
		if err := s.enqueueTask(ctx, c.ChunkRef, id, time.Time{}); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return false, err
		}
		log().Warn("batch: sweep re-enqueued a chunk whose task asynq had archived", "last_error", info.LastErr)
		return true, nil
	case asynq.TaskStateActive:
		// A worker holds the task. If the chunk is started and its lease
		// ran out, the worker is gone, and asynq would hand the task on
		// only when its own lease and recoverer get to it, a minute or
		// more later. A second task, named after the attempt so that one
		// sweep's task is not added again by the next, does it now; the
		// orphan, when asynq recovers it, finds the chunk done. A chunk
		// not started is being started right now (the window between
		// asynq handing out a task and StartChunk), or its worker died in
		// that window: it gets a second task only if a sweep half a
		// lease earlier saw it so too, so that a busy backlog gets none. A
		// chunk that another worker started or finished since the sweep
		// listed it is left alone.
		if c.StartedAt.IsZero() {
			// Seen like this by an earlier sweep half a lease ago (longer
			// than StartChunk may take): the worker died between taking
			// the task and starting the chunk.
			if !s.suspects.heldTooLong(c.ChunkRef, s.cfg.Now(), s.cfg.Lease/2) {
				return false, nil
			}
			dup := id + ":r0"
			if err := s.enqueueTask(ctx, c.ChunkRef, dup, time.Time{}); err != nil {
				if errors.Is(err, asynq.ErrTaskIDConflict) {
					return false, nil
				}
				return false, err
			}
			log().Warn("batch: sweep re-enqueued a chunk whose task a worker took and never started", "task", dup)
			return true, nil
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
		cur, err := s.cfg.Batches.LoadChunk(cctx, c.ChunkRef)
		cancel()
		if err != nil {
			return false, fmt.Errorf("reload %s chunk %d: %w", c.BatchID, c.No, err)
		}
		if cur.Done || !cur.LeaseUntil.Before(s.cfg.Now()) {
			return false, nil
		}
		dup := id + ":r" + strconv.Itoa(cur.Attempts)
		err = s.enqueueTask(ctx, c.ChunkRef, dup, time.Time{})
		if errors.Is(err, asynq.ErrTaskIDConflict) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		log().Warn("batch: sweep re-enqueued a chunk held by a worker that is gone", "reason", why, "task", dup)
		return true, nil
	case asynq.TaskStateRetry:
		// Its last attempt failed because the store did (this sweep
		// just read the store, so it answers again), and asynq's backoff
		// would hold it for up to minutes more after an outage: run it
		// now. A retry for any other cause (a deliverer's Retry-After, a
		// push provider down) keeps its backoff.
		if !strings.Contains(info.LastErr, storeFailureText) || !info.NextProcessAt.After(s.cfg.Now().Add(s.cfg.SweepInterval)) {
			return false, nil
		}
		if err := s.inspector.RunTask(s.cfg.Queue, id); err != nil {
			if errors.Is(err, asynq.ErrTaskNotFound) {
				return false, nil // it ran or went away in between
			}
			return false, fmt.Errorf("run retrying task %s: %w", id, err)
		}
		log().Info("batch: sweep ran a chunk at once whose task waited to retry after the store failed; the store answers again",
			"was_due_in", info.NextProcessAt.Sub(s.cfg.Now()).Round(time.Second))
		return true, nil
	default:
		// Pending (a backlog), scheduled, or retrying for a cause other
		// than the store: it will run.
		return false, nil
	}
}

// leaseKeeper renews the lease of the chunk a worker processes every
// Config.Lease/3 until stop is called, so that the sweeper takes the
// worker for alive. A renewal that fails is logged; the sweep may then
// start a second run of the chunk, which is safe.
func (s *Service) leaseKeeper(ctx context.Context, ref store.ChunkRef) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(max(s.cfg.Lease/3, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rctx, rcancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
			err := s.cfg.Batches.RenewChunkLease(rctx, &store.RenewChunkLeaseParams{Ref: ref, Until: s.cfg.Now().UTC().Add(s.cfg.Lease)})
			rcancel()
			if err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "batch: renewing a chunk's lease failed", "app", ref.AppID, "batch", ref.BatchID, "chunk", ref.No, "err", err)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// batchDone reports b, which the caller's chunk completion or cancel just
// made final, through Config.OnBatchDone. It first claims the report in
// the store, so that of the processes that see the batch final exactly
// one reports it, and marks it made afterwards; a process that dies in
// between leaves the report to a later Sweep.
func (s *Service) batchDone(ctx context.Context, b *store.Batch) {
	if s.cfg.OnBatchDone == nil {
		return // Sweep marks the batch reported
	}
	now := s.cfg.Now().UTC()
	cctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	claimed, err := s.cfg.Batches.ClaimDoneNotifications(cctx, &store.ClaimDoneNotificationsParams{
		AppID: b.AppID, BatchID: b.ID, FinishedBefore: now, At: now, Until: now.Add(s.cfg.Lease), Limit: 1,
	})
	cancel()
	if err != nil {
		s.log.WarnContext(ctx, "batch: claiming the report of a finished batch failed; the sweeper reports it", "app", b.AppID, "batch", b.ID, "err", err)
		return
	}
	for _, c := range claimed {
		s.report(ctx, c)
	}
}

// reportDone claims and reports the finished batches whose report is
// missing: their finisher died before reporting, or they finished while
// no OnBatchDone was configured (then they are only marked).
func (s *Service) reportDone(ctx context.Context, now time.Time) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	claimed, err := s.cfg.Batches.ClaimDoneNotifications(cctx, &store.ClaimDoneNotificationsParams{
		// Lease: the finisher's own report goes first.
		FinishedBefore: now.Add(-s.cfg.Lease), At: now, Until: now.Add(s.cfg.Lease), Limit: sweepPage,
	})
	cancel()
	if err != nil {
		return 0, fmt.Errorf("claim unreported batches: %w", err)
	}
	for _, b := range claimed {
		if s.cfg.OnBatchDone != nil {
			s.log.InfoContext(ctx, "batch: reporting a finished batch whose report was not made", "app", b.AppID, "batch", b.ID)
		}
		s.report(ctx, b)
	}
	if s.cfg.OnBatchDone == nil {
		return 0, nil
	}
	return len(claimed), nil
}

// report calls OnBatchDone for a claimed batch and marks it reported.
func (s *Service) report(ctx context.Context, b *store.Batch) {
	s.callOnBatchDone(ctx, b)
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.StoreTimeout)
	defer cancel()
	if err := s.cfg.Batches.MarkDoneNotified(mctx, &store.MarkDoneNotifiedParams{AppID: b.AppID, BatchID: b.ID, At: s.cfg.Now().UTC()}); err != nil {
		s.log.WarnContext(ctx, "batch: recording that a finished batch was reported failed; it may be reported again", "app", b.AppID, "batch", b.ID, "err", err)
	}
}

func (s *Service) callOnBatchDone(ctx context.Context, b *store.Batch) {
	if s.cfg.OnBatchDone == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			s.log.ErrorContext(ctx, "batch: OnBatchDone panicked", "batch", b.ID, "panic", v)
		}
	}()
	s.cfg.OnBatchDone(ctx, summaryOf(b, s.cfg.Now()))
}

// suspects remembers since when sweeps have seen a chunk not started
// whose task a worker holds (asynq: active).
type suspects struct {
	mu    sync.Mutex
	since map[store.ChunkRef]time.Time
}

// heldTooLong records ref as seen so at now and reports whether it was
// first seen so lease or more ago.
func (x *suspects) heldTooLong(ref store.ChunkRef, now time.Time, lease time.Duration) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.since == nil {
		x.since = map[store.ChunkRef]time.Time{}
	}
	first, ok := x.since[ref]
	if !ok {
		x.since[ref] = now
		return false
	}
	return now.Sub(first) >= lease
}

// keepOnly forgets the chunks a sweep no longer lists (started or done).
func (x *suspects) keepOnly(chunks []store.Chunk) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.since) == 0 {
		return
	}
	listed := make(map[store.ChunkRef]bool, len(chunks))
	for _, c := range chunks {
		if c.StartedAt.IsZero() {
			listed[c.ChunkRef] = true
		}
	}
	for ref := range x.since {
		if !listed[ref] {
			delete(x.since, ref)
		}
	}
}

// BatchSummary describes a batch that reached a final state; it is what
// Config.OnBatchDone receives.
type BatchSummary struct {
	AppID      string
	BatchID    string
	Status     store.Status
	Count      int
	Sent       int
	Failed     int
	Canceled   int
	CreatedAt  time.Time
	FinishedAt time.Time
}

func summaryOf(b *store.Batch, now time.Time) BatchSummary {
	return BatchSummary{
		AppID: b.AppID, BatchID: b.ID, Status: b.Status(now), Count: b.Count, Sent: b.Sent,
		Failed: b.Failed, Canceled: b.Canceled, CreatedAt: b.CreatedAt, FinishedAt: b.FinishedAt,
	}
}
