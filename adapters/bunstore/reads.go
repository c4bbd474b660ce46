package bunstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/chatbatch/chatbatch/store"
)

// RecordReads implements store.Batches in one transaction, chunk by
// chunk in (batch, chunk) order, so that concurrent calls lock chunks in
// one order: the chunk's row is locked (a chunk pruned meanwhile is
// skipped), its reads inserted with the primary key skipping the
// recipients read before (INSERT … ON CONFLICT DO NOTHING, MySQL's ON
// DUPLICATE KEY UPDATE with no change), and the chunk's read_count moved
// by the rows inserted. The batch's row is never written: reads of one
// batch spread over its chunks' rows. On PostgreSQL through pgx it is one
// statement with array parameters (pgRecordReads).
func (s *Store) RecordReads(ctx context.Context, p *store.RecordReadsParams) (int, error) {
	const op = "record reads"
	if err := begin(ctx, op); err != nil {
		return 0, err
	}
	if len(p.Reads) == 0 || unstorable(p.AppID) {
		return 0, nil
	}
	type key struct {
		batch string
		chunk int
	}
	groups := map[key][]store.Read{}
	seen := map[key]map[int]bool{}
	for _, r := range p.Reads {
		if unstorable(r.BatchID) {
			continue
		}
		k := key{r.BatchID, r.Chunk}
		if seen[k] == nil {
			seen[k] = map[int]bool{}
		}
		if seen[k][r.Index] {
			continue // the first of the call wins
		}
		seen[k][r.Index] = true
		groups[k] = append(groups[k], r)
	}
	keys := make([]key, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.batch, b.batch), cmp.Compare(a.chunk, b.chunk)) })
	if s.pgx {
		var all []store.Read
		for _, k := range keys {
			all = append(all, groups[k]...)
		}
		n, err := s.pgRecordReads(ctx, p.AppID, all)
		if err != nil {
			return 0, s.fail(ctx, op, err)
		}
		return n, nil
	}
	forUpdate := " FOR UPDATE"
	if s.kind == dialect.SQLite {
		forUpdate = ""
	}
	const cols = "app_id, batch_id, idx, read_at"
	recorded := 0
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		recorded = 0
		for _, k := range keys {
			var no int
			err := tx.QueryRowContext(ctx, "SELECT chunk_no FROM "+s.chunks+" WHERE app_id = ? AND batch_id = ? AND chunk_no = ?"+forUpdate,
				p.AppID, k.batch, k.chunk).Scan(&no)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			reads := groups[k]
			rows, sizes := make([]row, len(reads)), make([]int, len(reads))
			for i, r := range reads {
				rows[i] = row{p.AppID, k.batch, r.Index, toDB(r.At)}
				sizes[i] = 48 + len(p.AppID) + len(k.batch)
			}
			n := int64(0)
			for _, st := range bulkInserts(s, s.reads, cols, "(app_id, batch_id, idx)", rows, sizes) {
				res, err := tx.ExecContext(ctx, "?", st)
				if err != nil {
					return err
				}
				m, err := res.RowsAffected()
				if err != nil {
					return err
				}
				n += m
			}
			if n == 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, "UPDATE "+s.chunks+" SET read_count = read_count + ? WHERE app_id = ? AND batch_id = ? AND chunk_no = ?",
				n, p.AppID, k.batch, k.chunk); err != nil {
				return err
			}
			recorded += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return recorded, nil
}

// ReadCounts implements store.Batches: one sum of the chunks' read
// counts, a range of the chunks' primary key per batch.
func (s *Store) ReadCounts(ctx context.Context, p *store.ReadCountsParams) (map[string]int, error) {
	const op = "read counts"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	out := map[string]int{}
	var ids []string
	for _, id := range p.BatchIDs {
		if !unstorable(id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 || unstorable(p.AppID) {
		return out, nil
	}
	rows, err := s.db.QueryContext(ctx, "SELECT batch_id, SUM(read_count) FROM "+s.chunks+" WHERE app_id = ? AND batch_id IN (?) GROUP BY batch_id",
		p.AppID, bun.List(ids))
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, s.fail(ctx, op, err)
		}
		if n > 0 {
			out[id] = n
		}
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// ListReads implements store.Batches: a range of the reads' primary key.
func (s *Store) ListReads(ctx context.Context, p *store.ListReadsParams) ([]store.Read, error) {
	const op = "list reads"
	if err := begin(ctx, op); err != nil {
		return nil, err
	}
	out := []store.Read{}
	if unstorable(p.AppID, p.BatchID) || p.From >= p.To {
		return out, nil
	}
	rows, err := s.db.QueryContext(ctx, "SELECT idx, read_at FROM "+s.reads+" WHERE app_id = ? AND batch_id = ? AND idx >= ? AND idx < ? ORDER BY idx",
		p.AppID, p.BatchID, p.From, p.To)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	defer rows.Close()
	for rows.Next() {
		r := store.Read{BatchID: p.BatchID}
		var at dbTime
		if err := rows.Scan(&r.Index, &at); err != nil {
			return nil, s.fail(ctx, fmt.Sprintf("%s: batch %q", op, p.BatchID), err)
		}
		r.At = at.t
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}
