package main

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

// The floor scenario answers how fast the worker could go if writing the
// messages cost nothing: a second Service on the same store and queue
// whose Messages stores nothing runs every other store call of a chunk
// (start, the recipients' users and rooms, complete) over the same
// backlog as worker-a, as a fourth contender in worker-a's runs. From
// its rate and the baselines' the bench derives chatbatch's ceiling on
// this machine: recipients/s if the message write ran at pgx CopyFrom's
// rate (the fastest way PostgreSQL takes rows), ÷ the plain INSERT's.

// discardMessages is a store.Messages that stores nothing and counts.
type discardMessages struct{ saved atomic.Int64 }

func (m *discardMessages) SaveMessages(_ context.Context, _ string, msgs []store.Message) error {
	m.saved.Add(int64(len(msgs)))
	return nil
}

// floorService returns the floor contender's Service (made once).
func (h *harness) floorService() (*batch.Service, *discardMessages, error) {
	if h.floor != nil {
		return h.floor, h.floorMsgs, nil
	}
	cfg := h.config()
	h.floorMsgs = &discardMessages{}
	cfg.Messages = h.floorMsgs
	svc, err := batch.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	h.floor = svc
	return svc, h.floorMsgs, nil
}

// floorRate is workerRate with the floor contender's worker: the plan
// is accepted through the API as usual; the batches must complete with
// every recipient sent and every message handed to SaveMessages.
func (b *bench) floorRate(ctx context.Context, h *harness, p plan, rep int) (float64, error) {
	svc, msgs, err := h.floorService()
	if err != nil {
		return 0, err
	}
	if err := h.stopWorker(); err != nil {
		return 0, err
	}
	bs, err := h.acceptPlan(ctx, p)
	if err != nil {
		return 0, err
	}
	before := msgs.saved.Load()
	h.startWorkerOf(svc)
	_, err = h.waitDone(ctx, bs)
	if stopErr := h.stopWorker(); err == nil {
		err = stopErr
	}
	if err != nil {
		return 0, err
	}
	first, last, err := h.span(ctx, bs)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, a := range bs {
		st, err := h.status(ctx, a.id)
		if err != nil {
			return 0, err
		}
		if st.Status != "completed" || st.Sent != a.count {
			return 0, fmt.Errorf("floor: batch %s: status %s sent %d of %d", a.id, st.Status, st.Sent, a.count)
		}
		total += a.count
	}
	if got := msgs.saved.Load() - before; got < int64(total) {
		return 0, fmt.Errorf("floor: %d messages handed to SaveMessages, want %d", got, total)
	}
	return float64(total) / last.Sub(first).Seconds(), nil
}

// floorRows reports the floor contender beside the baselines and the
// ceiling it implies.
func (b *bench) floorRows(db string, s series) {
	b.rows = append(b.rows, ratioRow("floor", "1 worker rate (a) without the message write (every other store call) vs plain INSERT", db, s["floor"], s["plain"], 0))
	if len(s["copy"]) == 0 {
		return
	}
	// Per run: the time per recipient of the store calls without the
	// write plus COPY's time per row, against the plain INSERT's.
	var bound []float64
	for i := range s["floor"] {
		bound = append(bound, 1/(1/s["floor"][i]+1/s["copy"][i]))
	}
	b.rows = append(b.rows, ratioRow("floor", "1 ceiling: worker rate (a) if the messages were written at pgx CopyFrom's rate, vs plain INSERT", db, bound, s["plain"], 0))
}
