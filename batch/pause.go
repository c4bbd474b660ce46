package batch

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/store"
)

// Pause and resume: POST BasePath/{batchID}/pause and …/resume.
//
// A pause is kept in the store (Batches.PauseBatch), never only in the
// queue, so it survives restarts, a lost queue and dead workers:
//
//  1. PauseBatch marks the batch paused and holds back its chunks not
//     started, in one transaction: from then on StartChunk starts none of
//     them (a worker whose task comes due ends it without doing
//     anything), the sweep does not count them as lost, admission does
//     not count them as backlog. A chunk started before the pause
//     finishes, and is still recovered if its worker dies.
//  2. ResumeBatch clears the pause and returns the chunks not started; a
//     paced batch's have their NotBefore moved by the pause's length, so
//     the pace goes on from where it stopped instead of all at once.
//     Each gets its task again (requeueResumed); what an enqueue misses,
//     the sweep enqueues as for any lost task.
//
// Cancel and recall work on a paused batch as on any other.

// handlePause pauses a batch and answers with its status.
func (s *Service) handlePause(w http.ResponseWriter, r *http.Request, p Principal, id string, pause bool) {
	if aerr := queryParams(r.URL.Query()); aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx := r.Context()
	before, err := s.getBatch(ctx, p, id)
	if err != nil {
		writeError(w, s.batchError(ctx, id, "get batch", err))
		return
	}
	verb := "resume"
	if pause {
		verb = "pause"
	}
	now := s.cfg.Now().UTC()
	var b *store.Batch
	var chunks []store.Chunk
	if pause {
		b, err = s.cfg.Batches.PauseBatch(ctx, &store.PauseBatchParams{AppID: p.AppID, BatchID: id, At: now})
	} else {
		b, chunks, err = s.cfg.Batches.ResumeBatch(ctx, &store.ResumeBatchParams{AppID: p.AppID, BatchID: id, At: now})
	}
	switch {
	case errors.Is(err, store.ErrConflict):
		writeError(w, s.stoppedError(ctx, p, id, verb))
		return
	case err != nil:
		writeError(w, s.batchError(ctx, id, verb+" batch", err))
		return
	}
	log := s.log.With("app", p.AppID, "batch", id)
	if pause {
		if before.PausedAt.IsZero() {
			log.InfoContext(ctx, "batch paused", "pending", b.Pending())
		}
	} else if len(chunks) > 0 || !before.PausedAt.IsZero() {
		// The batch is resumed in the store: its chunks must get their
		// tasks even if the client goes away; what fails here, the sweep
		// enqueues.
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.EnqueueTimeout)
		n, err := s.requeueResumed(ectx, chunks)
		cancel()
		if err != nil {
			log.WarnContext(ctx, "batch: enqueueing a resumed batch's chunks failed; the sweeper enqueues the rest", "queued", n, "chunks", len(chunks), "err", err)
		}
		log.InfoContext(ctx, "batch resumed", "chunks", len(chunks), "pending", b.Pending())
	}
	writeOK(w, s.detailOf(ctx, withPayloadOf(b, before)))
}

// stoppedError is the 409 of pausing or resuming a batch that is
// finished (BATCH_FINISHED), or canceled or recalled (BATCH_CANCELED).
func (s *Service) stoppedError(ctx context.Context, p Principal, id, verb string) *apiError {
	cur, err := s.cfg.Batches.GetBatch(ctx, p.AppID, id)
	if err == nil && cur.ChunksDone < cur.Chunks && (!cur.CanceledAt.IsZero() || !cur.RecalledAt.IsZero()) {
		return newError(http.StatusConflict, CodeBatchCanceled, "batch %q is %s; there is nothing left to %s", id, cur.Status(s.cfg.Now()), verb)
	}
	st := "finished"
	if err == nil {
		st = string(cur.Status(s.cfg.Now()))
	}
	return newError(http.StatusConflict, CodeBatchFinished, "batch %q already finished (%s); there is nothing left to %s", id, st, verb)
}

// requeueResumed hands the chunks of a resumed batch to the queue, each
// to run at its NotBefore. The chunk's task ID may still be taken: by
// the task that found the batch paused and ended (kept while asynq
// retains completed tasks), or by one still waiting for its old time (a
// paced chunk). With Config.Redis such a task is deleted and the chunk
// enqueued anew; one a worker holds right now is left (it starts the
// chunk, or ends and leaves it to the sweep). It returns how many chunks
// it queued and stops at the first other error.
func (s *Service) requeueResumed(ctx context.Context, chunks []store.Chunk) (int, error) {
	for i, c := range chunks {
		id := chunkTaskID(c.ChunkRef)
		err := s.enqueueTask(ctx, c.ChunkRef, id, c.NotBefore)
		if errors.Is(err, asynq.ErrTaskIDConflict) && s.inspector != nil {
			info, ierr := s.inspector.GetTaskInfo(s.cfg.Queue, id)
			switch {
			case ierr == nil && info.State == asynq.TaskStateActive:
				err = nil
			case ierr == nil:
				if derr := s.inspector.DeleteTask(s.cfg.Queue, id); derr != nil && !errors.Is(derr, asynq.ErrTaskNotFound) {
					err = fmt.Errorf("delete task %s: %w", id, derr)
					break
				}
				err = s.enqueueTask(ctx, c.ChunkRef, id, c.NotBefore)
			case errors.Is(ierr, asynq.ErrTaskNotFound) || errors.Is(ierr, asynq.ErrQueueNotFound):
				err = s.enqueueTask(ctx, c.ChunkRef, id, c.NotBefore) // gone in between
			default:
				err = fmt.Errorf("look at task %s: %w", id, ierr)
			}
		}
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return i, err
		}
	}
	return len(chunks), nil
}
