package batch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

// Recall: POST BasePath/{batchID}/recall stops what has not been sent and
// takes back what has. The Batches store keeps the recall; it also needs
// two capabilities of the host's seams: the Messages store deletes the
// messages (store.MessageDeleter) and the Deliverer tells the clients
// (delivery.Retractor). Without either the request answers 501 and
// changes nothing.
//
// The order makes a recall complete whatever runs beside it:
//
//  1. RecallBatch marks the batch recalled and cancels the chunks not
//     started, in one transaction: from then on no new chunk starts
//     sending (a started chunk's retry finds the batch recalled).
//  2. Every chunk done by then is recalled: its messages deleted, their
//     retraction delivered, its sent recipients recorded recalled
//     (RecallChunk).
//  3. A chunk in flight completes after step 1; CompleteChunk returns the
//     batch recalled, and its worker recalls the chunk itself.
//  4. Whatever a crash interrupted is found by Sweep (PendingRecalls: a
//     recalled batch with sent recipients) and recalled then.
//
// Every step is idempotent, so a repeated recall, or the request and a
// worker recalling one chunk at once, only repeat a retraction (which
// the Retractor contract allows).

// recallUnsupported returns a 501 naming what the host's seams lack for a
// recall, or nil when they can recall.
func (s *Service) recallUnsupported() *apiError {
	var missing []string
	if s.opt.deleter == nil {
		missing = append(missing, "its message store cannot delete messages (store.MessageDeleter)")
	}
	if s.opt.retractor == nil {
		missing = append(missing, "its deliverer cannot retract messages (delivery.Retractor)")
	}
	if len(missing) == 0 {
		return nil
	}
	return newError(http.StatusNotImplemented, CodeNotSupported,
		"this server cannot recall: %s; nothing was changed", strings.Join(missing, ", "))
}

// handleRecall recalls a batch and answers with its status.
func (s *Service) handleRecall(w http.ResponseWriter, r *http.Request, p Principal, id string) {
	if aerr := queryParams(r.URL.Query()); aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := s.recallUnsupported(); aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx := r.Context()
	before, err := s.getBatch(ctx, p, id)
	if err != nil {
		writeError(w, s.batchError(ctx, id, "get batch", err))
		return
	}
	b, err := s.cfg.Batches.RecallBatch(ctx, &store.RecallBatchParams{AppID: p.AppID, BatchID: id, At: s.cfg.Now().UTC()})
	if err != nil {
		writeError(w, s.batchError(ctx, id, "recall batch", err))
		return
	}
	s.tel.countRecipients(ctx, p.AppID, store.OutcomeCanceled, int64(b.Canceled-before.Canceled))
	if before.ChunksDone < before.Chunks && b.ChunksDone == b.Chunks {
		// The recall finished the batch (no chunk was in progress).
		defer s.batchDone(context.WithoutCancel(ctx), b)
	}
	// The chunks done by now are this request's to recall. The batch is
	// recalled in the store already, so the work must not stop halfway
	// when the client goes away: it gets a context of its own, each
	// store call its StoreTimeout.
	wctx := context.WithoutCancel(ctx)
	if after, err := s.recallDone(wctx, b); err != nil {
		s.log.WarnContext(ctx, "batch: recall interrupted; the sweeper finishes it", "app", p.AppID, "batch", id, "err", err)
		writeError(w, s.storeError(ctx, "recall messages", err))
		return
	} else if after != nil {
		b = after
	}
	s.log.InfoContext(ctx, "batch recalled", "app", p.AppID, "batch", id, "recalled", b.Recalled, "canceled", b.Canceled, "pending", b.Pending())
	writeOK(w, s.detailOf(ctx, withPayloadOf(b, before)))
}

// recallDone recalls every done chunk of recalled batch b that has
// messages not recalled yet, and returns the batch as the last
// RecallChunk left it (nil if no chunk needed one).
func (s *Service) recallDone(ctx context.Context, b *store.Batch) (*store.Batch, error) {
	var after *store.Batch
	for no := range b.Chunks {
		ref := store.ChunkRef{AppID: b.AppID, BatchID: b.ID, No: no}
		var c *store.Chunk
		err := s.storeCall(ctx, "LoadChunk", func(ctx context.Context) (err error) {
			c, err = s.cfg.Batches.LoadChunk(ctx, ref)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("load chunk %d: %w", no, err)
		}
		if !c.Done {
			continue // in flight: its worker recalls it when it completes
		}
		got, err := s.recallChunk(ctx, b, c)
		if err != nil {
			return nil, err
		}
		if got != nil {
			after = got
		}
	}
	return after, nil
}

// recallChunk takes back the messages of done chunk c of recalled batch
// b: deletes them, retracts them, and records its sent recipients as
// recalled. It returns the batch after RecallChunk, or nil when the chunk
// has no message left to recall.
func (s *Service) recallChunk(ctx context.Context, b *store.Batch, c *store.Chunk) (*store.Batch, error) {
	if aerr := s.recallUnsupported(); aerr != nil {
		return nil, errors.New(aerr.message)
	}
	var msgs []store.Message
	sent := 0
	for i, o := range c.Outcomes {
		if o.MessageID == "" || o.Status == store.OutcomeRecalled || i >= len(c.Recipients) {
			continue
		}
		if o.Status == store.OutcomeSent {
			sent++
		}
		m := store.Message{ID: o.MessageID, AppID: b.AppID, RoomID: o.Room, Sender: b.Sender, BatchID: b.ID, Index: c.Start + i}
		if c.Recipients[i].Room == "" {
			m.Receiver = c.Recipients[i].Receiver
		}
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	ids := make([]string, len(msgs))
	for k, m := range msgs {
		ids[k] = m.ID
	}
	if err := s.storeCall(ctx, "DeleteMessages", func(ctx context.Context) error { return s.opt.deleter.DeleteMessages(ctx, b.AppID, ids) }); err != nil {
		return nil, fmt.Errorf("delete messages of chunk %d: %w", c.No, err)
	}
	rctx, sp := s.tel.span(ctx, "chatbatch.retract", attrBatch.String(b.ID), attrChunk.Int(c.No), attrCount.Int(len(msgs)))
	err := s.opt.retractor.Retract(rctx, msgs)
	endSpan(sp, err)
	for k, e := range delivery.ItemErrors(err, len(msgs)) {
		switch {
		case e == nil:
		case delivery.IsPermanent(e):
			// The client can never be told (its room is gone); the
			// message is deleted all the same.
			s.log.WarnContext(ctx, "batch: a retraction failed permanently", "app", b.AppID, "batch", b.ID, "message", msgs[k].ID, "err", e)
		default:
			return nil, fmt.Errorf("retract messages of chunk %d: %w", c.No, e)
		}
	}
	var after *store.Batch
	err = s.storeCall(ctx, "RecallChunk", func(ctx context.Context) (err error) {
		after, err = s.cfg.Batches.RecallChunk(ctx, &store.RecallChunkParams{Ref: c.ChunkRef})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record the recall of chunk %d: %w", c.No, err)
	}
	s.tel.countRecipients(ctx, b.AppID, store.OutcomeRecalled, int64(sent))
	return after, nil
}

// resumeRecalls recalls, for Sweep, what recalls left behind: chunks of
// recalled batches that completed after the recall, or that a crash or
// a failure kept from being recalled. It returns how many batches it
// worked on.
func (s *Service) resumeRecalls(ctx context.Context) (int, error) {
	if s.recallUnsupported() != nil {
		return 0, nil // nothing can have been recalled
	}
	var bs []*store.Batch
	err := s.storeCall(ctx, "PendingRecalls", func(ctx context.Context) (err error) {
		// A recall younger than a lease may still be at work.
		bs, err = s.cfg.Batches.PendingRecalls(ctx, &store.PendingRecallsParams{RecalledBefore: s.cfg.Now().UTC().Add(-s.cfg.Lease), Limit: sweepPage})
		return err
	})
	if err != nil {
		return 0, err
	}
	for _, b := range bs {
		if _, err := s.recallDone(ctx, b); err != nil {
			return 0, fmt.Errorf("recall of batch %s: %w", b.ID, err)
		}
	}
	return len(bs), nil
}
