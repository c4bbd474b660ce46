package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

// The bookkeeping scenarios measure whether what chatbatch keeps of a
// batch stays small beside the messages it sends, and flat over time:
//
//   - bytes: the batches, chunks and idempotency-keys tables' size per
//     recipient after -backlog recipients of (a), against the message
//     rows' size per recipient;
//   - retention: -retention-cycles (two) cycles of sending -retention-recipients as 2,000
//     batches and pruning them through the library's own sweep
//     (Config.Retention), the sizes after each step, the sweep's time
//     per call, and that pruned batches answer 404 while their messages
//     stay;
//   - plans: the query plans of the store's list, sweep and
//     prune queries at growing numbers of finished batches.
//
// Each runs in a harness of its own (own table prefix), so that the
// tables hold only what the scenario wrote.

// bookkeeping is the size in bytes of the store's bookkeeping tables.
type bookkeeping struct{ batches, chunks, keys int64 }

func (s bookkeeping) total() int64 { return s.batches + s.chunks + s.keys }

func (s bookkeeping) String() string {
	return fmt.Sprintf("%s (batches %s, chunks %s, keys %s)", fmtSize(s.total()), fmtSize(s.batches), fmtSize(s.chunks), fmtSize(s.keys))
}

// fmtSize writes a size in bytes, KiB or MiB.
func fmtSize(n int64) string {
	switch {
	case n < 10*1024:
		return group(n) + " B"
	case n < 1<<20:
		return strconv.FormatFloat(float64(n)/1024, 'f', 1, 64) + " KiB"
	case n < 10<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 2, 64) + " MiB"
	default:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	}
}

// sizeMethod says how tableBytes measures, for the notes.
func (d *database) sizeMethod() string {
	switch d.name {
	case "postgres":
		return "pg_total_relation_size (heap, TOAST and indexes) after VACUUM ANALYZE"
	case "mysql":
		return "information_schema.TABLES DATA_LENGTH + INDEX_LENGTH after ANALYZE TABLE: whole 16 KiB InnoDB pages; deleted rows leave the count only once InnoDB's background purge has removed them, which may lag behind a prune"
	default:
		return "the dbstat virtual table: the pages of the table and its indexes (pages freed by deletes go to the file's free list and no longer count)"
	}
}

// tableBytes is the size of table with its indexes, after refreshing the
// database's own bookkeeping of it (see sizeMethod).
func (d *database) tableBytes(ctx context.Context, table string) (int64, error) {
	var n int64
	var err error
	switch d.name {
	case "postgres":
		if _, err = d.sql.ExecContext(ctx, "VACUUM ANALYZE "+table); err != nil {
			return 0, fmt.Errorf("vacuum %s: %w", table, err)
		}
		err = d.sql.QueryRowContext(ctx, "SELECT pg_total_relation_size($1::regclass)", table).Scan(&n)
	case "mysql":
		if err = d.analyze(ctx, table); err != nil {
			return 0, fmt.Errorf("analyze %s: %w", table, err)
		}
		err = d.sql.QueryRowContext(ctx, "SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?", table).Scan(&n)
	default:
		if err = d.analyze(ctx, table); err != nil {
			return 0, fmt.Errorf("analyze %s: %w", table, err)
		}
		err = d.sql.QueryRowContext(ctx, "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN (SELECT name FROM sqlite_master WHERE tbl_name = ?)", table).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", table, err)
	}
	return n, nil
}

// awaitPurge waits, on MySQL, until InnoDB's background purge has
// removed what deleted rows left (its history list is empty), at most a
// minute: only then do the pages of a prune leave DATA_LENGTH. It
// returns how long it waited.
func (d *database) awaitPurge(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	if d.name != "mysql" {
		return 0, nil
	}
	for {
		var n int64
		err := d.sql.QueryRowContext(ctx, "SELECT COUNT FROM information_schema.INNODB_METRICS WHERE NAME = 'trx_rseg_history_len'").Scan(&n)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, nil // a server without the counter: measure as it is
		}
		if err != nil {
			return 0, fmt.Errorf("InnoDB history list length: %w", err)
		}
		if n == 0 || time.Since(start) > time.Minute {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// bookkeepingSize measures the bookkeeping tables.
func (h *harness) bookkeepingSize(ctx context.Context) (bookkeeping, error) {
	var s bookkeeping
	for _, t := range []struct {
		name string
		n    *int64
	}{{"batches", &s.batches}, {"chunks", &s.chunks}, {"idempotency_keys", &s.keys}} {
		n, err := h.d.tableBytes(ctx, h.table(t.name))
		if err != nil {
			return s, err
		}
		*t.n = n
	}
	return s, nil
}

// sendAndVerify accepts p through the API with the worker stopped, runs
// the worker until every batch is done and verifies every batch.
func (h *harness) sendAndVerify(ctx context.Context, p plan) ([]acceptedBatch, error) {
	if err := h.stopWorker(); err != nil {
		return nil, err
	}
	bs, err := h.acceptPlan(ctx, p)
	if err != nil {
		return nil, err
	}
	h.startWorker()
	_, err = h.waitDone(ctx, bs)
	if stopErr := h.stopWorker(); err == nil {
		err = stopErr
	}
	if err != nil {
		return nil, err
	}
	return bs, h.verify(ctx, bs)
}

// freshHarness is a harness of its own for one scenario, with the
// sender and users userA(0..pool-1) with their rooms seeded and every
// table analyzed.
func (b *bench) freshHarness(ctx context.Context, d *database, tag string, pool int) (*harness, error) {
	h, err := newHarness(ctx, d, b.redis, b.o.concurrency, tag)
	if err != nil {
		return nil, err
	}
	h.idemKeys = true
	if err := h.seedPoolA(ctx, pool); err != nil {
		h.close(context.WithoutCancel(ctx), b.o.keep)
		return nil, fmt.Errorf("seed: %w", err)
	}
	for _, t := range h.st.Tables() {
		if err := d.analyze(ctx, t); err != nil {
			h.close(context.WithoutCancel(ctx), b.o.keep)
			return nil, fmt.Errorf("analyze %s: %w", t, err)
		}
	}
	return h, nil
}

// poolOf is the receivers recipients of (a) cycle through: enough that
// rooms vary, few enough to seed quickly.
func poolOf(recipients, limit int) int { return max(1, min(recipients, limit)) }

// bytesScenario sends -backlog recipients of (a) and compares the
// bookkeeping's bytes per recipient with the message rows'.
func (b *bench) bytesScenario(ctx context.Context, d *database) (err error) {
	o := b.o
	pool := poolOf(o.backlog, 10_000)
	h, err := b.freshHarness(ctx, d, "b", pool)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := h.close(context.WithoutCancel(ctx), o.keep); cerr != nil && err == nil {
			err = fmt.Errorf("clean up: %w", cerr)
		}
	}()
	p := splitPlan(o.backlog, o.recipients, func(i int) para { return para{receiver: userA(i % pool), n: i} })
	start := time.Now()
	bs, err := h.sendAndVerify(ctx, p)
	if err != nil {
		return err
	}
	size, err := h.bookkeepingSize(ctx)
	if err != nil {
		return err
	}
	msgs, err := d.tableBytes(ctx, h.table("messages"))
	if err != nil {
		return err
	}
	n := float64(o.backlog)
	b.logf("%s: bytes: %s recipients in %d batches sent and verified in %v; bookkeeping %s, messages %s",
		d.label(), group(int64(o.backlog)), len(bs), time.Since(start).Round(time.Millisecond), size, fmtSize(msgs))
	perB := func(x int64) string { return strconv.FormatFloat(float64(x)/n, 'f', 1, 64) + " B" }
	ratio := float64(size.total()) / float64(msgs)
	label := fmt.Sprintf("9 bookkeeping bytes per recipient (batches %s + chunks %s + idempotency keys %s) vs the message rows', %s recipients of (a) in %d batches",
		perB(size.batches), perB(size.chunks), perB(size.keys), group(int64(o.backlog)), len(bs))
	if d.name == "mysql" {
		label += " (InnoDB: whole 16 KiB pages)"
	}
	b.rows = append(b.rows, row{scenario: "bytes", label: label, db: d.label(),
		cb: perB(size.total()), base: perB(msgs), ratio: fmtPercent(ratio), target: "≤ 15 %", result: passFail(ratio <= 0.15)})
	return nil
}

func fmtPercent(x float64) string { return strconv.FormatFloat(100*x, 'f', 1, 64) + " %" }

// retentionBatches is how many batches each retention cycle sends.
const retentionBatches = 2000

// retention runs -retention-cycles cycles of: send -retention-recipients as 2,000
// batches and verify them; measure the bookkeeping; prune it with a
// second Service on the same store whose clock is past Config.Retention,
// sweep by sweep, timing each; check that pruned batches answer 404 and
// that their messages stay; measure again.
func (b *bench) retention(ctx context.Context, d *database) (err error) {
	o := b.o
	total := o.retentionRecipients
	per := max(1, total/retentionBatches)
	pool := poolOf(total, 100_000)
	h, err := b.freshHarness(ctx, d, "r", pool)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := h.close(context.WithoutCancel(ctx), o.keep); cerr != nil && err == nil {
			err = fmt.Errorf("clean up: %w", cerr)
		}
	}()
	// The pruner: the default retention, its clock an hour past it.
	cfg := h.config()
	cfg.Retention = batch.DefaultRetention
	cfg.Now = func() time.Time { return time.Now().Add(batch.DefaultRetention + time.Hour) }
	sweeps := &sweepLog{}
	cfg.Logger = slog.New(sweeps)
	pruner, err := batch.New(cfg)
	if err != nil {
		return err
	}
	defer pruner.Close()

	db := d.label()
	empty, err := h.bookkeepingSize(ctx)
	if err != nil {
		return err
	}
	type cycle struct {
		batches        int
		sent, pruned   bookkeeping
		sweepMs        []float64
		sampled        int
		messagesStored int64
	}
	var cycles []cycle
	for c := range o.retentionCycles {
		p := splitPlan(total, per, func(i int) para { return para{receiver: userA(i % pool), n: c*total + i} })
		start := time.Now()
		bs, err := h.sendAndVerify(ctx, p)
		if err != nil {
			return fmt.Errorf("send %d: %w", c+1, err)
		}
		cy := cycle{batches: len(bs)}
		if cy.sent, err = h.bookkeepingSize(ctx); err != nil {
			return err
		}
		b.logf("%s: retention send %d: %s batches of %s recipients sent and verified in %v; bookkeeping %s",
			db, c+1, group(int64(len(bs))), group(int64(per)), time.Since(start).Round(time.Millisecond), cy.sent)

		pruned := 0
		for i := 0; ; i++ {
			if i > len(bs)/100+100 {
				return fmt.Errorf("prune %d: %d sweeps have not pruned all %d batches (%d so far)", c+1, i, len(bs), pruned)
			}
			sweeps.take()
			t0 := time.Now()
			if _, err := pruner.Sweep(ctx); err != nil {
				return fmt.Errorf("prune %d: sweep %d: %w", c+1, i+1, err)
			}
			cy.sweepMs = append(cy.sweepMs, float64(time.Since(t0).Microseconds())/1000)
			n := sweeps.take()
			if n == 0 {
				break
			}
			pruned += n
		}
		if pruned != len(bs) {
			return fmt.Errorf("prune %d: the sweeps pruned %d batches, want the %d sent", c+1, pruned, len(bs))
		}
		for _, t := range []string{"batches", "chunks"} {
			var left int
			if err := d.sql.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+h.table(t)).Scan(&left); err != nil {
				return err
			}
			if left != 0 {
				return fmt.Errorf("prune %d: %d rows left in %s", c+1, left, t)
			}
		}
		if cy.sampled, err = h.checkPruned(ctx, bs); err != nil {
			return fmt.Errorf("prune %d: %w", c+1, err)
		}
		if err := d.sql.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+h.table("messages")).Scan(&cy.messagesStored); err != nil {
			return err
		}
		if want := int64((c + 1) * total); cy.messagesStored != want {
			return fmt.Errorf("prune %d: %d messages stored after pruning, want the %d sent", c+1, cy.messagesStored, want)
		}
		waited, err := d.awaitPurge(ctx)
		if err != nil {
			return err
		}
		if waited > time.Second {
			b.logf("%s: retention prune %d: waited %v for InnoDB's purge", db, c+1, waited.Round(time.Millisecond))
		}
		if cy.pruned, err = h.bookkeepingSize(ctx); err != nil {
			return err
		}
		b.logf("%s: retention prune %d: %d sweeps pruned %s batches (median %s, max %s a sweep); bookkeeping %s; %s messages still stored",
			db, c+1, len(cy.sweepMs), group(int64(pruned)), fmtMs(median(cy.sweepMs)), fmtMs(slices.Max(cy.sweepMs)), cy.pruned, group(cy.messagesStored))
		cycles = append(cycles, cy)
	}

	what := fmt.Sprintf("%s batches of %s recipients", group(int64(cycles[0].batches)), group(int64(per)))
	b.rows = append(b.rows, row{scenario: "retention", label: "10 bookkeeping size, empty tables", db: db,
		cb: empty.String(), base: "—", ratio: "—"})
	grown := func(s bookkeeping) float64 { return float64(s.total() - empty.total()) }
	for i, cy := range cycles {
		n := strconv.Itoa(i + 1)
		r := row{scenario: "retention", label: "10 bookkeeping size after send " + n + ": " + what + ", every message verified", db: db,
			cb: cy.sent.String(), base: "—", ratio: "—"}
		if i > 0 {
			ratio := float64(cy.sent.total()) / float64(cycles[0].sent.total())
			r.base, r.ratio, r.target, r.result = fmtSize(cycles[0].sent.total())+" (send 1)", fmtRatio(ratio), "≤ 1.10× send 1 (space reused)", passFail(ratio <= 1.10)
		}
		b.rows = append(b.rows, r)
		ratio := grown(cy.pruned) / max(1, grown(cy.sent))
		b.rows = append(b.rows, row{scenario: "retention", db: db,
			label: fmt.Sprintf("10 bookkeeping size after prune %s: every batch pruned by the sweep (%d calls), %d sampled GETs answer 404 BATCH_NOT_FOUND, all %s messages still stored; rule: growth over the empty tables ≤ 5 %% of send %s's",
				n, len(cy.sweepMs), cy.sampled, group(cy.messagesStored), n),
			cb: cy.pruned.String(), base: fmtSize(cy.sent.total()) + " (send " + n + ")", ratio: fmtPercent(ratio) + " of the growth",
			target: "≤ 5 %", result: passFail(ratio <= 0.05)})
	}
	var all []float64
	for _, cy := range cycles {
		all = append(all, cy.sweepMs...)
	}
	b.rows = append(b.rows, row{scenario: "retention", db: db,
		label: fmt.Sprintf("10 Sweep calls while pruning (all %d cycles, %d calls of at most 100 batches each): never a long lock", len(cycles), len(all)),
		cb:    "median " + fmtMs(median(all)) + ", max " + fmtMs(slices.Max(all)), base: "—", ratio: "—"})
	return nil
}

// checkPruned asks the API for a sample of the pruned batches (the
// first, the middle, the last and a few at random): each must answer 404
// BATCH_NOT_FOUND, and its messages must all still be stored. It returns
// how many it asked for.
func (h *harness) checkPruned(ctx context.Context, bs []acceptedBatch) (int, error) {
	idx := []int{0, len(bs) / 2, len(bs) - 1}
	for range 5 {
		idx = append(idx, rand.IntN(len(bs)))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		a := bs[i]
		code, body, err := h.getBatch(ctx, a.id)
		if err != nil {
			return 0, err
		}
		if code != http.StatusNotFound || !strings.Contains(string(body), `"BATCH_NOT_FOUND"`) {
			return 0, fmt.Errorf("GET pruned batch %s = %d %s; want 404 BATCH_NOT_FOUND", a.id, code, excerpt(body))
		}
		rows, distinct, err := h.d.countMessages(ctx, h.table("messages"), a.id)
		if err != nil {
			return 0, err
		}
		if rows != a.count || distinct != a.count {
			return 0, fmt.Errorf("pruned batch %s: %d messages stored (%d distinct), want its %d", a.id, rows, distinct, a.count)
		}
	}
	return len(idx), nil
}

// getBatch is GET /messages/batch/{id}: its status code and body.
func (h *harness) getBatch(ctx context.Context, id string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+"/messages/batch/"+id, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("IM-API-KEY", apiKey)
	res, err := h.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("GET batch %s: %w", id, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res.StatusCode, body, err
}

// sweepLog is the pruner's slog.Handler: it adds up the "pruned" counts
// of the Service's "batch sweep" records (SweepReport.Pruned, which
// Service.Sweep logs but does not return) and drops everything else.
type sweepLog struct {
	mu     sync.Mutex
	pruned int
}

func (l *sweepLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *sweepLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *sweepLog) WithGroup(string) slog.Handler            { return l }

func (l *sweepLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "batch sweep" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "pruned" {
			l.mu.Lock()
			l.pruned += int(a.Value.Int64())
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

// take returns the batches pruned since the last call.
func (l *sweepLog) take() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.pruned
	l.pruned = 0
	return n
}

// The plans scenario. One finished, reported batch with one done chunk
// is made through the store's own methods, then cloned by INSERT …
// SELECT over a number generator into -plan-sizes batches (the columns
// read from the schema, so that the clones follow it; distinct IDs,
// every time shifted back by k seconds for the k-th clone), beside a
// scheduled batch of a few hundred pending chunks. At each size the
// store's own queries are captured as they are sent — a second Store on
// the same *bun.DB with a query hook; bun writes the arguments into the
// text, so each is runnable as captured — and explained.

// planQueries is the store calls whose SELECTs are explained, in order.
var planQueries = []string{
	"ListBatches first page (Limit 20)",
	"ListBatches with a cursor (Limit 20)",
	"PendingChunks as the sweep calls it (Limit 1000)",
	"PruneBatches' SELECT (Limit 100)",
}

// queryCapture is a bun.QueryHook that records the SELECTs sent.
type queryCapture struct {
	mu      sync.Mutex
	queries []string
}

func (c *queryCapture) BeforeQuery(ctx context.Context, e *bun.QueryEvent) context.Context {
	if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(e.Query)), "SELECT") {
		c.mu.Lock()
		c.queries = append(c.queries, e.Query)
		c.mu.Unlock()
	}
	return ctx
}

func (c *queryCapture) AfterQuery(context.Context, *bun.QueryEvent) {}

// capture runs f and returns the SELECTs it sent.
func (c *queryCapture) capture(f func() error) ([]string, error) {
	c.mu.Lock()
	c.queries = nil
	c.mu.Unlock()
	err := f()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queries, err
}

// planResult is one explained query.
type planResult struct {
	summary string  // the plan, short
	shape   string  // the plan without numbers, to compare sizes
	ms      float64 // execution time
	ok      bool
	why     string // why not ok
}

// plans runs the plans scenario on d.
func (b *bench) plans(ctx context.Context, d *database) (err error) {
	o := b.o
	h, err := newHarness(ctx, d, b.redis, o.concurrency, "p")
	if err != nil {
		return err
	}
	defer func() {
		if cerr := h.close(context.WithoutCancel(ctx), o.keep); cerr != nil && err == nil {
			err = fmt.Errorf("clean up: %w", cerr)
		}
	}()
	hook := &queryCapture{}
	st, err := bunstore.New(d.bun.WithQueryHook(hook), &bunstore.Options{TablePrefix: h.prefix})
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Second)
	base := now.Add(-time.Minute)
	const proto = "plan"
	if err := h.planSeed(ctx, proto, base, now); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	cloneID := func(k int) string { return fmt.Sprintf("%s-%08d", proto, k) }
	db := d.label()
	results := map[string][]planResult{} // by query name, one per size
	have := 1                            // batches made: the prototype and clones 1..have-1
	for _, n := range o.planSizes {
		start := time.Now()
		if n > have {
			if err := h.cloneBatches(ctx, proto, have, n-1); err != nil {
				return fmt.Errorf("clone %s batches: %w", group(int64(n)), err)
			}
			have = n
		}
		for _, t := range []string{"batches", "chunks"} {
			q := "ANALYZE"
			if d.name == "postgres" {
				q = "VACUUM ANALYZE" // what autovacuum leaves: statistics and the visibility map
			} else if d.name == "mysql" {
				q = "ANALYZE TABLE"
			}
			if _, err := d.sql.ExecContext(ctx, q+" "+h.table(t)); err != nil {
				return fmt.Errorf("analyze %s: %w", t, err)
			}
		}
		b.logf("%s: plans: %s finished batches made and analyzed in %v", db, group(int64(n)), time.Since(start).Round(time.Millisecond))
		k := max(1, min(10_000, n/2)) // the cursor: the k-th newest batch
		calls := []func() error{
			func() error {
				_, err := st.ListBatches(ctx, &store.ListBatchesParams{AppID: appID, Now: now, Limit: 20})
				return err
			},
			func() error {
				_, err := st.ListBatches(ctx, &store.ListBatchesParams{AppID: appID, Now: now, Limit: 20,
					AfterCreatedAt: base.Add(-time.Duration(k) * time.Second), AfterID: cloneID(k)})
				return err
			},
			func() error {
				_, err := st.PendingChunks(ctx, &store.PendingChunksParams{DueBefore: now.Add(-batch.DefaultLease / 2), LeaseExpiredBefore: now, Limit: 1000})
				return err
			},
			func() error {
				// Half the batches past retention; 100 of them go.
				_, err := st.PruneBatches(ctx, &store.PruneBatchesParams{FinishedBefore: base.Add(time.Second - time.Duration(n/2)*time.Second), Limit: 100})
				return err
			},
		}
		for i, call := range calls {
			qs, err := hook.capture(call)
			if err != nil {
				return fmt.Errorf("%s: %w", planQueries[i], err)
			}
			if len(qs) == 0 {
				return fmt.Errorf("%s: no SELECT captured", planQueries[i])
			}
			for j, q := range qs {
				name := planQueries[i]
				if len(qs) > 1 {
					name += fmt.Sprintf(", query %d of %d", j+1, len(qs))
				}
				r, err := h.explain(ctx, q)
				if err != nil {
					return fmt.Errorf("explain %s: %w\n%s", name, err, q)
				}
				results[name] = append(results[name], r)
				label := "11 plan: " + name + ", " + group(int64(n)) + " finished batches"
				if d.name == "postgres" {
					label += " (EXPLAIN ANALYZE)"
				}
				cell := r.summary + "; " + fmtPlanMs(r.ms)
				if !r.ok {
					cell += " — " + r.why
				}
				b.rows = append(b.rows, row{scenario: "plans", label: label, db: db, cb: cell, base: "—", ratio: "—",
					target: "no sort, reads an index", result: passFail(r.ok)})
			}
		}
	}
	if len(o.planSizes) > 1 {
		first, last := o.planSizes[0], o.planSizes[len(o.planSizes)-1]
		var names []string
		for name := range results {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			rs := results[name]
			if len(rs) < 2 {
				continue
			}
			a, z := rs[0], rs[len(rs)-1]
			b.rows = append(b.rows, row{scenario: "plans", db: db,
				label: "11 plan shape: " + name + ", " + group(int64(last)) + " (chatbatch column) vs " + group(int64(first)) + " batches (baseline column)",
				cb:    z.shape + "; " + fmtPlanMs(z.ms), base: a.shape + "; " + fmtPlanMs(a.ms), ratio: fmtRatio(z.ms / max(a.ms, 0.001)),
				target: "same plan", result: passFail(a.shape == z.shape)})
		}
	}
	return nil
}

// planSeed makes, through the store's own methods, the prototype batch
// (created at base, one recipient in one chunk, started, completed a
// second later and reported) and a batch scheduled a day after now with
// 300 chunks of one recipient, all pending.
func (h *harness) planSeed(ctx context.Context, proto string, base, now time.Time) error {
	vars := func(i int) map[string]string { return map[string]string{"name": varName(i), "orderId": varOrderID(i)} }
	payload := []byte(msgTemplate + extraTemplate)
	ref := store.ChunkRef{AppID: appID, BatchID: proto}
	b := &store.Batch{ID: proto, AppID: appID, Sender: sender, Count: 1, Chunks: 1, Payload: payload, CreatedAt: base}
	c := store.Chunk{ChunkRef: ref, Recipients: []store.Recipient{{Receiver: userA(0), Vars: vars(0)}}, NotBefore: base}
	if err := h.st.CreateBatch(ctx, b, []store.Chunk{c}); err != nil {
		return err
	}
	if _, _, err := h.st.StartChunk(ctx, &store.StartChunkParams{Ref: ref, At: base, LeaseUntil: base.Add(batch.DefaultLease)}); err != nil {
		return err
	}
	done := base.Add(time.Second)
	out := []store.Outcome{{Status: store.OutcomeSent, Room: store.DirectRoomID(sender, userA(0)), MessageID: proto + "-0"}}
	if _, err := h.st.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: ref, Outcomes: out, At: done}); err != nil {
		return err
	}
	if err := h.st.MarkDoneNotified(ctx, &store.MarkDoneNotifiedParams{AppID: appID, BatchID: proto, At: done}); err != nil {
		return err
	}
	const pending = 300
	sendAt := now.Add(24 * time.Hour)
	sb := &store.Batch{ID: "scheduled", AppID: appID, Sender: sender, Count: pending, Chunks: pending, Payload: payload, CreatedAt: base, SendAt: sendAt}
	cs := make([]store.Chunk, pending)
	for i := range cs {
		cs[i] = store.Chunk{ChunkRef: store.ChunkRef{AppID: appID, BatchID: sb.ID, No: i}, Start: i,
			Recipients: []store.Recipient{{Receiver: userA(i), Vars: vars(i)}}, NotBefore: sendAt}
	}
	return h.st.CreateBatch(ctx, sb, cs)
}

// cloneBatches copies the prototype batch and its chunk as clones lo..hi
// (IDs proto-0000000k, every time k seconds earlier), by INSERT … SELECT
// over a number generator, 100,000 at a time.
func (h *harness) cloneBatches(ctx context.Context, proto string, lo, hi int) error {
	d := h.d
	conn, err := d.sql.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	mariadb := d.label() == "mariadb"
	if d.name == "mysql" && !mariadb {
		// MySQL has no sequence tables: a recursive CTE, deep enough.
		if _, err := conn.ExecContext(ctx, "SET SESSION cte_max_recursion_depth = 200000"); err != nil {
			return err
		}
	}
	for _, t := range []struct{ table, idCol, where string }{
		{"batches", "id", "t.app_id = " + d.param(1) + " AND t.id = " + d.param(2)},
		{"chunks", "batch_id", "t.app_id = " + d.param(1) + " AND t.batch_id = " + d.param(2) + " AND t.chunk_no = 0"},
	} {
		table := h.table(t.table)
		cols, err := h.columns(ctx, table, t.idCol, t.where, proto)
		if err != nil {
			return err
		}
		k := "g.k"
		if mariadb {
			k = "g.seq"
		}
		var names, exprs []string
		for _, c := range cols {
			names = append(names, c.name)
			e := "t." + c.name
			switch {
			case c.name == t.idCol:
				switch d.name {
				case "postgres":
					e = "t." + c.name + " || '-' || lpad(" + k + "::text, 8, '0')"
				case "mysql":
					e = "CONCAT(t." + c.name + ", '-', LPAD(" + k + ", 8, '0'))"
				default:
					e = "t." + c.name + " || '-' || printf('%08d', " + k + ")"
				}
			case c.time:
				switch d.name {
				case "postgres":
					e = "t." + c.name + " - " + k + " * interval '1 second'"
				case "mysql":
					e = "t." + c.name + " - INTERVAL " + k + " SECOND"
				default:
					// Fixed-width text: the seconds shifted, the fraction and Z kept.
					e = "strftime('%Y-%m-%d %H:%M:%S', t." + c.name + ", '-' || " + k + " || ' seconds') || substr(t." + c.name + ", 20)"
				}
			}
			exprs = append(exprs, e)
		}
		insert := "INSERT INTO " + table + " (" + strings.Join(names, ", ") + ") "
		sel := "SELECT " + strings.Join(exprs, ", ") + " FROM " + table + " t, "
		for from := lo; from <= hi; from += 100_000 {
			to := min(hi, from+100_000-1)
			var q string
			switch {
			case d.name == "postgres":
				q = insert + sel + fmt.Sprintf("generate_series(%d, %d) AS g(k) WHERE ", from, to) + t.where
			case mariadb:
				q = insert + sel + fmt.Sprintf("seq_%d_to_%d g WHERE ", from, to) + t.where
			case d.name == "mysql":
				q = insert + fmt.Sprintf("WITH RECURSIVE g(k) AS (SELECT %d UNION ALL SELECT k + 1 FROM g WHERE k < %d) ", from, to) + sel + "g WHERE " + t.where
			default:
				q = fmt.Sprintf("WITH RECURSIVE g(k) AS (SELECT %d UNION ALL SELECT k + 1 FROM g WHERE k < %d) ", from, to) + insert + sel + "g WHERE " + t.where
			}
			if _, err := conn.ExecContext(ctx, q, appID, proto); err != nil {
				return fmt.Errorf("%s: %w", firstWords(q), err)
			}
		}
	}
	return nil
}

// fmtPlanMs writes a query's time, to the microsecond under 1 ms.
func fmtPlanMs(x float64) string {
	if x < 1 {
		return strconv.FormatFloat(x, 'f', 3, 64) + " ms"
	}
	return fmtMs(x)
}

func firstWords(q string) string {
	if len(q) > 200 {
		return q[:200] + "…"
	}
	return q
}

// column is a column of a table, as the schema says.
type column struct {
	name string
	time bool
}

// columns lists table's columns in order, telling which hold times: by
// their type on PostgreSQL and MySQL; on SQLite, where times are text,
// by the prototype row's value having the store's fixed-width form.
func (h *harness) columns(ctx context.Context, table, idCol, where, proto string) ([]column, error) {
	d := h.d
	var q string
	switch d.name {
	case "postgres":
		q = "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
	case "mysql":
		q = "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION"
	default:
		q = "SELECT name, type FROM pragma_table_info(?) ORDER BY cid"
	}
	rows, err := d.sql.QueryContext(ctx, q, table)
	if err != nil {
		return nil, err
	}
	var cols []column
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			rows.Close()
			return nil, err
		}
		typ = strings.ToLower(typ)
		cols = append(cols, column{name: name, time: typ == "timestamp with time zone" || typ == "datetime"})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("%s has no columns", table)
	}
	if !slices.ContainsFunc(cols, func(c column) bool { return c.name == idCol }) {
		return nil, fmt.Errorf("%s has no column %s", table, idCol)
	}
	if d.name == "sqlite" {
		const timeText = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z"
		for i, c := range cols {
			var n int
			if err := d.sql.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+table+" t WHERE "+where+" AND typeof(t."+c.name+") = 'text' AND t."+c.name+" GLOB '"+timeText+"'", appID, proto).Scan(&n); err != nil {
				return nil, err
			}
			cols[i].time = n > 0
		}
	}
	return cols, nil
}

// explain explains q, which the store sent as captured, and judges the
// plan: on PostgreSQL EXPLAIN (ANALYZE, BUFFERS), good without a Sort
// node and with an index read (Index Scan, Index Only Scan); on MariaDB
// and MySQL EXPLAIN, bad with "Using filesort" or a row of type ALL; on
// SQLite EXPLAIN QUERY PLAN, bad with "USE TEMP B-TREE FOR ORDER BY" or
// a SCAN of a table without an index. Outside PostgreSQL the time is the
// query's own, run twice and the second run timed.
func (h *harness) explain(ctx context.Context, q string) (planResult, error) {
	var r planResult
	var err error
	switch h.d.name {
	case "postgres":
		r, err = h.explainPG(ctx, q)
	case "mysql":
		r, err = h.explainMySQL(ctx, q)
	default:
		r, err = h.explainSQLite(ctx, q)
	}
	if err != nil || h.d.name == "postgres" {
		return r, err
	}
	for range 2 {
		start := time.Now()
		rows, err := h.d.sql.QueryContext(ctx, q)
		if err != nil {
			return r, err
		}
		for rows.Next() {
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return r, err
		}
		r.ms = float64(time.Since(start).Microseconds()) / 1000
	}
	return r, nil
}

// lines runs q and returns its rows, each column (lower-cased) as text.
func (h *harness) lines(ctx context.Context, q string) ([]map[string]string, error) {
	rows, err := h.d.sql.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []map[string]string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		m := map[string]string{}
		for i, c := range cols {
			switch v := vals[i].(type) {
			case nil:
				m[strings.ToLower(c)] = ""
			case []byte:
				m[strings.ToLower(c)] = string(v)
			default:
				m[strings.ToLower(c)] = fmt.Sprint(v)
			}
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// unprefixed drops the harness's table prefix from names in a plan.
func (h *harness) unprefixed(s string) string { return strings.ReplaceAll(s, h.prefix, "") }

func (h *harness) explainPG(ctx context.Context, q string) (planResult, error) {
	var r planResult
	out, err := h.lines(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+q)
	if err != nil {
		return r, err
	}
	var nodes []string
	buffers := ""
	sorted, index := false, false
	for _, m := range out {
		line := m["query plan"]
		t := strings.TrimSpace(line)
		switch {
		case strings.Contains(t, "(cost="):
			node := strings.TrimSpace(strings.TrimPrefix(t[:strings.Index(t, "(cost=")], "->"))
			node = h.unprefixed(node)
			nodes = append(nodes, node)
			sorted = sorted || strings.HasPrefix(node, "Sort") || strings.HasPrefix(node, "Incremental Sort")
			index = index || strings.HasPrefix(node, "Index Scan") || strings.HasPrefix(node, "Index Only Scan")
		case strings.HasPrefix(t, "Buffers:") && buffers == "":
			buffers = strings.TrimPrefix(t, "Buffers: ")
		case strings.HasPrefix(t, "Execution Time:"):
			f := strings.Fields(t)
			if len(f) >= 3 {
				r.ms, _ = strconv.ParseFloat(f[2], 64)
			}
		}
	}
	if len(nodes) == 0 {
		return r, fmt.Errorf("no plan nodes in %q", out)
	}
	r.shape = strings.Join(nodes, " → ")
	r.summary = r.shape
	if buffers != "" {
		r.summary += " (buffers " + buffers + ")"
	}
	r.ok = !sorted && index
	switch {
	case sorted:
		r.why = "sorts"
	case !index:
		r.why = "reads no index"
	}
	return r, nil
}

func (h *harness) explainMySQL(ctx context.Context, q string) (planResult, error) {
	var r planResult
	out, err := h.lines(ctx, "EXPLAIN "+q)
	if err != nil {
		return r, err
	}
	var parts, shapes, whys []string
	for _, m := range out {
		table, extra, key := h.unprefixed(m["table"]), m["extra"], orDash(h.unprefixed(m["key"]))
		part := fmt.Sprintf("%s: type %s, key %s", table, m["type"], key)
		if extra != "" {
			part += ", " + extra
		}
		parts = append(parts, part+", rows "+m["rows"])
		// The shape: per table the index read and whether the whole
		// table is read or the rows sorted; not the access type (ref or
		// range) or the conditions pushed to the engine, which the
		// optimizer picks by its estimates from one size to the next.
		shape := table + ": key " + key
		if m["type"] == "ALL" {
			whys = append(whys, "reads the whole table (type ALL)")
			shape += ", ALL"
		}
		if strings.Contains(extra, "Using filesort") {
			whys = append(whys, "sorts (Using filesort)")
			shape += ", filesort"
		}
		if strings.Contains(extra, "Using temporary") {
			shape += ", temporary"
		}
		shapes = append(shapes, shape)
	}
	r.shape, r.summary = strings.Join(shapes, " / "), strings.Join(parts, " / ")
	r.ok, r.why = len(whys) == 0, strings.Join(whys, ", ")
	return r, nil
}

func (h *harness) explainSQLite(ctx context.Context, q string) (planResult, error) {
	var r planResult
	out, err := h.lines(ctx, "EXPLAIN QUERY PLAN "+q)
	if err != nil {
		return r, err
	}
	var details, whys []string
	for _, m := range out {
		dt := h.unprefixed(m["detail"])
		details = append(details, dt)
		if strings.Contains(dt, "USE TEMP B-TREE FOR ORDER BY") {
			whys = append(whys, "sorts (temp b-tree)")
		}
		if strings.HasPrefix(dt, "SCAN ") && !strings.Contains(dt, "INDEX") {
			whys = append(whys, "scans a table without an index")
		}
	}
	r.shape = strings.Join(details, " / ")
	r.summary = r.shape
	r.ok, r.why = len(whys) == 0, strings.Join(whys, ", ")
	return r, nil
}
