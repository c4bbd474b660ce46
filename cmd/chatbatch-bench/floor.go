package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

// The floor scenario answers how fast the worker could go if parts of a
// chunk cost nothing. Three more Services on the same store and queue
// run over the same backlog as worker-a, as contenders in worker-a's
// runs:
//   - "floor": its Messages stores nothing, so it runs every other store
//     call of a chunk (start, the recipients' users and rooms, complete);
//   - "unchecked": the same without the send-time check either;
//   - "nocheck": it writes the messages but does not check (what a send
//     to receivers the directory cache knows costs, beside the repeat
//     send that measures it).
//
// A baseline joins them, "least" (runLeast): the least a first send
// does, without chatbatch — per chunk of recipients, one look-up of the
// pairs' members and the messages' write (pgx CopyFrom on PostgreSQL, the
// plain INSERT's statements elsewhere): what a first send cannot skip,
// and nothing else. Its rate vs plain INSERT is the
// bound a first send can reach on the machine, measured rather than
// derived from where chatbatch's CPU goes. worker-b has its own: the
// look-up finds no rooms, and the rooms and their members are inserted
// before the messages. worker-c's least is the write alone (its rooms are
// known since the accept), the plain INSERT and pgx CopyFrom baselines;
// "kept" (runKept) adds to it chatbatch's start and completion of each
// chunk, to tell what the chunks' bookkeeping costs from the rest. In
// worker-a and worker-b, "leastkept" is the least with the same start
// and completion of each chunk: the least a worker that keeps
// exactly-once bookkeeping does.
//
// From their rates and the machine's CPU per recipient of each contender
// (all processes: the bench, Redis, the database) the bench derives the
// bound on chatbatch ÷ plain INSERT on a machine whose cores they share.

// floorKind is which of the floor scenario's contenders a Service is.
type floorKind int

const (
	floorNoWrite        floorKind = iota // "floor": Messages stores nothing
	floorNoWriteNoCheck                  // "unchecked": neither writes nor checks
	floorNoCheck                         // "nocheck": writes, does not check
)

// floorKinds names the contenders.
var floorKinds = map[string]floorKind{"floor": floorNoWrite, "unchecked": floorNoWriteNoCheck, "nocheck": floorNoCheck}

// discardMessages is a store.Messages that stores nothing and counts.
type discardMessages struct{ saved atomic.Int64 }

func (m *discardMessages) SaveMessages(_ context.Context, _ string, msgs []store.Message) error {
	m.saved.Add(int64(len(msgs)))
	return nil
}

// floorContender is a Service of the floor scenario and, where it stores
// nothing, the Messages that counts what it was handed.
type floorContender struct {
	svc  *batch.Service
	msgs *discardMessages // nil for floorNoCheck, which stores the messages
}

// uncheckedDirectory is the store's Directory without the send-time
// check: it answers every one-on-one pair with the room ID the store
// names it by and reads nothing. Only the floor scenario uses it, to
// measure what the check costs; chatbatch always checks.
type uncheckedDirectory struct {
	store.Directory
	namer store.DirectRoomNamer
}

func (d uncheckedDirectory) DirectRooms(_ context.Context, _, a string, bs []string) ([]store.DirectRoomResult, error) {
	out := make([]store.DirectRoomResult, len(bs))
	for i, b := range bs {
		out[i].Room = d.namer.DirectRoomID(a, b)
	}
	return out, nil
}

// floorService returns a floor contender's Service (made once).
func (h *harness) floorService(kind floorKind) (floorContender, error) {
	if c, ok := h.floors[kind]; ok {
		return c, nil
	}
	cfg := h.config()
	var c floorContender
	if kind != floorNoCheck {
		c.msgs = &discardMessages{}
		cfg.Messages = c.msgs
	}
	if kind != floorNoWrite {
		cfg.Directory = uncheckedDirectory{h.st, h.st}
	}
	svc, err := batch.New(cfg)
	if err != nil {
		return c, err
	}
	c.svc = svc
	if h.floors == nil {
		h.floors = map[floorKind]floorContender{}
	}
	h.floors[kind] = c
	return c, nil
}

// floorRate is workerRate with a floor contender's worker: the plan is
// accepted through the API as usual; the batches must complete with
// every recipient sent and every message handed to SaveMessages (stored
// exactly once, for floorNoCheck). -cpuprofile profiles it as the
// scenario "floor-<name>".
func (b *bench) floorRate(ctx context.Context, h *harness, p plan, name string, rep int) (float64, error) {
	c, err := h.floorService(floorKinds[name])
	if err != nil {
		return 0, err
	}
	svc, msgs := c.svc, c.msgs
	if err := h.stopWorker(); err != nil {
		return 0, err
	}
	bs, err := h.acceptPlan(ctx, p)
	if err != nil {
		return 0, err
	}
	var before int64
	if msgs != nil {
		before = msgs.saved.Load()
	}
	if err := h.quiet(ctx); err != nil {
		return 0, err
	}
	stopProfile := b.profile(h.d.label(), "floor-"+name, rep)
	h.phaseCPU = startCPU()
	h.startWorkerOf(svc)
	_, err = h.waitDone(ctx, bs)
	h.phaseCPU.stop()
	stopProfile()
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
	if msgs == nil {
		if err := h.verify(ctx, bs); err != nil {
			return 0, err
		}
	} else if got := msgs.saved.Load() - before; got < int64(total) {
		return 0, fmt.Errorf("floor: %d messages handed to SaveMessages, want %d", got, total)
	}
	return float64(total) / last.Sub(first).Seconds(), nil
}

// floorRows reports the floor contender beside the baselines, and what
// each contender of worker-a's runs cost the machine in CPU: the bound
// that CPU puts on chatbatch ÷ plain INSERT when the cores are saturated.
func (b *bench) floorRows(db string, s series) {
	b.rows = append(b.rows, ratioRow("floor", "1 worker rate (a) without the message write (every other store call) vs plain INSERT", db, s["floor"], s["plain"], 0))
	b.rows = append(b.rows, ratioRow("floor", "1 worker rate (a) without the message write nor the send-time check of receivers and rooms (starting and completing chunks, the queue) vs plain INSERT", db, s["unchecked"], s["plain"], 0))
	b.rows = append(b.rows, ratioRow("floor", "1 worker rate (a) with the message write, without the send-time check (what a send to receivers the directory cache knows costs) vs plain INSERT", db, s["nocheck"], s["plain"], 0))
	if len(s["least"]) > 0 {
		b.rows = append(b.rows, ratioRow("floor", "1 the least a first send does, without chatbatch: per chunk of recipients, one look-up of the pairs' members and the messages' write (pgx CopyFrom on PostgreSQL), nothing else, vs plain INSERT", db, s["least"], s["plain"], 0))
		b.rows = append(b.rows, ratioRow("floor", "1 worker rate (a), a first send, vs the least a first send does", db, s["chatbatch"], s["least"], 0))
	}
	if len(s["leastkept"]) > 0 {
		b.rows = append(b.rows, ratioRow("floor", "1 the least a first send does with chatbatch's start and completion of each chunk (its StartChunk and CompleteChunk), vs plain INSERT", db, s["leastkept"], s["plain"], 0))
		b.rows = append(b.rows, ratioRow("floor", "1 worker rate (a), a first send, vs the least a first send does with the chunks' bookkeeping", db, s["chatbatch"], s["leastkept"], 0))
	}
	if len(s["cpu-chatbatch"]) == 0 || len(s["cpu-plain"]) == 0 {
		return // no /proc/stat
	}
	cpuRow := func(label string, cb, base []float64) row {
		return row{scenario: "floor", label: label, db: db, cb: spread(cb, fmtMs), base: spread(base, fmtMs), ratio: spread(ratios(cb, base), fmtRatio)}
	}
	b.rows = append(b.rows, cpuRow("1 machine CPU (Go, Redis, database) per 1,000 recipients, worker (a) vs plain INSERT", s["cpu-chatbatch"], s["cpu-plain"]))
	if len(s["cpu-floor"]) > 0 {
		b.rows = append(b.rows, cpuRow("1 machine CPU per 1,000 recipients, worker (a) without the message write vs plain INSERT", s["cpu-floor"], s["cpu-plain"]))
	}
	if len(s["cpu-unchecked"]) > 0 {
		b.rows = append(b.rows, cpuRow("1 machine CPU per 1,000 recipients, worker (a) without the message write nor the send-time check vs plain INSERT", s["cpu-unchecked"], s["cpu-plain"]))
	}
	if len(s["cpu-nocheck"]) > 0 {
		b.rows = append(b.rows, cpuRow("1 machine CPU per 1,000 recipients, worker (a) with the message write, without the send-time check vs plain INSERT", s["cpu-nocheck"], s["cpu-plain"]))
	}
	if len(s["cpu-copy"]) > 0 {
		b.rows = append(b.rows, cpuRow("1 machine CPU per 1,000 recipients, pgx CopyFrom vs plain INSERT", s["cpu-copy"], s["cpu-plain"]))
	}
	if len(s["cpu-least"]) > 0 {
		b.rows = append(b.rows, cpuRow("1 machine CPU per 1,000 recipients, the least a first send does vs plain INSERT", s["cpu-least"], s["cpu-plain"]))
	}
	// Where the CPU goes: the bench process (Go; and SQLite, in process)
	// and the rest of the machine (the database server, Redis).
	process := "Go"
	if db == "sqlite" {
		process = "Go and SQLite"
	}
	for _, c := range []struct{ name, what string }{{"chatbatch", "worker (a)"}, {"floor", "worker (a) without the message write"}} {
		if len(s["self-"+c.name]) > 0 && len(s["self-plain"]) > 0 {
			b.rows = append(b.rows, cpuRow("1 of that, the bench process's ("+process+") per 1,000 recipients: "+c.what+" vs plain INSERT's client", s["self-"+c.name], s["self-plain"]))
		}
	}
}

// boundRows reports, under a scenario's rate, the bounds CPU puts on
// chatbatch ÷ plain INSERT. With every core busy, rate = cores ÷ CPU per
// recipient, so the ratio can reach at most plain's CPU per recipient ÷
// chatbatch's (the machine's: the bench, Redis and the database sharing
// two cores). Where the database is a server, its share alone (the
// machine's CPU less the bench process's, Redis's ~1 ms per 1,000 with
// it) bounds the ratio a deployment with the database on cores of its
// own could reach, the Go side running elsewhere.
func (b *bench) boundRows(scen, label, db string, s series) {
	if len(s["cpu-chatbatch"]) == 0 || len(s["cpu-plain"]) == 0 {
		return // no /proc/stat
	}
	bound := func(what string, plain, cb []float64) {
		b.rows = append(b.rows, row{scenario: scen, label: label + ": " + what, db: db,
			cb: spread(cb, fmtMs), base: spread(plain, fmtMs), ratio: spread(ratios(plain, cb), fmtRatio)})
	}
	bound("CPU bound where the cores are saturated: plain's CPU per recipient ÷ chatbatch's (columns: machine CPU per 1,000)", s["cpu-plain"], s["cpu-chatbatch"])
	if db == "sqlite" || len(s["self-chatbatch"]) == 0 || len(s["self-plain"]) == 0 {
		return // SQLite runs in the bench's process
	}
	server := func(c string) []float64 {
		var out []float64
		for i := range min(len(s["cpu-"+c]), len(s["self-"+c])) {
			out = append(out, s["cpu-"+c][i]-s["self-"+c][i])
		}
		return out
	}
	bound("bound with the database on cores of its own: the same, the database's (and Redis's) CPU alone", server("plain"), server("chatbatch"))
}

// machineCPU is the CPU time the whole machine has spent busy since it
// booted — every process, so the Go process, Redis and the database
// together — from /proc/stat (Linux); ok is false elsewhere.
//
// The bench reads it around each worker-a contender: on a machine where
// chatbatch and the database share the cores, the CPU a recipient costs
// bounds the rate. When the cores are saturated, chatbatch ÷ plain INSERT
// can be at most plain's CPU per recipient ÷ chatbatch's.
func machineCPU() (busy time.Duration, ok bool) {
	ticks, _, _, ok := machineTicks()
	return time.Duration(ticks) * time.Second / clockTicks, ok
}

// machineTicks returns /proc/stat's first line as busy ticks (all but
// idle and iowait), ticks waiting on I/O, and all ticks; ok is false
// where there is no /proc/stat.
func machineTicks() (busy, iowait, total int64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, 0, false
	}
	// user nice system idle iowait irq softirq steal
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, 0, false
		}
		total += n
		switch i {
		case 3:
		case 4:
			iowait += n
		default:
			busy += n
		}
	}
	return busy, iowait, total, true
}

// quietShare is the share of the machine's time, busy or waiting on I/O,
// below which waitQuiet calls it quiet: the bench's own idle worker and
// the database's idle housekeeping stay under it.
const quietShare = 0.15

// waitQuiet waits, before a contender's measured span, until the machine
// is quiet — until what ran before it (the previous contender's
// requests, autovacuum and analyze of its tables, a checkpoint flushing
// its pages, InnoDB's purge, SQLite's WAL checkpoint) no longer keeps
// the cores or the disk busy — for at most maxWait, so that no contender
// is measured in another's aftermath. On this machine the waits are
// short (0.25–1 s in 2026-12-06's runs). It returns how long it waited;
// where /proc/stat is not to be read, it does not wait.
func waitQuiet(ctx context.Context, maxWait time.Duration) (time.Duration, error) {
	const window = 250 * time.Millisecond
	start := time.Now()
	busy, io, total, ok := machineTicks()
	for ok && time.Since(start) < maxWait {
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(window):
		}
		b2, io2, t2, ok2 := machineTicks()
		if !ok2 {
			break
		}
		if t2 > total && float64(b2-busy+io2-io)/float64(t2-total) < quietShare {
			break
		}
		busy, io, total = b2, io2, t2
	}
	return time.Since(start), nil
}

// clockTicks is USER_HZ, the unit of /proc/stat: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// cpuMeter measures the machine's busy CPU over a span, and the bench
// process's own (the Go side: chatbatch's worker, or a baseline's
// client; SQLite runs in it too).
type cpuMeter struct {
	start, end         time.Duration
	selfStart, selfEnd time.Duration
	ok, ended          bool
}

func startCPU() cpuMeter {
	busy, ok := machineCPU()
	self, selfOK := procCPU(os.Getpid())
	return cpuMeter{start: busy, selfStart: self, ok: ok && selfOK}
}

// stop ends the span (perThousand ends it if stop was not called).
func (m *cpuMeter) stop() {
	var selfOK bool
	m.end, m.ended = machineCPU()
	m.selfEnd, selfOK = procCPU(os.Getpid())
	m.ok = m.ok && m.ended && selfOK
}

// perThousand returns the machine's busy CPU of the span per 1,000
// recipients, and the bench process's share of it, in milliseconds; ok
// is false where /proc is not to be read.
func (m cpuMeter) perThousand(recipients int) (ms, selfMs float64, ok bool) {
	if !m.ended {
		m.stop()
	}
	if !m.ok || recipients == 0 {
		return 0, 0, false
	}
	per := func(d time.Duration) float64 {
		return float64(d) / float64(time.Millisecond) * 1000 / float64(recipients)
	}
	return per(m.end - m.start), per(m.selfEnd - m.selfStart), true
}
