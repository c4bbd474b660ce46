package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/chatbatch/chatbatch/store"
)

// keptShape is how the kept contender (runKept) writes a chunk's
// bookkeeping (-kept-shape). The shapes other than the store's answer
// one question on SQLite and MySQL: would the chunks' bookkeeping cost
// less in another shape than bunstore's — so much less that (c) could
// reach the bare write? They are written out by the bench in bunstore's
// own statements, so that only the shape changes.
type keptShape string

const (
	// keptStore is bunstore's StartChunk and CompleteChunk: per chunk,
	// the claim, the messages and the outcomes, three transactions.
	keptStore keptShape = "store"
	// keptOneTx is the same statements as the store's (its claim with
	// the read of the chunk and its batch, the messages, its outcomes
	// and the batch's counters with their read) in one transaction per
	// chunk: what folding the bookkeeping into the messages' write saves.
	keptOneTx keptShape = "one-tx"
	// keptSmallRows claims the chunk in a row of its own without the
	// recipients (an UPDATE of a few columns instead of the chunk's row,
	// which an UPDATE on SQLite rewrites whole, recipients and all) and
	// inserts the outcomes into a table of their own; the chunk and its
	// batch are read and the batch's counters updated as the store does.
	// Those two tables have their primary keys only, no index of pending
	// chunks: a shape cheaper than any a store could keep.
	keptSmallRows keptShape = "small-rows"
	// keptNone writes the messages alone, the plain INSERT's statements
	// run in kept's place: a control of the method, whose ratio to the
	// plain INSERT should be 1.
	keptNone keptShape = "none"
)

// label says what the kept contender does in shape s, for its row.
func (s keptShape) label() string {
	switch s {
	case keptOneTx:
		return "the messages' write with the store's statements of each chunk's start and completion, all in one transaction a chunk (-kept-shape one-tx)"
	case keptSmallRows:
		return "the messages' write with each chunk's claim and outcomes in rows of their own, without the recipients (-kept-shape small-rows)"
	case keptNone:
		return "the messages' write alone in kept's place (-kept-shape none: a control, 1× when the method is fair)"
	}
	return "the messages' write (pgx CopyFrom on PostgreSQL) with chatbatch's start and completion of each chunk (its StartChunk and CompleteChunk), nothing else"
}

// short names the kept contender in shape s, for chatbatch's row against it.
func (s keptShape) short() string {
	if s == keptStore {
		return "the write with the chunks' bookkeeping"
	}
	return "the kept contender (-kept-shape " + string(s) + ")"
}

// keptShapes are the values -kept-shape takes, the default first.
var keptShapes = []keptShape{keptStore, keptOneTx, keptSmallRows, keptNone}

// execer is a *sql.DB or a *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// runKeptShape is runKept in a shape other than the store's, on SQLite
// or MySQL (parseFlags refuses the others with -postgres). The batches
// and their chunks are stored; work is their units.
func (h *harness) runKeptShape(ctx context.Context, bbs []baselineBatch, work []keptUnit) (float64, error) {
	if h.d.name == "postgres" {
		return 0, fmt.Errorf("kept: -kept-shape %s is for SQLite and MySQL", h.keptShape)
	}
	chunks, batches, messages := h.baseTable("chunks"), h.baseTable("batches"), h.baseTable("messages")
	claims, outcomesTable := h.baseTable("kept_claims"), h.baseTable("kept_outcomes")
	var outcomes string
	if h.keptShape != keptNone {
		var err error
		if outcomes, err = h.keptOutcomes(ctx, work[0]); err != nil {
			return 0, err
		}
	}
	if h.keptShape == keptSmallRows {
		// The claims start as the chunks' rows do, without the recipients.
		setup := []string{
			"CREATE TABLE " + claims + " AS SELECT app_id, batch_id, chunk_no, started_at, attempts, lease_until, done, paused FROM " + chunks + " WHERE done = 0",
			"CREATE UNIQUE INDEX " + claims + "_key ON " + claims + " (app_id, batch_id, chunk_no)",
			"CREATE TABLE " + outcomesTable + " AS SELECT app_id, batch_id, chunk_no, outcomes FROM " + chunks + " WHERE 1 = 0",
			"CREATE UNIQUE INDEX " + outcomesTable + "_key ON " + outcomesTable + " (app_id, batch_id, chunk_no)",
		}
		defer func() {
			for _, t := range []string{claims, outcomesTable} {
				_, _ = h.d.sql.ExecContext(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS "+t)
			}
		}()
		for _, q := range setup {
			if _, err := h.d.sql.ExecContext(ctx, q); err != nil {
				return 0, fmt.Errorf("kept: %s: %w", q, err)
			}
		}
	}
	at := h.keptTime
	// The store's statements (bunstore's StartChunk, readStarted,
	// CompleteChunk and readBatch on SQLite and MySQL), the chunk's row
	// claimed and completed; small-rows swaps the two writes of it.
	claim := "UPDATE " + chunks + " SET started_at = COALESCE(started_at, ?), attempts = attempts + 1, lease_until = ?" +
		" WHERE app_id = ? AND batch_id = ? AND chunk_no = ? AND done = 0 AND (started_at IS NOT NULL OR paused = 0)"
	readStarted := "SELECT c.*, b.* FROM " + chunks + " c JOIN " + batches + " b ON b.app_id = c.app_id AND b.id = c.batch_id WHERE c.app_id = ? AND c.batch_id = ? AND c.chunk_no = ?"
	complete := "UPDATE " + chunks + " SET done = 1, outcomes = ? WHERE app_id = ? AND batch_id = ? AND chunk_no = ? AND done = 0 AND size = ?"
	count := "UPDATE " + batches + " SET finished_at = CASE WHEN chunks_done + 1 = chunks THEN ? ELSE finished_at END, " +
		"sent = sent + ?, chunks_done = chunks_done + 1 WHERE app_id = ? AND id = ?"
	readBatch := "SELECT * FROM " + batches + " WHERE app_id = ? AND id = ?"
	if h.keptShape == keptSmallRows {
		claim = strings.Replace(claim, chunks, claims, 1)
		complete = "UPDATE " + claims + " SET done = 1 WHERE app_id = ? AND batch_id = ? AND chunk_no = ? AND done = 0"
	}
	start := func(x execer, u keptUnit) error {
		now := at(time.Now())
		if err := keptExec(ctx, x, claim, now, now, u.ref.AppID, u.ref.BatchID, u.ref.No); err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		return keptRead(ctx, x, readStarted, u.ref.AppID, u.ref.BatchID, u.ref.No)
	}
	// The messages' statements are built before the clock, so that one-tx
	// does not build them while it holds SQLite's write lock.
	writes := map[store.ChunkRef][]statement{}
	for _, u := range work {
		writes[u.ref] = h.d.insertStatements(messages, messageColumnList, u.messages, stmtRows)
	}
	write := func(x execer, u keptUnit) error {
		for _, st := range writes[u.ref] {
			if _, err := x.ExecContext(ctx, st.query, st.args...); err != nil {
				return fmt.Errorf("write: %w", err)
			}
		}
		return nil
	}
	finish := func(x execer, u keptUnit) error {
		var err error
		if h.keptShape == keptSmallRows {
			if err = keptExec(ctx, x, complete, u.ref.AppID, u.ref.BatchID, u.ref.No); err == nil {
				_, err = x.ExecContext(ctx, "INSERT INTO "+outcomesTable+" (app_id, batch_id, chunk_no, outcomes) VALUES (?, ?, ?, ?)",
					u.ref.AppID, u.ref.BatchID, u.ref.No, outcomes)
			}
		} else {
			err = keptExec(ctx, x, complete, outcomes, u.ref.AppID, u.ref.BatchID, u.ref.No, len(u.outcomes))
		}
		if err == nil {
			err = keptExec(ctx, x, count, at(time.Now()), len(u.outcomes), u.ref.AppID, u.ref.BatchID)
		}
		if err == nil {
			err = keptRead(ctx, x, readBatch, u.ref.AppID, u.ref.BatchID)
		}
		if err != nil {
			return fmt.Errorf("complete: %w", err)
		}
		return nil
	}
	// inTx runs steps in one transaction.
	inTx := func(u keptUnit, steps ...func(execer, keptUnit) error) error {
		tx, err := h.d.sql.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, step := range steps {
			if err := step(tx, u); err != nil {
				_ = tx.Rollback()
				return err
			}
		}
		return tx.Commit()
	}
	run := func() error {
		return eachUnit(len(work), min(h.conc, len(work)), func(_, k int) error {
			u := work[k]
			switch h.keptShape {
			case keptNone:
				return write(h.d.sql, u)
			case keptOneTx:
				return inTx(u, start, write, finish)
			default: // small-rows: the store's three transactions
				if err := start(h.d.sql, u); err != nil {
					return err
				}
				if err := write(h.d.sql, u); err != nil {
					return err
				}
				return inTx(u, finish)
			}
		})
	}
	rate, err := h.timeBaseline(ctx, "kept "+string(h.keptShape), bbs, run)
	if err != nil || h.keptShape == keptNone {
		return rate, err
	}
	if h.keptShape == keptSmallRows {
		var done, stored int
		if err := h.d.sql.QueryRowContext(ctx, "SELECT (SELECT COUNT(*) FROM "+claims+" WHERE done = 1), (SELECT COUNT(*) FROM "+outcomesTable+")").Scan(&done, &stored); err != nil {
			return 0, fmt.Errorf("kept: %w", err)
		}
		if done != len(work) || stored != len(work) {
			return 0, fmt.Errorf("kept: %d chunks claimed done and %d outcomes stored, want %d", done, stored, len(work))
		}
	}
	return rate, h.checkKeptBatches(ctx, bbs)
}

// keptOutcomes is the outcomes text bunstore stores for u: a batch of
// u's chunk alone, stored, started and completed through the store
// before the clock, and its outcomes column read back. Every unit of a
// shape writes it (their texts differ only in the batch IDs within).
func (h *harness) keptOutcomes(ctx context.Context, u keptUnit) (string, error) {
	c := u.chunk
	c.BatchID, c.No, c.Start = "kept-outcomes-"+strings.ToLower(rand.Text()[:10]), 0, 0
	now := time.Now().UTC()
	b := &store.Batch{ID: c.BatchID, AppID: c.AppID, Sender: sender, Count: len(c.Recipients), Chunks: 1, Payload: []byte(`{}`), CreatedAt: now}
	if err := h.createKeptBatch(ctx, keptBatch{batch: b, chunks: []store.Chunk{c}}); err != nil {
		return "", fmt.Errorf("outcomes: %w", err)
	}
	if _, _, err := h.base.StartChunk(ctx, &store.StartChunkParams{Ref: c.ChunkRef, At: now, LeaseUntil: now.Add(time.Minute)}); err != nil {
		return "", fmt.Errorf("kept: outcomes: %w", err)
	}
	if _, err := h.base.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: c.ChunkRef, Outcomes: u.outcomes, At: now}); err != nil {
		return "", fmt.Errorf("kept: outcomes: %w", err)
	}
	var text string
	err := h.d.sql.QueryRowContext(ctx, "SELECT outcomes FROM "+h.baseTable("chunks")+" WHERE app_id = ? AND batch_id = ? AND chunk_no = 0", c.AppID, c.BatchID).Scan(&text)
	if err == nil && text == "" {
		err = fmt.Errorf("batch %s: no outcomes stored", c.BatchID)
	}
	if err != nil {
		return "", fmt.Errorf("kept: outcomes: %w", err)
	}
	return text, nil
}

// keptTime is a time as bunstore stores it in a statement's argument:
// SQLite's fixed-width UTC text, MySQL's DATETIME(6) from a time.Time.
func (h *harness) keptTime(t time.Time) any {
	if h.d.name == "sqlite" {
		return t.UTC().Format("2006-01-02 15:04:05.000000")
	}
	return t.UTC().Truncate(time.Microsecond)
}

// keptExec runs an UPDATE that must change exactly one row.
func keptExec(ctx context.Context, x execer, query string, args ...any) error {
	res, err := x.ExecContext(ctx, query, args...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return fmt.Errorf("%.50s…: %d rows, want 1", query, n)
	}
	return nil
}

// keptRead runs a SELECT of one row and reads it whole (database/sql
// converts every column of a row it steps to), as a store's scan would.
func keptRead(ctx context.Context, x execer, query string, args ...any) error {
	rows, err := x.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("%.50s…: %d rows, want 1", query, n)
	}
	return nil
}
