package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

// The reads scenario (issue 24): what recording read receipts costs
// beside sending the messages read. Each run sends -backlog recipients of
// (a) through the API and the worker (timed from the first POST to the
// last batch done), then records the first read of every one through
// the library — Service.MarkReads, readsPerCall receipts a call (as a
// host that buffers its receipts flushes them), -concurrency calls at
// once, each receipt by the message's receiver — timed. Then it checks
// that every read was recorded once (ReadCounts), that a second pass
// records none, and, on PostgreSQL, that no batch row was written by the
// reads (the row versions, xmin, are unchanged: reads are counted per
// chunk, so no row is hot). Target: the reads take at most half the
// send's time.

// readsPerCall is how many receipts one MarkReads call of the scenario
// carries: POST …/-/reads's limit.
const readsPerCall = 1000

func (b *bench) reads(ctx context.Context, d *database) (err error) {
	o := b.o
	pool := poolOf(o.backlog, 10_000)
	h, err := b.freshHarness(ctx, d, "r", pool)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := h.close(context.WithoutCancel(ctx), o.keep); cerr != nil && err == nil {
			err = fmt.Errorf("clean up: %w", cerr)
		}
	}()
	var sendRates, readRates, ratios []float64
	for rep := range o.runs {
		base := rep * o.backlog // distinct para numbers per run
		p := splitPlan(o.backlog, o.recipients, func(i int) para { return para{receiver: userA((base + i) % pool), n: base + i} })
		if err := h.stopWorker(); err != nil {
			return err
		}
		start := time.Now()
		bs, err := h.acceptPlan(ctx, p)
		if err != nil {
			return err
		}
		h.startWorker()
		last, err := h.waitDone(ctx, bs)
		if stopErr := h.stopWorker(); err == nil {
			err = stopErr
		}
		if err != nil {
			return err
		}
		send := last.Sub(start)
		if err := h.verify(ctx, bs); err != nil {
			return err
		}
		// Every message's read by its receiver, in the order the
		// messages went out.
		receipts := make([]batch.ReadReceipt, 0, o.backlog)
		for k, a := range bs {
			for j := range a.count {
				i := k*o.recipients + j
				receipts = append(receipts, batch.ReadReceipt{UserID: userA((base + i) % pool), MessageID: a.id + "-" + strconv.Itoa(j)})
			}
		}
		before, err := h.batchVersions(ctx, bs)
		if err != nil {
			return err
		}
		stopProfile := b.profile(d.label(), "reads", rep)
		t0 := time.Now()
		recorded, err := h.markAll(ctx, receipts)
		took := time.Since(t0)
		stopProfile()
		if err != nil {
			return err
		}
		if recorded != len(receipts) {
			return fmt.Errorf("run %d: MarkReads recorded %d of %d reads", rep+1, recorded, len(receipts))
		}
		if again, err := h.markAll(ctx, receipts); err != nil || again != 0 {
			return fmt.Errorf("run %d: the same reads again recorded %d (%v), want 0", rep+1, again, err)
		}
		ids := make([]string, len(bs))
		for k, a := range bs {
			ids[k] = a.id
		}
		counts, err := h.st.ReadCounts(ctx, &store.ReadCountsParams{AppID: appID, BatchIDs: ids})
		if err != nil {
			return err
		}
		for _, a := range bs {
			if counts[a.id] != a.count {
				return fmt.Errorf("run %d: batch %s has %d reads, want %d", rep+1, a.id, counts[a.id], a.count)
			}
		}
		after, err := h.batchVersions(ctx, bs)
		if err != nil {
			return err
		}
		if before != nil && fmt.Sprint(before) != fmt.Sprint(after) {
			return fmt.Errorf("run %d: the reads wrote batch rows (xmin before %v, after %v)", rep+1, before, after)
		}
		n := float64(len(receipts))
		sendRates = append(sendRates, n/send.Seconds())
		readRates = append(readRates, n/took.Seconds())
		ratios = append(ratios, took.Seconds()/send.Seconds())
		b.logf("%s: reads run %d: %s recipients sent in %v, their %s reads recorded in %v (%.2f× the send)%s",
			d.label(), rep+1, group(int64(n)), send.Round(time.Millisecond), group(int64(n)), took.Round(time.Millisecond), took.Seconds()/send.Seconds(),
			map[bool]string{true: "; no batch row written (xmin unchanged)", false: ""}[before != nil])
	}
	r := row{scenario: "reads", db: d.label(),
		label: fmt.Sprintf("12 first reads recorded by Service.MarkReads (%s a call, %d at once) vs sending the messages read, %s recipients of (a); time ratio",
			group(readsPerCall), o.concurrency, group(int64(o.backlog))),
		cb: spread(readRates, fmtRate) + " reads/s", base: spread(sendRates, fmtRate) + " sent/s",
		ratio: spread(ratios, fmtRatio), target: "≤ 0.50× the send's time"}
	r.result = passFail(median(ratios) <= 0.5)
	b.rows = append(b.rows, r)
	return nil
}

// markAll records receipts through MarkReads, readsPerCall a call, from
// h.conc goroutines, and returns how many reads were recorded.
func (h *harness) markAll(ctx context.Context, receipts []batch.ReadReceipt) (int, error) {
	next := make(chan []batch.ReadReceipt)
	var mu sync.Mutex
	total := 0
	var errs []error
	var wg sync.WaitGroup
	for range h.conc {
		wg.Go(func() {
			for part := range next {
				n, err := h.svc.MarkReads(ctx, appID, part)
				mu.Lock()
				total += n
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	for lo := 0; lo < len(receipts); lo += readsPerCall {
		next <- receipts[lo:min(lo+readsPerCall, len(receipts))]
	}
	close(next)
	wg.Wait()
	return total, errors.Join(errs...)
}

// batchVersions is, on PostgreSQL, each batch row's xmin (the
// transaction that wrote its current version); nil elsewhere.
func (h *harness) batchVersions(ctx context.Context, bs []acceptedBatch) ([]string, error) {
	if h.d.name != "postgres" {
		return nil, nil
	}
	out := make([]string, len(bs))
	for k, a := range bs {
		if err := h.d.sql.QueryRowContext(ctx, "SELECT xmin::text FROM "+h.table("batches")+" WHERE app_id = $1 AND id = $2", appID, a.id).Scan(&out[k]); err != nil {
			return nil, err
		}
	}
	return out, nil
}
