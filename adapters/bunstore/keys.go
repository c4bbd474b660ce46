package bunstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/chatbatch/chatbatch/store"
)

// DirectRoomID implements store.DirectRoomNamer: the ID DirectRoom uses
// for the pair, without creating the room.
func (s *Store) DirectRoomID(a, b string) string { return s.directRoomID(a, b) }

// ClaimIdempotencyKey implements store.Batches in one transaction:
// an INSERT that does nothing if the key exists, and if it did nothing,
// the existing row read under its lock and either replaced (expired, or
// an in-progress claim gone stale) or returned. Concurrent claimers of a
// new key queue on the primary key; of an existing one, on its row lock:
// exactly one wins.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, p *store.ClaimIdempotencyKeyParams) (*store.IdempotencyRecord, error) {
	rec, staleBefore := p.Record, p.StaleBefore
	const op = "claim idempotency key"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	if unstorable(rec.AppID, rec.Key, rec.RequestHash) {
		return nil, fmt.Errorf("bunstore: %s: a value contains a NUL byte or invalid UTF-8", op)
	}
	var existing *store.IdempotencyRecord
	err := s.inAcceptTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.ExecContext(ctx, s.insertIgnore(s.keys, "app_id, idem_key, request_hash, created_at, expires_at", "(?, ?, ?, ?, ?)"),
			rec.AppID, rec.Key, rec.RequestHash, toDB(rec.CreatedAt), toDB(rec.ExpiresAt))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			return nil
		}
		old, err := s.readKey(ctx, tx, rec.AppID, rec.Key, true)
		if err != nil {
			return err
		}
		live := old.ExpiresAt.After(rec.CreatedAt) && (old.BatchID != "" || !old.CreatedAt.Before(staleBefore))
		if live {
			existing = old
			return fmt.Errorf("idempotency key in use: %w", store.ErrConflict)
		}
		_, err = tx.ExecContext(ctx, "UPDATE "+s.keys+" SET request_hash = ?, batch_id = NULL, count = 0, created_at = ?, expires_at = ? WHERE app_id = ? AND idem_key = ?",
			rec.RequestHash, toDB(rec.CreatedAt), toDB(rec.ExpiresAt), rec.AppID, rec.Key)
		return err
	})
	if err != nil {
		return existing, s.fail(ctx, op, err)
	}
	return nil, nil
}

// readKey reads one record, locking its row when lock is set (PostgreSQL
// and MySQL; an SQLite transaction holds the write lock already).
func (s *Store) readKey(ctx context.Context, db bun.IConn, app, key string, lock bool) (*store.IdempotencyRecord, error) {
	q := "SELECT request_hash, batch_id, count, created_at, expires_at FROM " + s.keys + " WHERE app_id = ? AND idem_key = ?"
	if lock && s.kind != dialect.SQLite {
		q += " FOR UPDATE"
	}
	r := &store.IdempotencyRecord{AppID: app, Key: key}
	var batchID sql.NullString
	var created, expires dbTime
	err := db.QueryRowContext(ctx, q, app, key).Scan(&r.RequestHash, &batchID, &r.Count, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	r.BatchID, r.CreatedAt, r.ExpiresAt = batchID.String, created.t, expires.t
	return r, nil
}

// completeKey records b as the batch of its idempotency key, inside
// CreateBatch's transaction: the key must be claimed and not used yet.
func (s *Store) completeKey(ctx context.Context, tx bun.Tx, b *store.Batch) error {
	if unstorable(b.IdempotencyKey) {
		return fmt.Errorf("idempotency key contains a NUL byte or invalid UTF-8: %w", store.ErrConflict)
	}
	res, err := tx.ExecContext(ctx, "UPDATE "+s.keys+" SET batch_id = ?, count = ? WHERE app_id = ? AND idem_key = ? AND batch_id IS NULL",
		b.ID, b.Count, b.AppID, b.IdempotencyKey)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return fmt.Errorf("idempotency key is not claimed or already used: %w", store.ErrConflict)
	}
	return nil
}

// ReleaseIdempotencyKey implements store.Batches.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, p *store.ReleaseIdempotencyKeyParams) error {
	app, key := p.AppID, p.Key
	const op = "release idempotency key"
	if err := begin(ctx, op); err != nil {
		return err
	}
	if unstorable(app, key) {
		return nil
	}
	_, err := s.db.ExecContext(ctx, "DELETE FROM "+s.keys+" WHERE app_id = ? AND idem_key = ? AND batch_id IS NULL", app, key)
	return s.fail(ctx, op, err)
}

// DeleteExpiredIdempotencyKeys implements store.Batches. MySQL
// and MariaDB refuse LIMIT in an IN subquery but allow it on a one-table
// DELETE; PostgreSQL has no DELETE … LIMIT, and SQLite has it only in some
// builds: they delete by primary key from a limited subquery.
func (s *Store) DeleteExpiredIdempotencyKeys(ctx context.Context, p *store.DeleteExpiredIdempotencyKeysParams) (int, error) {
	before, limit := p.Before, p.Limit
	const op = "delete expired idempotency keys"
	if err := begin(ctx, op); err != nil {
		return 0, err
	}
	if limit <= 0 {
		return 0, nil
	}
	q := "DELETE FROM " + s.keys + " WHERE (app_id, idem_key) IN (SELECT app_id, idem_key FROM " + s.keys + " WHERE expires_at < ? ORDER BY expires_at LIMIT ?)"
	if s.kind == dialect.MySQL {
		q = "DELETE FROM " + s.keys + " WHERE expires_at < ? ORDER BY expires_at LIMIT ?"
	}
	res, err := s.db.ExecContext(ctx, q, toDB(before), limit)
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	n, err := res.RowsAffected()
	return int(n), s.fail(ctx, op, err)
}
