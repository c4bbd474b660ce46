package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/chatbatch/chatbatch/batch"
)

// load runs -load-clients clients that post batches of -load-recipients
// (one-on-one rooms exist) back to back for -load-duration while the
// worker runs, through an API with admission control
// (-load-max-pending): a refused POST waits its Retry-After and posts
// again, as a well-behaved client does. Then it waits for every batch,
// verifies each (completed, every message stored once) and reports the
// accept latency of the accepted POSTs (sent → 200 read), the refusals,
// how long after the load stopped the last batch finished, and the rate.
// A request that fails otherwise fails the scenario.
func (b *bench) load(ctx context.Context, h *harness, poolA int) error {
	o := b.o
	base := h.srv.URL
	if o.loadMaxPending > 0 {
		u, stop, err := h.withAdmission(&batch.Admission{MaxPending: o.loadMaxPending})
		if err != nil {
			return err
		}
		defer stop()
		base = u
	}
	h.startWorker()
	var (
		mu       sync.Mutex
		accepted []acceptedBatch
		lat      []float64 // ms
		refused  int
		firstErr error
	)
	stop := time.Now().Add(o.loadDuration)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range o.loadClients {
		wg.Go(func() {
			for k := 0; time.Now().Before(stop); k++ {
				offset := ((c*7919 + k*o.loadRecipients) % poolA)
				p := splitPlan(o.loadRecipients, o.loadRecipients, func(i int) para {
					return para{receiver: userA((offset + i) % poolA), n: offset + i}
				})
				ps := p.gen(0)
				a, err := h.postTo(ctx, base, requestBody(ps))
				var ref *refusedError
				if errors.As(err, &ref) {
					mu.Lock()
					refused++
					mu.Unlock()
					time.Sleep(min(max(ref.retryAfter, 100*time.Millisecond), time.Until(stop)))
					continue
				}
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("client %d request %d: %w", c, k, err)
					}
					mu.Unlock()
					return
				}
				a.first = ps[0]
				accepted = append(accepted, a)
				lat = append(lat, float64(a.respAt.Sub(a.postStart).Microseconds())/1000)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	stopped := time.Now()
	if firstErr != nil {
		return firstErr
	}
	if len(accepted) == 0 {
		return errors.New("no batch was accepted")
	}
	if _, err := h.waitDone(ctx, accepted); err != nil {
		return err
	}
	took := time.Since(start)
	drained := time.Since(stopped)
	if err := h.verify(ctx, accepted); err != nil {
		return err
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	db := h.d.label()
	n := len(accepted) * o.loadRecipients
	b.logf("%s: load: %d clients, %d batches of %s accepted in %v, all done and verified after %v",
		db, o.loadClients, len(accepted), group(int64(o.loadRecipients)), o.loadDuration, took.Round(time.Millisecond))
	label := fmt.Sprintf("8 accept under load: %d clients posting %s-recipient batches for %v while the worker runs (%d batches)",
		o.loadClients, group(int64(o.loadRecipients)), o.loadDuration, len(accepted))
	r := row{scenario: "load", label: label, db: db,
		cb:   fmt.Sprintf("p50 %s, p99 %s, max %s", fmtMs(pct(0.50)), fmtMs(pct(0.99)), fmtMs(lat[len(lat)-1])),
		base: "—", ratio: "—", target: "p99 ≤ 1000 ms"}
	r.result = passFail(pct(0.99) <= 1000)
	b.rows = append(b.rows, r)
	b.rows = append(b.rows, row{scenario: "load", label: "8 messages stored and delivered under that load, first POST → last batch done", db: db,
		cb: fmtRate(float64(n)/took.Seconds()) + " msgs/s", base: "—", ratio: "—", target: "—"})
	admission := "off"
	if o.loadMaxPending > 0 {
		admission = "at most " + group(int64(o.loadMaxPending)) + " recipients pending"
	}
	r = row{scenario: "load", label: fmt.Sprintf("8 last batch done after the load stopped (admission control %s; %d POSTs refused and posted again)", admission, refused), db: db,
		cb: drained.Round(100 * time.Millisecond).String(), base: "—", ratio: "—", target: "≤ 30 s"}
	r.result = passFail(drained <= 30*time.Second)
	b.rows = append(b.rows, r)
	return nil
}
