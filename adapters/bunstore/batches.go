package bunstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/chatbatch/chatbatch/store"
)

const (
	batchColumns     = "app_id, id, sender, count, chunks, payload, created_at, send_at, finished_at, sent, failed, canceled, chunks_done"
	batchReadColumns = "sender, count, chunks, payload, created_at, send_at, finished_at, canceled_at, sent, failed, canceled, chunks_done, notified_at, push_failed, recalled_at, recalled, rate_per_minute, created_by, paused_at"
	chunkColumns     = "app_id, batch_id, chunk_no, start_index, size, recipients, not_before"
	chunkReadColumns = "start_index, recipients, not_before, started_at, attempts, lease_until, done, outcomes"
)

// CreateBatch implements store.Batches: the batch row and its chunk rows
// (multi-row INSERTs) in one transaction. A duplicate batch ID is detected
// by the primary key's unique violation, so two concurrent creators of one
// ID cannot both succeed, and is returned as store.ErrConflict.
func (s *Store) CreateBatch(ctx context.Context, b *store.Batch, chunks []store.Chunk) error {
	const op = "create batch"
	if err := begin(ctx, op); err != nil {
		return err
	}
	if b.Chunks != len(chunks) {
		return fmt.Errorf("bunstore: %s %q: Chunks is %d but %d chunks given", op, b.ID, b.Chunks, len(chunks))
	}
	if unstorable(b.AppID, b.ID, b.Sender) {
		return fmt.Errorf("bunstore: %s %q: an ID contains a NUL byte or invalid UTF-8", op, b.ID)
	}
	if b.CreatedAt.IsZero() {
		return fmt.Errorf("bunstore: %s %q: CreatedAt is the zero time", op, b.ID)
	}
	recipients := make([]string, len(chunks))
	for i := range chunks {
		if chunks[i].NotBefore.IsZero() {
			return fmt.Errorf("bunstore: %s %q: chunk %d: NotBefore is the zero time", op, b.ID, i)
		}
		recipients[i] = encodeRecipients(chunks[i].Recipients)
	}
	batchRow := row{b.AppID, b.ID, b.Sender, b.Count, b.Chunks, b.Payload, toDB(b.CreatedAt), toDB(b.SendAt), toDB(b.FinishedAt),
		b.Sent, b.Failed, b.Canceled, b.ChunksDone}
	cols := batchColumns
	if b.RatePerMinute > 0 { // the column's default is 0
		cols += ", rate_per_minute"
		batchRow = append(batchRow, b.RatePerMinute)
	}
	if b.CreatedBy != "" { // the column's default is ''
		cols += ", created_by"
		batchRow = append(batchRow, b.CreatedBy)
	}
	err := s.inAcceptTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO "+s.batches+" ("+cols+") VALUES ?", batchRow); err != nil {
			if isUniqueViolation(err) {
				return fmt.Errorf("batch %q exists: %w (%w)", b.ID, store.ErrConflict, err)
			}
			return err
		}
		if s.pgx {
			if err := s.pgInsertChunks(ctx, tx, b, chunks, recipients); err != nil {
				return err
			}
		} else {
			rows := make([]row, len(chunks))
			sizes := make([]int, len(chunks))
			for i, c := range chunks {
				// The chunk's identity is the batch's and its position,
				// whatever c.ChunkRef says, as in memstore.
				rows[i] = row{b.AppID, b.ID, i, c.Start, len(c.Recipients), recipients[i], toDB(c.NotBefore)}
				sizes[i] = 64 + len(b.AppID) + len(b.ID) + len(recipients[i])
			}
			for _, st := range bulkInserts(s, s.chunks, chunkColumns, "", rows, sizes) {
				if _, err := tx.ExecContext(ctx, "?", st); err != nil {
					return err
				}
			}
		}
		if b.IdempotencyKey != "" {
			return s.completeKey(ctx, tx, b)
		}
		return nil
	})
	return s.fail(ctx, op, err)
}

// GetBatch implements store.Batches.
func (s *Store) GetBatch(ctx context.Context, app, id string) (*store.Batch, error) {
	const op = "get batch"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	b, err := s.readBatch(ctx, s.db, app, id)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return b, nil
}

// readBatch loads one batch through db (the pool or a transaction).
func (s *Store) readBatch(ctx context.Context, db bun.IConn, app, id string) (*store.Batch, error) {
	if unstorable(app, id) {
		return nil, fmt.Errorf("batch %q: %w", id, store.ErrNotFound)
	}
	bs := newBatchScan(app, id)
	err := db.QueryRowContext(ctx, "SELECT "+batchReadColumns+" FROM "+s.batches+" WHERE app_id = ? AND id = ?", app, id).Scan(bs.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("batch %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return bs.batch(), nil
}

// batchScan receives the batchReadColumns of one row.
type batchScan struct {
	b                                                             store.Batch
	created, sendAt, finished, cancel, notified, recalled, paused dbTime
}

func newBatchScan(app, id string) *batchScan {
	return &batchScan{b: store.Batch{AppID: app, ID: id}}
}

// dest returns the scan destinations of batchReadColumns, in order.
func (x *batchScan) dest() []any {
	b := &x.b
	return []any{&b.Sender, &b.Count, &b.Chunks, &b.Payload, &x.created, &x.sendAt, &x.finished, &x.cancel, &b.Sent, &b.Failed, &b.Canceled, &b.ChunksDone, &x.notified, &b.PushFailed, &x.recalled, &b.Recalled, &b.RatePerMinute, &b.CreatedBy, &x.paused}
}

func (x *batchScan) batch() *store.Batch {
	x.b.CreatedAt, x.b.SendAt, x.b.FinishedAt, x.b.CanceledAt, x.b.NotifiedAt = x.created.t, x.sendAt.t, x.finished.t, x.cancel.t, x.notified.t
	x.b.RecalledAt, x.b.PausedAt = x.recalled.t, x.paused.t
	return &x.b
}

// chunkScan receives a chunk's columns.
type chunkScan struct {
	c                         store.Chunk
	recipients                string
	outcomes                  *string
	notBefore, started, lease dbTime
}

// dest returns the scan destinations of chunkReadColumns, in order.
func (x *chunkScan) dest() []any {
	return []any{&x.c.Start, &x.recipients, &x.notBefore, &x.started, &x.c.Attempts, &x.lease, &x.c.Done, &x.outcomes}
}

func (x *chunkScan) chunk() (*store.Chunk, error) {
	c := &x.c
	c.NotBefore, c.StartedAt, c.LeaseUntil = x.notBefore.t, x.started.t, x.lease.t
	var err error
	if c.Recipients, err = decodeRecipients(x.recipients); err != nil {
		return nil, fmt.Errorf("recipients column: %w", err)
	}
	if x.outcomes != nil {
		if c.Outcomes, err = decodeOutcomes(*x.outcomes); err != nil {
			return nil, fmt.Errorf("outcomes column: %w", err)
		}
	}
	return c, nil
}

// LoadChunk implements store.Batches.
func (s *Store) LoadChunk(ctx context.Context, ref store.ChunkRef) (*store.Chunk, error) {
	const op = "load chunk"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	c, err := s.readChunk(ctx, s.db, ref)
	if err != nil {
		return nil, s.fail(ctx, fmt.Sprintf("%s: batch %q chunk %d", op, ref.BatchID, ref.No), err)
	}
	return c, nil
}

// StartChunk implements store.Batches. The UPDATE starts a chunk only if
// it is not done; CancelBatch's UPDATE of the same row requires it to be
// neither done nor started, so whichever commits first wins the row and
// the other's condition no longer holds. A chunk not started is started
// only if it is not paused: PauseBatch marks the batch's chunks not
// started paused (the chunks' own column, so that the condition is on the
// row the UPDATE locks), and the two UPDATEs of the row exclude each other
// as with a cancel. On PostgreSQL (pgx) the UPDATE
// returns the chunk joined with its batch: one round trip. Otherwise, and
// when the UPDATE matched no row (a chunk done before), a SELECT of the
// chunk and its batch follows.
func (s *Store) StartChunk(ctx context.Context, p *store.StartChunkParams) (*store.Batch, *store.Chunk, error) {
	const op = "start chunk"
	if err := begin(ctx, op); err != nil {
		return nil, nil, err
	}
	ref := p.Ref
	if unstorable(ref.AppID, ref.BatchID) {
		return nil, nil, fmt.Errorf("bunstore: %s: batch %q chunk %d: %w", op, ref.BatchID, ref.No, store.ErrNotFound)
	}
	if s.pgx {
		b, c, err := s.pgStartChunk(ctx, p)
		if err != nil || c != nil {
			return b, c, s.fail(ctx, fmt.Sprintf("%s: batch %q chunk %d", op, ref.BatchID, ref.No), err)
		}
	} else {
		if err := s.accepts.wait(ctx); err != nil {
			return nil, nil, s.fail(ctx, op, err)
		}
		_, err := s.db.ExecContext(ctx, "UPDATE "+s.chunks+" SET started_at = COALESCE(started_at, ?), attempts = attempts + 1, lease_until = ?"+
			" WHERE app_id = ? AND batch_id = ? AND chunk_no = ? AND done = "+s.falseLit()+" AND (started_at IS NOT NULL OR paused = "+s.falseLit()+")",
			toDB(p.At), toDB(p.LeaseUntil), ref.AppID, ref.BatchID, ref.No)
		if err != nil {
			return nil, nil, s.fail(ctx, op, err)
		}
	}
	b, c, err := s.readStarted(ctx, ref)
	if err != nil {
		return nil, nil, s.fail(ctx, fmt.Sprintf("%s: batch %q chunk %d", op, ref.BatchID, ref.No), err)
	}
	return b, c, nil
}

// RenewChunkLease implements store.Batches.
func (s *Store) RenewChunkLease(ctx context.Context, p *store.RenewChunkLeaseParams) error {
	const op = "renew chunk lease"
	if err := begin(ctx, op); err != nil {
		return err
	}
	ref := p.Ref
	if unstorable(ref.AppID, ref.BatchID) {
		return fmt.Errorf("bunstore: %s: batch %q chunk %d: %w", op, ref.BatchID, ref.No, store.ErrNotFound)
	}
	res, err := s.db.ExecContext(ctx, "UPDATE "+s.chunks+" SET lease_until = ? WHERE app_id = ? AND batch_id = ? AND chunk_no = ? AND done = "+s.falseLit(),
		toDB(p.Until), ref.AppID, ref.BatchID, ref.No)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			// Done (fine) or missing: tell them apart. MySQL counts only
			// changed rows, so an equal lease lands here too.
			var done bool
			err = s.db.QueryRowContext(ctx, "SELECT done FROM "+s.chunks+" WHERE app_id = ? AND batch_id = ? AND chunk_no = ?",
				ref.AppID, ref.BatchID, ref.No).Scan(&done)
			if errors.Is(err, sql.ErrNoRows) {
				err = store.ErrNotFound
			}
		}
	}
	return s.fail(ctx, fmt.Sprintf("%s: batch %q chunk %d", op, ref.BatchID, ref.No), err)
}

// readStarted loads a chunk and its batch in one query.
func (s *Store) readStarted(ctx context.Context, ref store.ChunkRef) (*store.Batch, *store.Chunk, error) {
	bs, cs := newBatchScan(ref.AppID, ref.BatchID), &chunkScan{c: store.Chunk{ChunkRef: ref}}
	b, c, err := scanStarted(s.db.QueryRowContext(ctx, "SELECT "+prefixed("c.", chunkReadColumns)+", "+prefixed("b.", batchReadColumns)+
		" FROM "+s.chunks+" c JOIN "+s.batches+" b ON b.app_id = c.app_id AND b.id = c.batch_id WHERE c.app_id = ? AND c.batch_id = ? AND c.chunk_no = ?",
		ref.AppID, ref.BatchID, ref.No), bs, cs, append(cs.dest(), bs.dest()...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, store.ErrNotFound
	}
	return b, c, err
}

// scanStarted scans row into dest, the destinations of bs and cs, and
// returns the batch and the chunk.
func scanStarted(row *sql.Row, bs *batchScan, cs *chunkScan, dest []any) (*store.Batch, *store.Chunk, error) {
	if err := row.Scan(dest...); err != nil {
		return nil, nil, err
	}
	c, err := cs.chunk()
	if err != nil {
		return nil, nil, err
	}
	return bs.batch(), c, nil
}

// prefixed qualifies each of a comma-separated list of columns.
func prefixed(qualifier, cols string) string {
	return qualifier + strings.ReplaceAll(cols, ", ", ", "+qualifier)
}

// readChunk loads one chunk through db (the pool or a transaction).
func (s *Store) readChunk(ctx context.Context, db bun.IConn, ref store.ChunkRef) (*store.Chunk, error) {
	if unstorable(ref.AppID, ref.BatchID) {
		return nil, store.ErrNotFound
	}
	cs := &chunkScan{c: store.Chunk{ChunkRef: ref}}
	err := db.QueryRowContext(ctx, "SELECT "+chunkReadColumns+" FROM "+s.chunks+" WHERE app_id = ? AND batch_id = ? AND chunk_no = ?",
		ref.AppID, ref.BatchID, ref.No).Scan(cs.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return cs.chunk()
}

// CancelBatch implements store.Batches in one transaction. It takes the
// row locks in the order CompleteChunk does — chunks, then the batch — so
// the two cannot deadlock:
//
//  1. Lock the chunks that are neither done nor started and complete each
//     with canceled outcomes. StartChunk's UPDATE has the same condition,
//     so a chunk is either started or canceled.
//  2. Update the batch's counters and canceled_at, unless it is finished
//     (chunks_done = chunks), and read it back.
//
// A call that canceled no chunk on a finished batch changed nothing: that
// is the ErrConflict of canceling a finished batch.
func (s *Store) CancelBatch(ctx context.Context, p *store.CancelBatchParams) (*store.Batch, error) {
	return s.stopBatch(ctx, "cancel batch", p.AppID, p.BatchID, p.At, false)
}

// stopBatch is CancelBatch, or with recall RecallBatch: in one
// transaction it completes the chunks neither done nor started with
// canceled outcomes (cancelUnstarted), then sets canceled_at (or
// recalled_at) unless set, and the counters, and reads the batch back.
// Only a cancel refuses a finished batch.
func (s *Store) stopBatch(ctx context.Context, op, app, id string, at time.Time, recall bool) (*store.Batch, error) {
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	if unstorable(app, id) {
		return nil, fmt.Errorf("bunstore: %s %q: %w", op, id, store.ErrNotFound)
	}
	mark, unfinished := "canceled_at = COALESCE(canceled_at, ?)", " AND chunks_done < chunks"
	if recall {
		mark, unfinished = "recalled_at = COALESCE(recalled_at, ?)", ""
	}
	var after *store.Batch
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		chunks, canceled, err := s.cancelUnstarted(ctx, tx, app, id)
		if err != nil {
			return err
		}
		// finished_at first: MySQL assigns left to right with new values.
		// Only a call that completed chunks can finish the batch; a
		// finished batch (a recall) keeps its finished_at.
		if _, err := tx.ExecContext(ctx, "UPDATE "+s.batches+" SET finished_at = CASE WHEN ? > 0 AND chunks_done + ? = chunks THEN ? ELSE finished_at END, "+
			mark+", canceled = canceled + ?, chunks_done = chunks_done + ? WHERE app_id = ? AND id = ?"+unfinished,
			chunks, chunks, toDB(at), toDB(at), canceled, chunks, app, id); err != nil {
			return err
		}
		if after, err = s.readBatch(ctx, tx, app, id); err != nil {
			return err
		}
		if !recall && chunks == 0 && (after.ChunksDone == after.Chunks || after.CanceledAt.IsZero()) {
			return fmt.Errorf("batch %q already finished: %w", id, store.ErrConflict)
		}
		return nil
	})
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return after, nil
}

// cancelUnstarted locks the chunks of a batch that are neither done nor
// started and completes each with canceled outcomes, in tx. It returns
// how many chunks and recipients it canceled; the caller updates the
// batch's counters.
func (s *Store) cancelUnstarted(ctx context.Context, tx bun.Tx, app, id string) (chunks, recipients int, err error) {
	forUpdate := " FOR UPDATE"
	if s.kind == dialect.SQLite {
		forUpdate = "" // the transaction holds SQLite's write lock already
	}
	type open struct{ no, size int }
	var found []open
	rows, err := tx.QueryContext(ctx, "SELECT chunk_no, size FROM "+s.chunks+" WHERE app_id = ? AND batch_id = ? AND done = "+s.falseLit()+" AND started_at IS NULL ORDER BY chunk_no"+forUpdate, app, id)
	if err != nil {
		return 0, 0, err
	}
	for rows.Next() {
		var c open
		if err := rows.Scan(&c.no, &c.size); err != nil {
			rows.Close()
			return 0, 0, err
		}
		found = append(found, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}
	for _, c := range found {
		outcomes := make([]store.Outcome, c.size)
		for i := range outcomes {
			outcomes[i].Status = store.OutcomeCanceled
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+s.chunks+" SET done = "+s.trueLit()+", outcomes = ? WHERE app_id = ? AND batch_id = ? AND chunk_no = ?",
			encodeOutcomes(outcomes), app, id, c.no); err != nil {
			return 0, 0, err
		}
		recipients += c.size
	}
	return len(found), recipients, nil
}

// PauseBatch implements store.Batches in one transaction, locking like
// CancelBatch (the chunks, then the batch): the chunks neither done nor
// started are marked paused — StartChunk's UPDATE of the same row
// requires the mark unset, so a chunk is either started or held back —
// then paused_at is set unless the batch is finished, canceled or
// recalled, and the batch read back (an ErrConflict rolls it all back).
func (s *Store) PauseBatch(ctx context.Context, p *store.PauseBatchParams) (*store.Batch, error) {
	const op = "pause batch"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	if unstorable(p.AppID, p.BatchID) {
		return nil, fmt.Errorf("bunstore: %s %q: %w", op, p.BatchID, store.ErrNotFound)
	}
	var after *store.Batch
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE "+s.chunks+" SET paused = "+s.trueLit()+" WHERE app_id = ? AND batch_id = ? AND done = "+s.falseLit()+" AND started_at IS NULL",
			p.AppID, p.BatchID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+s.batches+" SET paused_at = COALESCE(paused_at, ?) WHERE app_id = ? AND id = ?"+running,
			toDB(p.At), p.AppID, p.BatchID); err != nil {
			return err
		}
		var err error
		if after, err = s.readBatch(ctx, tx, p.AppID, p.BatchID); err != nil {
			return err
		}
		return stoppedErr(after)
	})
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return after, nil
}

// running is the condition of a batch that may be paused or resumed.
const running = " AND chunks_done < chunks AND canceled_at IS NULL AND recalled_at IS NULL"

// stoppedErr is the ErrConflict of pausing or resuming b, read after the
// UPDATE, when it is finished, canceled or recalled.
func stoppedErr(b *store.Batch) error {
	switch {
	case b.ChunksDone >= b.Chunks:
		return fmt.Errorf("batch %q already finished: %w", b.ID, store.ErrConflict)
	case !b.CanceledAt.IsZero() || !b.RecalledAt.IsZero():
		return fmt.Errorf("batch %q is canceled or recalled: %w", b.ID, store.ErrConflict)
	}
	return nil
}

// ResumeBatch implements store.Batches in one transaction: the paused
// chunks are read under their row locks (the chunks first, as
// everywhere), their mark cleared (and for a paced batch each one's
// not_before moved by the pause's length: one UPDATE per chunk, a paced
// batch has a chunk a minute), then the batch's paused_at.
func (s *Store) ResumeBatch(ctx context.Context, p *store.ResumeBatchParams) (*store.Batch, []store.Chunk, error) {
	const op = "resume batch"
	if err := begin(ctx, op); err != nil {
		return nil, nil, err
	}
	if unstorable(p.AppID, p.BatchID) {
		return nil, nil, fmt.Errorf("bunstore: %s %q: %w", op, p.BatchID, store.ErrNotFound)
	}
	forUpdate := " FOR UPDATE"
	if s.kind == dialect.SQLite {
		forUpdate = ""
	}
	var after *store.Batch
	var chunks []store.Chunk
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT chunk_no, start_index, not_before, attempts FROM "+s.chunks+
			" WHERE app_id = ? AND batch_id = ? AND done = "+s.falseLit()+" AND started_at IS NULL ORDER BY chunk_no"+forUpdate, p.AppID, p.BatchID)
		if err != nil {
			return err
		}
		for rows.Next() {
			c := store.Chunk{ChunkRef: store.ChunkRef{AppID: p.AppID, BatchID: p.BatchID}}
			var nb dbTime
			if err := rows.Scan(&c.No, &c.Start, &nb, &c.Attempts); err != nil {
				rows.Close()
				return err
			}
			c.NotBefore = nb.t
			chunks = append(chunks, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		var paused dbTime
		var rate int
		err = tx.QueryRowContext(ctx, "SELECT paused_at, rate_per_minute FROM "+s.batches+" WHERE app_id = ? AND id = ?"+forUpdate, p.AppID, p.BatchID).Scan(&paused, &rate)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("batch %q: %w", p.BatchID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if after, err = s.readBatch(ctx, tx, p.AppID, p.BatchID); err != nil {
			return err
		}
		if err := stoppedErr(after); err != nil {
			return err
		}
		if paused.t.IsZero() {
			chunks = nil
			return nil
		}
		shift := time.Duration(0)
		if rate > 0 {
			shift = max(p.At.Sub(paused.t), 0)
		}
		if shift == 0 {
			if _, err := tx.ExecContext(ctx, "UPDATE "+s.chunks+" SET paused = "+s.falseLit()+" WHERE app_id = ? AND batch_id = ? AND done = "+s.falseLit()+" AND started_at IS NULL",
				p.AppID, p.BatchID); err != nil {
				return err
			}
		}
		for i := range chunks {
			if shift == 0 {
				break
			}
			c := &chunks[i]
			c.NotBefore = c.NotBefore.Add(shift)
			if _, err := tx.ExecContext(ctx, "UPDATE "+s.chunks+" SET paused = "+s.falseLit()+", not_before = ? WHERE app_id = ? AND batch_id = ? AND chunk_no = ?",
				toDB(c.NotBefore), p.AppID, p.BatchID, c.No); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+s.batches+" SET paused_at = NULL WHERE app_id = ? AND id = ?", p.AppID, p.BatchID); err != nil {
			return err
		}
		after.PausedAt = time.Time{}
		return nil
	})
	if err != nil {
		return nil, nil, s.fail(ctx, op, err)
	}
	return after, chunks, nil
}

// RecallBatch implements store.Batches in one transaction, locking like
// CancelBatch: the unstarted chunks first, then the batch.
func (s *Store) RecallBatch(ctx context.Context, p *store.RecallBatchParams) (*store.Batch, error) {
	return s.stopBatch(ctx, "recall batch", p.AppID, p.BatchID, p.At, true)
}

// RecallChunk implements store.Batches: the chunk's outcomes are read
// under a row lock, their sent recipients turned recalled, and the
// batch's counters moved, in one transaction.
func (s *Store) RecallChunk(ctx context.Context, p *store.RecallChunkParams) (*store.Batch, error) {
	const op = "recall chunk"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	ref := p.Ref
	if unstorable(ref.AppID, ref.BatchID) {
		return nil, fmt.Errorf("bunstore: %s: batch %q chunk %d: %w", op, ref.BatchID, ref.No, store.ErrNotFound)
	}
	forUpdate := " FOR UPDATE"
	if s.kind == dialect.SQLite {
		forUpdate = ""
	}
	var after *store.Batch
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		var done bool
		var outcomes *string
		err := tx.QueryRowContext(ctx, "SELECT done, outcomes FROM "+s.chunks+" WHERE app_id = ? AND batch_id = ? AND chunk_no = ?"+forUpdate,
			ref.AppID, ref.BatchID, ref.No).Scan(&done, &outcomes)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("batch %q chunk %d: %w", ref.BatchID, ref.No, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if !done || outcomes == nil {
			return fmt.Errorf("batch %q chunk %d is not done: %w", ref.BatchID, ref.No, store.ErrConflict)
		}
		os, err := decodeOutcomes(*outcomes)
		if err != nil {
			return fmt.Errorf("outcomes column: %w", err)
		}
		n := 0
		for i := range os {
			if os[i].Status == store.OutcomeSent {
				os[i].Status = store.OutcomeRecalled
				n++
			}
		}
		if n > 0 {
			if _, err := tx.ExecContext(ctx, "UPDATE "+s.chunks+" SET outcomes = ? WHERE app_id = ? AND batch_id = ? AND chunk_no = ?",
				encodeOutcomes(os), ref.AppID, ref.BatchID, ref.No); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "UPDATE "+s.batches+" SET sent = sent - ?, recalled = recalled + ? WHERE app_id = ? AND id = ?",
				n, n, ref.AppID, ref.BatchID); err != nil {
				return err
			}
		}
		after, err = s.readBatch(ctx, tx, ref.AppID, ref.BatchID)
		return err
	})
	if err != nil {
		return nil, s.fail(ctx, fmt.Sprintf("%s: batch %q chunk %d", op, ref.BatchID, ref.No), err)
	}
	return after, nil
}

// PendingRecalls implements store.Batches; the batches_recalled index
// keeps it from scanning the batches that were never recalled.
func (s *Store) PendingRecalls(ctx context.Context, p *store.PendingRecallsParams) ([]*store.Batch, error) {
	const op = "pending recalls"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	q, args := limited("SELECT app_id, id FROM "+s.batches+" WHERE recalled_at IS NOT NULL AND recalled_at <= ? AND sent > 0 ORDER BY recalled_at, app_id, id",
		[]any{toDB(p.RecalledBefore)}, p.Limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	type key struct{ app, id string }
	var keys []key
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.app, &k.id); err != nil {
			rows.Close()
			return nil, s.fail(ctx, op, err)
		}
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	out := make([]*store.Batch, 0, len(keys))
	for _, k := range keys {
		b, err := s.readBatch(ctx, s.db, k.app, k.id)
		if err != nil {
			return nil, s.fail(ctx, op, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// CompleteChunk implements store.Batches in one transaction:
//
//  1. UPDATE the chunk to done WHERE it is not done yet. Concurrent
//     completers of one chunk queue on its row lock (PostgreSQL, MySQL) or
//     on the database's write lock (SQLite); the first flips it and the
//     others then match no row. 0 rows: look at the chunk to tell
//     ErrNotFound from ErrConflict.
//  2. Add the outcomes to the batch's counters in one UPDATE that reads
//     the current row under its lock, setting finished_at when this is
//     the last chunk, and read the batch back in the same transaction: of
//     the completers of a batch's chunks, exactly one sees ChunksDone ==
//     Chunks.
//
// On PostgreSQL (pgx) both UPDATEs are one statement (the chunk's in a
// WITH clause, the batch's conditional on it) that returns the batch:
// one round trip, and the batch row is locked only for that statement's
// commit, so workers finishing chunks of one batch barely wait for each
// other.
func (s *Store) CompleteChunk(ctx context.Context, p *store.CompleteChunkParams) (*store.Batch, error) {
	const op = "complete chunk"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	ref := p.Ref
	if unstorable(ref.AppID, ref.BatchID) {
		return nil, fmt.Errorf("bunstore: %s: batch %q chunk %d: %w", op, ref.BatchID, ref.No, store.ErrNotFound)
	}
	outcomes := encodeOutcomes(p.Outcomes)
	var add counts
	for _, o := range p.Outcomes {
		switch o.Status {
		case store.OutcomeSent:
			add.sent++
		case store.OutcomeFailed:
			add.failed++
		case store.OutcomeCanceled:
			add.canceled++
		}
		if o.Push == store.PushFailed {
			add.pushFailed++
		}
	}
	if s.pgx {
		after, err := s.pgCompleteChunk(ctx, p, outcomes, add)
		if err != nil {
			return nil, s.fail(ctx, fmt.Sprintf("%s: batch %q chunk %d", op, ref.BatchID, ref.No), err)
		}
		return after, nil
	}
	var after *store.Batch
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE "+s.chunks+" SET done = "+s.trueLit()+", outcomes = ? WHERE app_id = ? AND batch_id = ? AND chunk_no = ? AND done = "+s.falseLit()+" AND size = ?",
			outcomes, ref.AppID, ref.BatchID, ref.No, len(p.Outcomes))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return s.whyNotCompleted(ctx, tx, ref, len(p.Outcomes))
		}
		// finished_at comes first: MySQL evaluates SET assignments left to
		// right with the values already assigned, PostgreSQL and SQLite
		// with the old ones; first, it sees the old chunks_done on all.
		res, err = tx.ExecContext(ctx, "UPDATE "+s.batches+" SET finished_at = CASE WHEN chunks_done + 1 = chunks THEN ? ELSE finished_at END, "+
			"sent = sent + ?, failed = failed + ?, canceled = canceled + ?, push_failed = push_failed + ?, chunks_done = chunks_done + 1 WHERE app_id = ? AND id = ?",
			toDB(p.At), add.sent, add.failed, add.canceled, add.pushFailed, ref.AppID, ref.BatchID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("batch %q: %w", ref.BatchID, store.ErrNotFound)
		}
		after, err = s.readBatch(ctx, tx, ref.AppID, ref.BatchID)
		return err
	})
	if err != nil {
		return nil, s.fail(ctx, fmt.Sprintf("%s: batch %q chunk %d", op, ref.BatchID, ref.No), err)
	}
	return after, nil
}

// counts are what a chunk's outcomes add to its batch's counters.
type counts struct{ sent, failed, canceled, pushFailed int }

// CheckpointChunk implements store.Batches: the outcomes so far
// go into the chunk's outcomes column while it stays not done.
func (s *Store) CheckpointChunk(ctx context.Context, p *store.CheckpointChunkParams) error {
	const op = "checkpoint chunk"
	if err := begin(ctx, op); err != nil {
		return err
	}
	ref := p.Ref
	if unstorable(ref.AppID, ref.BatchID) {
		return fmt.Errorf("bunstore: %s: batch %q chunk %d: %w", op, ref.BatchID, ref.No, store.ErrNotFound)
	}
	res, err := s.db.ExecContext(ctx, "UPDATE "+s.chunks+" SET outcomes = ? WHERE app_id = ? AND batch_id = ? AND chunk_no = ? AND done = "+s.falseLit()+" AND size = ?",
		encodeOutcomes(p.Outcomes), ref.AppID, ref.BatchID, ref.No, len(p.Outcomes))
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			err = s.whyNotCompleted(ctx, s.db, ref, len(p.Outcomes))
		}
	}
	if err != nil {
		return s.fail(ctx, fmt.Sprintf("%s: batch %q chunk %d", op, ref.BatchID, ref.No), err)
	}
	return nil
}

// whyNotCompleted explains an UPDATE of a chunk that matched no row.
func (s *Store) whyNotCompleted(ctx context.Context, tx bun.IConn, ref store.ChunkRef, outcomes int) error {
	var done bool
	var size int
	err := tx.QueryRowContext(ctx, "SELECT done, size FROM "+s.chunks+" WHERE app_id = ? AND batch_id = ? AND chunk_no = ?",
		ref.AppID, ref.BatchID, ref.No).Scan(&done, &size)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.ErrNotFound
	case err != nil:
		return err
	case done:
		return fmt.Errorf("already done: %w", store.ErrConflict)
	case size != outcomes:
		return fmt.Errorf("%d outcomes for %d recipients", outcomes, size)
	default:
		// Not reachable while the row is locked; say so rather than guess.
		return errors.New("the chunk changed while it was being completed")
	}
}

// Backlog implements store.Batches: one aggregate over the pending
// chunks' partial index (done = false, by not_before).
func (s *Store) Backlog(ctx context.Context, p *store.BacklogParams) ([]store.AppBacklog, error) {
	const op = "backlog"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, "SELECT app_id, COUNT(*), COALESCE(SUM(size), 0) FROM "+s.chunks+
		" WHERE done = "+s.falseLit()+" AND not_before <= ? AND (started_at IS NOT NULL OR paused = "+s.falseLit()+") GROUP BY app_id", toDB(p.DueBefore))
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	defer rows.Close()
	out := []store.AppBacklog{}
	for rows.Next() {
		var b store.AppBacklog
		if err := rows.Scan(&b.AppID, &b.Chunks, &b.Recipients); err != nil {
			return nil, s.fail(ctx, op, err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// PendingChunks implements store.Batches, oldest NotBefore first (then by
// batch ID and chunk number, as memstore). Limit < 0 means no limit.
//
// It is two queries, each in the chunks_pending index's order: the due
// chunks not started (a range of the index: not_before <= ?), and the
// started chunks whose lease ended; their results are merged here. One
// query with an OR of the two reads neither as a range: PostgreSQL then
// fetches every pending chunk and sorts them before its LIMIT.
func (s *Store) PendingChunks(ctx context.Context, p *store.PendingChunksParams) ([]store.Chunk, error) {
	const op = "pending chunks"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	if p.Limit == 0 {
		return []store.Chunk{}, nil
	}
	const cols = "SELECT app_id, batch_id, chunk_no, start_index, not_before, started_at, attempts, lease_until FROM "
	const order = " ORDER BY not_before, batch_id, chunk_no, app_id"
	due, err := s.pendingChunks(ctx, cols+s.chunks+" WHERE done = "+s.falseLit()+" AND not_before <= ? AND started_at IS NULL AND paused = "+s.falseLit()+order,
		toDB(p.DueBefore), p.Limit)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	expired, err := s.pendingChunks(ctx, cols+s.chunks+" WHERE done = "+s.falseLit()+" AND started_at IS NOT NULL AND (lease_until IS NULL OR lease_until < ?)"+order,
		toDB(p.LeaseExpiredBefore), p.Limit)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	out := make([]store.Chunk, 0, len(due)+len(expired))
	for len(due) > 0 || len(expired) > 0 {
		if len(expired) == 0 || (len(due) > 0 && pendingBefore(&due[0], &expired[0])) {
			out, due = append(out, due[0]), due[1:]
		} else {
			out, expired = append(out, expired[0]), expired[1:]
		}
	}
	if p.Limit > 0 && len(out) > p.Limit {
		out = out[:p.Limit]
	}
	return out, nil
}

// pendingBefore is PendingChunks' ORDER BY.
func pendingBefore(a, b *store.Chunk) bool {
	if !a.NotBefore.Equal(b.NotBefore) {
		return a.NotBefore.Before(b.NotBefore)
	}
	if a.BatchID != b.BatchID {
		return a.BatchID < b.BatchID
	}
	if a.No != b.No {
		return a.No < b.No
	}
	return a.AppID < b.AppID
}

// pendingChunks runs one of PendingChunks' queries.
func (s *Store) pendingChunks(ctx context.Context, q string, at any, limit int) ([]store.Chunk, error) {
	q, args := limited(q, []any{at}, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Chunk
	for rows.Next() {
		var c store.Chunk
		var notBefore, started, lease dbTime
		if err := rows.Scan(&c.AppID, &c.BatchID, &c.No, &c.Start, &notBefore, &started, &c.Attempts, &lease); err != nil {
			return nil, err
		}
		c.NotBefore, c.StartedAt, c.LeaseUntil = notBefore.t, started.t, lease.t
		out = append(out, c)
	}
	return out, rows.Err()
}

// limited adds a LIMIT of limit to q and its arguments; limit < 0 means
// no limit (0 is the caller's to answer without a query).
func limited(q string, args []any, limit int) (string, []any) {
	if limit > 0 {
		return q + " LIMIT ?", append(args, limit)
	}
	return q, args
}

// ClaimDoneNotifications implements store.Batches: the
// candidates are read, then each is claimed by an UPDATE whose condition
// repeats the query's, so of concurrent claimers exactly one changes the
// row.
func (s *Store) ClaimDoneNotifications(ctx context.Context, p *store.ClaimDoneNotificationsParams) ([]*store.Batch, error) {
	const op = "claim done notifications"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	out := []*store.Batch{}
	if p.Limit == 0 || (p.BatchID != "" && unstorable(p.AppID, p.BatchID)) {
		return out, nil
	}
	const open = " notified_at IS NULL AND finished_at IS NOT NULL AND finished_at <= ? AND (notify_until IS NULL OR notify_until < ?)"
	var refs []store.ChunkRef // AppID and BatchID only
	if p.BatchID != "" {
		refs = []store.ChunkRef{{AppID: p.AppID, BatchID: p.BatchID}}
	} else {
		q, args := limited("SELECT app_id, id FROM "+s.batches+" WHERE"+open+" ORDER BY finished_at, id, app_id", []any{toDB(p.FinishedBefore), toDB(p.At)}, p.Limit)
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, s.fail(ctx, op, err)
		}
		for rows.Next() {
			var r store.ChunkRef
			if err := rows.Scan(&r.AppID, &r.BatchID); err != nil {
				rows.Close()
				return nil, s.fail(ctx, op, err)
			}
			refs = append(refs, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, s.fail(ctx, op, err)
		}
	}
	for _, r := range refs {
		res, err := s.db.ExecContext(ctx, "UPDATE "+s.batches+" SET notify_until = ? WHERE app_id = ? AND id = ? AND"+open,
			toDB(p.Until), r.AppID, r.BatchID, toDB(p.FinishedBefore), toDB(p.At))
		if err != nil {
			return nil, s.fail(ctx, op, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return nil, s.fail(ctx, op, err)
		} else if n == 0 {
			continue // another claimer was first, or not finished yet
		}
		b, err := s.readBatch(ctx, s.db, r.AppID, r.BatchID)
		if err != nil {
			return nil, s.fail(ctx, op, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// MarkDoneNotified implements store.Batches.
func (s *Store) MarkDoneNotified(ctx context.Context, p *store.MarkDoneNotifiedParams) error {
	app, id, at := p.AppID, p.BatchID, p.At
	const op = "mark done notified"
	if err := begin(ctx, op); err != nil {
		return err
	}
	if unstorable(app, id) {
		return fmt.Errorf("bunstore: %s %q: %w", op, id, store.ErrNotFound)
	}
	res, err := s.db.ExecContext(ctx, "UPDATE "+s.batches+" SET notified_at = COALESCE(notified_at, ?) WHERE app_id = ? AND id = ?", toDB(at), app, id)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			// MySQL counts changed rows only: an already marked batch
			// lands here too.
			_, err = s.readBatch(ctx, s.db, app, id)
		}
	}
	return s.fail(ctx, op, err)
}

// PruneBatches implements store.Batches in one transaction: the oldest
// prunable batches by the batches_finished index, then their chunks by
// the chunks' primary key, then the batch rows, app by app. Concurrent
// calls that pick the same batches wait on their row locks and delete
// nothing twice; only what this call deleted is counted. A batch's reads
// can be as many as its recipients: those of the batches picked are
// deleted first, before the transaction, readsSlice para indexes a
// statement (pruneReads), so that the transaction deletes only the few
// recorded in between.
func (s *Store) PruneBatches(ctx context.Context, p *store.PruneBatchesParams) (int, error) {
	const op = "prune batches"
	if err := begin(ctx, op); err != nil {
		return 0, err
	}
	if p.Limit <= 0 {
		return 0, nil
	}
	const prunable = " WHERE finished_at IS NOT NULL AND finished_at < ? AND notified_at IS NOT NULL AND (recalled_at IS NULL OR sent = 0) ORDER BY finished_at, id"
	if err := s.pruneReads(ctx, prunable, p); err != nil {
		return 0, s.fail(ctx, op, err)
	}
	pruned := 0
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		q, args := limited("SELECT app_id, id FROM "+s.batches+prunable, []any{toDB(p.FinishedBefore)}, p.Limit)
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		byApp := map[string][]string{}
		for rows.Next() {
			var app, id string
			if err := rows.Scan(&app, &id); err != nil {
				rows.Close()
				return err
			}
			byApp[app] = append(byApp[app], id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// Apps in one order, so that concurrent prunes take their row
		// locks in the same order and cannot deadlock.
		for _, app := range slices.Sorted(maps.Keys(byApp)) {
			ids := byApp[app]
			if _, err := tx.ExecContext(ctx, "DELETE FROM "+s.chunks+" WHERE app_id = ? AND batch_id IN (?)", app, bun.List(ids)); err != nil {
				return fmt.Errorf("delete chunks: %w", err)
			}
			// After the chunks: a RecordReads waiting on a chunk's lock
			// then finds it gone and adds no read behind this delete.
			if _, err := tx.ExecContext(ctx, "DELETE FROM "+s.reads+" WHERE app_id = ? AND batch_id IN (?)", app, bun.List(ids)); err != nil {
				return fmt.Errorf("delete reads: %w", err)
			}
			res, err := tx.ExecContext(ctx, "DELETE FROM "+s.batches+" WHERE app_id = ? AND id IN (?)", app, bun.List(ids))
			if err != nil {
				return fmt.Errorf("delete batches: %w", err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			pruned += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return pruned, nil
}

// readsSlice is how many para indexes' reads one statement of
// pruneReads deletes at most.
const readsSlice = 2000

// pruneReads deletes the reads of the batches PruneBatches is about to
// pick (prunable is its condition and order), readsSlice para indexes a
// statement, each committed on its own: a batch of 10,000 read
// recipients is five short deletes, not one long one inside the prune's
// transaction. Only batches with reads are visited (their chunks'
// read_count). A batch the transaction then keeps after all (recalled in
// between, its recall not done) keeps its read counts without the
// reads' times until it is pruned.
func (s *Store) pruneReads(ctx context.Context, prunable string, p *store.PruneBatchesParams) error {
	q, args := limited("SELECT app_id, id, count FROM "+s.batches+prunable, []any{toDB(p.FinishedBefore)}, p.Limit)
	// One query: the batches PruneBatches picks, those with reads.
	q = "SELECT x.app_id, x.id, x.count FROM (" + q + ") x WHERE EXISTS (SELECT 1 FROM " + s.chunks +
		" c WHERE c.app_id = x.app_id AND c.batch_id = x.id AND c.read_count > 0)"
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	type cand struct {
		app, id string
		count   int
	}
	var cands []cand
	for rows.Next() {
		var c cand
		if err := rows.Scan(&c.app, &c.id, &c.count); err != nil {
			rows.Close()
			return err
		}
		cands = append(cands, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, c := range cands {
		for lo := 0; lo < c.count; lo += readsSlice {
			if _, err := s.db.ExecContext(ctx, "DELETE FROM "+s.reads+" WHERE app_id = ? AND batch_id = ? AND idx >= ? AND idx < ?", c.app, c.id, lo, lo+readsSlice); err != nil {
				return fmt.Errorf("delete reads: %w", err)
			}
		}
	}
	return nil
}

// ListBatches implements store.Batches: one query on the
// (app_id, created_at, id) index, the status filter written as conditions
// on the counters and times that store.Batch.Status reads.
func (s *Store) ListBatches(ctx context.Context, p *store.ListBatchesParams) ([]*store.Batch, error) {
	const op = "list batches"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	out := []*store.Batch{}
	if p.Limit == 0 || unstorable(p.AppID) || (p.AfterID != "" && unstorable(p.AfterID)) {
		return out, nil
	}
	where := []string{"app_id = ?"}
	args := []any{p.AppID}
	if p.CreatedBy != "" {
		where, args = append(where, "created_by = ?"), append(args, p.CreatedBy)
	}
	if !p.CreatedAfter.IsZero() {
		where, args = append(where, "created_at > ?"), append(args, toDB(p.CreatedAfter))
	}
	if !p.CreatedBefore.IsZero() {
		where, args = append(where, "created_at < ?"), append(args, toDB(p.CreatedBefore))
	}
	if p.AfterID != "" {
		// The leading created_at <= ? is implied by the OR; it is there
		// for the planner, which cannot take a range of the index from an
		// OR: without it PostgreSQL reads the app's whole index from the
		// newest batch and filters (measured: 0.5 s at 1M batches).
		where = append(where, "created_at <= ? AND (created_at < ? OR (created_at = ? AND id < ?))")
		args = append(args, toDB(p.AfterCreatedAt), toDB(p.AfterCreatedAt), toDB(p.AfterCreatedAt), p.AfterID)
	}
	if len(p.Statuses) > 0 {
		var ors []string
		now := toDB(p.Now)
		for _, st := range p.Statuses {
			switch st {
			case store.StatusRecalled:
				ors = append(ors, "recalled_at IS NOT NULL")
			case store.StatusCanceled:
				ors = append(ors, "(recalled_at IS NULL AND canceled_at IS NOT NULL)")
			case store.StatusCompleted:
				ors = append(ors, "(recalled_at IS NULL AND canceled_at IS NULL AND chunks_done >= chunks AND failed = 0)")
			case store.StatusCompletedWithErrors:
				ors = append(ors, "(recalled_at IS NULL AND canceled_at IS NULL AND chunks_done >= chunks AND failed > 0)")
			case store.StatusPaused:
				ors = append(ors, "(recalled_at IS NULL AND canceled_at IS NULL AND chunks_done < chunks AND paused_at IS NOT NULL)")
			case store.StatusRunning:
				ors = append(ors, "(recalled_at IS NULL AND canceled_at IS NULL AND chunks_done < chunks AND paused_at IS NULL AND chunks_done > 0)")
			case store.StatusScheduled:
				ors, args = append(ors, "(recalled_at IS NULL AND canceled_at IS NULL AND chunks_done = 0 AND chunks_done < chunks AND paused_at IS NULL AND send_at IS NOT NULL AND send_at > ?)"), append(args, now)
			case store.StatusQueued:
				ors, args = append(ors, "(recalled_at IS NULL AND canceled_at IS NULL AND chunks_done = 0 AND chunks_done < chunks AND paused_at IS NULL AND (send_at IS NULL OR send_at <= ?))"), append(args, now)
			default:
				return nil, fmt.Errorf("bunstore: %s: unknown status %q", op, st)
			}
		}
		where = append(where, "("+strings.Join(ors, " OR ")+")")
	}
	cols := strings.Replace(batchReadColumns, "payload, ", "", 1)
	q, args := limited("SELECT id, "+cols+" FROM "+s.batches+" WHERE "+strings.Join(where, " AND ")+" ORDER BY created_at DESC, id DESC", args, p.Limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	defer rows.Close()
	for rows.Next() {
		bs := newBatchScan(p.AppID, "")
		dest := bs.dest()
		// Without payload (the fourth of batchReadColumns).
		dest = append([]any{&bs.b.ID}, append(dest[:3:3], dest[4:]...)...)
		if err := rows.Scan(dest...); err != nil {
			return nil, s.fail(ctx, op, err)
		}
		out = append(out, bs.batch())
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}
