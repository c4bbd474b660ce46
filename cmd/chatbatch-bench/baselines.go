package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/store"
)

// baselineBatch is one request's worth of rows written by a baseline.
type baselineBatch struct {
	id    string
	paras []para
}

// baselineID looks like a chatbatch batch ID (same length), so that both
// write keys of the same size.
func baselineID() string {
	return "basel-" + time.Now().UTC().Format("20060102") + "-" + strings.ToLower(rand.Text()[:10])
}

func baselineBatches(p plan) []baselineBatch {
	bbs := make([]baselineBatch, p.requests)
	for k := range bbs {
		bbs[k] = baselineBatch{id: baselineID(), paras: p.gen(k)}
	}
	return bbs
}

func countsOf(bbs []baselineBatch) (map[string]int, int) {
	m := map[string]int{}
	total := 0
	for _, b := range bbs {
		m[b.id] = len(b.paras)
		total += len(b.paras)
	}
	return m, total
}

// unit is what one chunk covers, batch.DefaultChunkSize recipients of
// one batch (the harness runs chatbatch's default configuration): the
// baselines split their work into the same units.
const unit = batch.DefaultChunkSize

// stmtRows is the most rows one baseline INSERT writes, as many as
// bunstore's own multi-row INSERTs take (its maxRowsPerInsert); the
// members of (b), two a recipient, go 2 × stmtRows at a time.
const stmtRows = 500

// baselineRows are the rows a baseline writes for bbs: messages and, for
// receivers without rooms (withRooms), the rooms and their members, in
// units.
type unitRows struct {
	rooms, members, messages [][]any
}

func (h *harness) baselineRows(bbs []baselineBatch, withRooms bool) []unitRows {
	at := time.Now()
	var units []unitRows
	for _, b := range bbs {
		for lo := 0; lo < len(b.paras); lo += unit {
			hi := min(lo+unit, len(b.paras))
			var u unitRows
			for i := lo; i < hi; i++ {
				p := b.paras[i]
				u.messages = append(u.messages, messageRow(h.d, b.id, i, p, at))
				if withRooms {
					room := store.DirectRoomID(sender, p.receiver)
					u.rooms = append(u.rooms, []any{appID, room})
					u.members = append(u.members, []any{appID, room, sender}, []any{appID, room, p.receiver})
				}
			}
			units = append(units, u)
		}
	}
	return units
}

var (
	roomCols   = []string{"app_id", "id"}
	memberCols = []string{"app_id", "room_id", "user_id"}
)

// runPlain is the plain INSERT baseline: 500-row multi-row INSERTs with
// bind parameters through database/sql, on h.conc goroutines, into the
// baseline tables (same schema and indexes as chatbatch's). It returns
// recipients per second.
func (h *harness) runPlain(ctx context.Context, bbs []baselineBatch, withRooms bool) (float64, error) {
	units := h.baselineRows(bbs, withRooms)
	var jobs []job
	for _, u := range units {
		var j job
		j = append(j, h.d.insertStatements(h.baseTable("rooms"), roomCols, u.rooms, stmtRows)...)
		j = append(j, h.d.insertStatements(h.baseTable("room_members"), memberCols, u.members, 2*stmtRows)...)
		j = append(j, h.d.insertStatements(h.baseTable("messages"), messageColumnList, u.messages, stmtRows)...)
		jobs = append(jobs, j)
	}
	return h.timeBaseline(ctx, "plain INSERT", bbs, func() error { return h.d.runJobs(ctx, jobs, h.conc) })
}

// timeBaseline times run, a baseline writing bbs' rows, once the machine
// is quiet, with the machine's CPU read around it (h.phaseCPU), checks
// that every row was stored once, and returns recipients per second.
func (h *harness) timeBaseline(ctx context.Context, name string, bbs []baselineBatch, run func() error) (float64, error) {
	counts, total := countsOf(bbs)
	if err := h.quiet(ctx); err != nil {
		return 0, err
	}
	h.phaseCPU = startCPU()
	start := time.Now()
	err := run()
	elapsed := time.Since(start)
	h.phaseCPU.stop()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	if err := h.verifyBaseline(ctx, counts); err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return float64(total) / elapsed.Seconds(), nil
}

// runCopy is the pgx CopyFrom baseline (PostgreSQL): the same rows split
// over h.streams connections, each copying its share — the ceiling when
// h.streams suits the server (on 2 cores, 2 streams beat 10 by ~2×).
func (h *harness) runCopy(ctx context.Context, bbs []baselineBatch, withRooms bool) (float64, error) {
	units := h.baselineRows(bbs, withRooms)
	jobs := make([]copyJob, min(h.streams, len(units)))
	for i := range jobs {
		jobs[i] = copyJob{
			{table: h.baseTable("rooms"), cols: roomCols},
			{table: h.baseTable("room_members"), cols: memberCols},
			{table: h.baseTable("messages"), cols: messageColumnList},
		}
	}
	for i, u := range units {
		j := jobs[i%len(jobs)]
		j[0].rows = append(j[0].rows, u.rooms...)
		j[1].rows = append(j[1].rows, u.members...)
		j[2].rows = append(j[2].rows, u.messages...)
	}
	conns, closeAll, err := h.d.pgConns(ctx, len(jobs))
	if err != nil {
		return 0, err
	}
	defer closeAll()
	return h.timeBaseline(ctx, "pgx CopyFrom", bbs, func() error { return runCopies(ctx, conns, jobs) })
}

// runLeast is the least a first send does, as a baseline: per unit (a
// chunk of recipients), one statement that counts the pairs' members,
// and the unit's messages written — by one pgx CopyFrom on PostgreSQL,
// by the plain INSERT baseline's statements elsewhere. Nothing else: no
// rendering, no chunk bookkeeping, no queue; the room IDs and rows are
// prepared before the clock. h.conc units at a time. It returns
// recipients per second.
//
// For receivers of (a) every pair must have both members, in
// chatbatch's directory. For (b) (withRooms) the count must find none, in
// the baseline's directory, and the unit then creates the rooms and their
// members there with the plain INSERT baseline's statements (the
// cheapest form: they skip the ON CONFLICT a store needs against
// concurrent creators). The receivers are not looked up in either: the
// accept looked them up, and chatbatch's directory cache remembers them.
//
// The count is the cheapest form of the look-up on each database: on
// PostgreSQL a range probe of the members' primary key per pair, as
// bunstore's (a LATERAL subquery, so the plan does not depend on the
// statistics); elsewhere the rooms' members by IN over that key, with
// bind parameters (bunstore reads them as rows, and also the users it
// does not know).
//
// With kept (the contender "leastkept") each unit is also a chunk of a
// batch stored before the clock, as the accept stores it, and is
// claimed with bunstore's StartChunk before its look-up and completed
// with its CompleteChunk after its write, as runKept does: the least a
// worker that keeps exactly-once bookkeeping does.
func (h *harness) runLeast(ctx context.Context, bbs []baselineBatch, withRooms, kept bool) (float64, error) {
	rows := h.baselineRows(bbs, withRooms)
	var units []keptUnit
	if kept {
		var err error
		if units, err = h.storeKeptBatches(ctx, bbs, rows); err != nil {
			return 0, err
		}
	}
	run, closeAll, err := h.leastWrites(ctx, bbs, rows, withRooms, units)
	if err != nil {
		return 0, err
	}
	defer closeAll()
	return h.timeLeast(ctx, bbs, kept, run)
}

// runLeastEndToEnd is the least requests of (a) do end to end: what
// accepting each request cannot skip — its receivers looked up, all of
// them users, the requests at once as their accepts would run — and then
// runLeast's work. It parses no request and queues nothing: what it
// leaves out (decoding the request, storing it durably before the 200,
// the queue, the chunks' bookkeeping) is what chatbatch adds to it.
//
// With kept (the contender "leastkept") each request's accept also
// stores its batch and chunks through bunstore's CreateBatch after its
// look-up, inside the clock, as chatbatch's accept stores them before
// its 200, and runLeast's work is then leastkept's (each chunk claimed
// and completed through bunstore): the least end to end that keeps
// exactly-once bookkeeping, leaving out only the request's decoding,
// the rendering and the queue.
func (h *harness) runLeastEndToEnd(ctx context.Context, bbs []baselineBatch, kept bool) (float64, error) {
	rows := h.baselineRows(bbs, false)
	var units []keptUnit
	var batches []keptBatch
	if kept {
		units, batches = keptBatches(bbs, rows, time.Now().UTC())
	}
	write, closeAll, err := h.leastWrites(ctx, bbs, rows, false, units)
	if err != nil {
		return 0, err
	}
	defer closeAll()
	checks := make([][]job, len(bbs))
	for k, b := range bbs {
		seen := map[string]bool{}
		var ids []string
		for _, p := range b.paras {
			if !seen[p.receiver] {
				seen[p.receiver] = true
				ids = append(ids, p.receiver)
			}
		}
		checks[k] = h.usersExist(ids)
	}
	run := func() error {
		// The requests' accepts at once, each looking its receivers up
		// in up to four parts at once, as bunstore does, and then (kept)
		// storing its batch.
		if err := eachUnit(len(bbs), len(bbs), func(_, k int) error {
			if err := h.d.runJobs(ctx, checks[k], 4); err != nil {
				return fmt.Errorf("users: %w", err)
			}
			if kept {
				return h.createKeptBatch(ctx, batches[k])
			}
			return nil
		}); err != nil {
			return err
		}
		return write()
	}
	return h.timeLeast(ctx, bbs, kept, run)
}

// timeLeast times run, a least's work on bbs, and with kept (leastkept)
// checks that every batch ran to its end through the bookkeeping.
func (h *harness) timeLeast(ctx context.Context, bbs []baselineBatch, kept bool, run func() error) (float64, error) {
	name := "least"
	if kept {
		name = "least with the bookkeeping"
	}
	rate, err := h.timeBaseline(ctx, name, bbs, run)
	if err != nil || !kept {
		return rate, err
	}
	return rate, h.checkKeptBatches(ctx, bbs)
}

// usersExist is the cheapest look-up of ids (distinct) in chatbatch's
// users table that fails unless all are there, in parts that may run at
// once (one statement each): counts over arrays of a quarter of ids on
// PostgreSQL, over IN lists of stmtRows elsewhere.
func (h *harness) usersExist(ids []string) []job {
	var jobs []job
	if h.d.name == "postgres" {
		for part := range slices.Chunk(ids, max(1, (len(ids)+3)/4)) {
			jobs = append(jobs, job{{query: "SELECT count(*) FROM unnest($2::text[]) AS q(id) JOIN " + h.table("users") + " t ON t.app_id = $1 AND t.id = q.id",
				args: []any{appID, part}, count: true, want: int64(len(part))}})
		}
		return jobs
	}
	for part := range slices.Chunk(ids, stmtRows) {
		jobs = append(jobs, job{countIn(h.table("users"), "id", part, len(part))})
	}
	return jobs
}

// countIn is a statement that counts the app's rows of table whose col
// is one of ids, bound as parameters, and fails unless it finds want.
func countIn(table, col string, ids []string, want int) statement {
	args := make([]any, 0, 1+len(ids))
	args = append(args, appID)
	for _, id := range ids {
		args = append(args, id)
	}
	return statement{query: "SELECT count(*) FROM " + table + " WHERE app_id = ? AND " + col + " IN (" + strings.Repeat("?, ", len(ids)-1) + "?)",
		args: args, count: true, want: int64(want)}
}

// leastWrites prepares runLeast's work on units (bbs' rows, baselineRows
// with withRooms): per unit (a chunk of recipients) the pairs' members
// counted, for (b) (withRooms) the rooms and members inserted, and the
// messages written, h.conc units at a time; with kept (the units'
// chunks, stored) each unit claimed before and completed after, through
// bunstore — kept[k] is unit k's chunk, as both walk bbs in order, unit
// recipients at a time. closeAll releases what run uses, after it.
func (h *harness) leastWrites(ctx context.Context, bbs []baselineBatch, units []unitRows, withRooms bool, kept []keptUnit) (run func() error, closeAll func(), err error) {
	type leastUnit struct {
		rooms, receivers []string
		create           []statement // (b): the rooms and their members
		messages         [][]any
	}
	// (a) finds both members of every pair in chatbatch's directory; (b)
	// finds none in the baseline's, where it creates them.
	members, perPair := h.table("room_members"), 2
	if withRooms {
		members, perPair = h.baseTable("room_members"), 0
	}
	work := make([]leastUnit, len(units))
	i := 0
	for _, b := range bbs {
		for lo := 0; lo < len(b.paras); lo += unit {
			u := &work[i]
			for _, p := range b.paras[lo:min(lo+unit, len(b.paras))] {
				u.rooms = append(u.rooms, store.DirectRoomID(sender, p.receiver))
				u.receivers = append(u.receivers, p.receiver)
			}
			u.create = append(h.d.insertStatements(h.baseTable("rooms"), roomCols, units[i].rooms, stmtRows),
				h.d.insertStatements(h.baseTable("room_members"), memberCols, units[i].members, 2*stmtRows)...)
			u.messages = units[i].messages
			i++
		}
	}
	closeAll = func() {}
	if h.d.name == "postgres" {
		probe := "SELECT count(*) FROM unnest($2::text[], $3::text[]) AS q(room, b) CROSS JOIN LATERAL (SELECT 1 FROM " + members +
			" m WHERE m.app_id = $1 AND m.room_id = q.room AND (m.user_id = $4 OR m.user_id = q.b) OFFSET 0) m"
		var conns []*pgx.Conn
		conns, closeAll, err = h.d.pgConns(ctx, min(h.conc, len(work)))
		if err != nil {
			return nil, nil, err
		}
		run = func() error {
			return eachUnit(len(work), len(conns), keptAround(ctx, h, kept, func(c, k int) error {
				u, conn := work[k], conns[c]
				var found int
				if err := conn.QueryRow(ctx, probe, appID, u.rooms, u.receivers, sender).Scan(&found); err != nil {
					return fmt.Errorf("probe: %w", err)
				}
				if want := perPair * len(u.rooms); found != want {
					return fmt.Errorf("probe: %d members of %d pairs, want %d", found, len(u.rooms), want)
				}
				for _, st := range u.create {
					if _, err := conn.Exec(ctx, st.query, st.args...); err != nil {
						return fmt.Errorf("create rooms: %w", err)
					}
				}
				if _, err := conn.CopyFrom(ctx, pgx.Identifier{h.baseTable("messages")}, messageColumnList, pgx.CopyFromRows(u.messages)); err != nil {
					return fmt.Errorf("copy: %w", err)
				}
				return nil
			}))
		}
	} else {
		jobs := make([]job, len(work))
		for k, u := range work {
			jobs[k] = append(append(job{countIn(members, "room_id", u.rooms, perPair*len(u.rooms))}, u.create...),
				h.d.insertStatements(h.baseTable("messages"), messageColumnList, u.messages, stmtRows)...)
		}
		run = func() error { return h.d.runJobs(ctx, jobs, h.conc) }
		if kept != nil {
			run = func() error {
				return eachUnit(len(jobs), min(h.conc, len(jobs)), keptAround(ctx, h, kept, func(_, k int) error {
					for _, st := range jobs[k] {
						if err := h.d.run(ctx, st); err != nil {
							return err
						}
					}
					return nil
				}))
			}
		}
	}
	return run, closeAll, nil
}

// keptAround wraps an eachUnit function of unit k: with kept (the
// units' chunks, stored) bunstore's StartChunk claims unit k's chunk
// before it and CompleteChunk records its outcomes, every recipient
// sent, after it; without, it is fn.
func keptAround(ctx context.Context, h *harness, kept []keptUnit, fn func(w, k int) error) func(w, k int) error {
	if kept == nil {
		return fn
	}
	return func(w, k int) error {
		u, at := kept[k], time.Now().UTC()
		if _, _, err := h.base.StartChunk(ctx, &store.StartChunkParams{Ref: u.ref, At: at, LeaseUntil: at.Add(time.Minute)}); err != nil {
			return fmt.Errorf("start: %w", err)
		}
		if err := fn(w, k); err != nil {
			return err
		}
		if _, err := h.base.CompleteChunk(ctx, &store.CompleteChunkParams{Ref: u.ref, Outcomes: u.outcomes, At: time.Now().UTC()}); err != nil {
			return fmt.Errorf("complete: %w", err)
		}
		return nil
	}
}

// runKept is the messages' write with chatbatch's own bookkeeping of
// each chunk and nothing else, as a baseline for room paras (c), whose
// send-time check the directory cache answers: per unit (a chunk of
// recipients), bunstore's StartChunk, the unit's messages written as
// runLeast writes them (one pgx CopyFrom on PostgreSQL, the plain INSERT
// baseline's statements elsewhere), and bunstore's CompleteChunk with
// every recipient sent — the two writes a chunk adds to the messages'
// (claimed before any side effect, its outcomes recorded after). No
// queue, no rendering, no check; the batches and their chunk rows are
// stored, as the accept stores them, before the clock. h.conc units at a
// time. It returns recipients per second. -kept-shape writes the same
// bookkeeping in other shapes (keptshapes.go).
func (h *harness) runKept(ctx context.Context, bbs []baselineBatch) (float64, error) {
	work, err := h.storeKeptBatches(ctx, bbs, h.baselineRows(bbs, false))
	if err != nil {
		return 0, err
	}
	if h.keptShape != keptStore {
		return h.runKeptShape(ctx, bbs, work)
	}
	var conns []*pgx.Conn
	if h.d.name == "postgres" {
		var closeAll func()
		if conns, closeAll, err = h.d.pgConns(ctx, min(h.conc, len(work))); err != nil {
			return 0, err
		}
		defer closeAll()
	}
	// Elsewhere the messages' statements are built before the clock, as
	// the other baselines and shapes build theirs.
	var inserts [][]statement
	if conns == nil {
		inserts = make([][]statement, len(work))
		for k, u := range work {
			inserts[k] = h.d.insertStatements(h.baseTable("messages"), messageColumnList, u.messages, stmtRows)
		}
	}
	write := func(c, k int) error {
		if conns != nil {
			_, err := conns[c].CopyFrom(ctx, pgx.Identifier{h.baseTable("messages")}, messageColumnList, pgx.CopyFromRows(work[k].messages))
			return err
		}
		for _, st := range inserts[k] {
			if err := h.d.run(ctx, st); err != nil {
				return err
			}
		}
		return nil
	}
	run := func() error {
		return eachUnit(len(work), min(h.conc, len(work)), keptAround(ctx, h, work, func(c, k int) error {
			if err := write(c, k); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			return nil
		}))
	}
	rate, err := h.timeBaseline(ctx, "kept", bbs, run)
	if err != nil {
		return 0, err
	}
	return rate, h.checkKeptBatches(ctx, bbs)
}

// storeKeptBatches stores bbs as the accept stores them (keptBatches)
// and returns their chunks in order, as keptBatches does.
func (h *harness) storeKeptBatches(ctx context.Context, bbs []baselineBatch, units []unitRows) ([]keptUnit, error) {
	work, batches := keptBatches(bbs, units, time.Now().UTC())
	for _, kb := range batches {
		if err := h.createKeptBatch(ctx, kb); err != nil {
			return nil, err
		}
	}
	return work, nil
}

// keptBatches is bbs as the accept stores them — each batch and its
// chunks of unit recipients, every recipient with its vars, created at
// now — in order, and their chunks in order with their messages' rows
// (of units, bbs' baselineRows) and the outcomes that complete them
// (every recipient sent).
func keptBatches(bbs []baselineBatch, units []unitRows, now time.Time) ([]keptUnit, []keptBatch) {
	var work []keptUnit
	var batches []keptBatch
	for _, b := range bbs {
		var chunks []store.Chunk
		for lo := 0; lo < len(b.paras); lo += unit {
			u := keptUnit{ref: store.ChunkRef{AppID: appID, BatchID: b.id, No: len(chunks)}, messages: units[len(work)].messages}
			c := store.Chunk{ChunkRef: u.ref, Start: lo, NotBefore: now}
			for i, p := range b.paras[lo:min(lo+unit, len(b.paras))] {
				c.Recipients = append(c.Recipients, store.Recipient{Receiver: p.storedReceiver(), Room: p.room,
					Vars: map[string]string{"name": varName(p.n), "orderId": varOrderID(p.n)}})
				u.outcomes = append(u.outcomes, store.Outcome{Status: store.OutcomeSent, Room: p.roomOf(), MessageID: b.id + "-" + strconv.Itoa(lo+i)})
			}
			u.chunk = c
			chunks = append(chunks, c)
			work = append(work, u)
		}
		batches = append(batches, keptBatch{
			batch:  &store.Batch{ID: b.id, AppID: appID, Sender: sender, Count: len(b.paras), Chunks: len(chunks), Payload: []byte(`{}`), CreatedAt: now},
			chunks: chunks,
		})
	}
	return work, batches
}

// keptBatch is one batch of keptBatches and its chunks.
type keptBatch struct {
	batch  *store.Batch
	chunks []store.Chunk
}

// createKeptBatch stores kb through bunstore's CreateBatch.
func (h *harness) createKeptBatch(ctx context.Context, kb keptBatch) error {
	if err := h.base.CreateBatch(ctx, kb.batch, kb.chunks); err != nil {
		return fmt.Errorf("kept: store the batch: %w", err)
	}
	return nil
}

// keptUnit is one chunk of the kept contender: its row as the accept
// stores it, the outcomes it completes with, and its messages' rows.
type keptUnit struct {
	ref      store.ChunkRef
	chunk    store.Chunk
	outcomes []store.Outcome
	messages [][]any
}

// checkKeptBatches checks that every batch ran to its end through the
// bookkeeping.
func (h *harness) checkKeptBatches(ctx context.Context, bbs []baselineBatch) error {
	for _, b := range bbs {
		got, err := h.base.GetBatch(ctx, appID, b.id)
		if err != nil {
			return fmt.Errorf("kept: %w", err)
		}
		if got.FinishedAt.IsZero() || got.Sent != len(b.paras) {
			return fmt.Errorf("kept: batch %s: sent %d of %d, finished %v", b.id, got.Sent, len(b.paras), got.FinishedAt)
		}
	}
	return nil
}

// eachUnit runs fn(w, k) for every unit k in [0, n) on workers
// goroutines, each taking the next unit as it finishes one; w is the
// goroutine's index (for a connection of its own). A goroutine stops at
// its first error; the errors are joined.
func eachUnit(n, workers int, fn func(w, k int) error) error {
	var next atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range errs {
		wg.Go(func() {
			for k := int(next.Add(1)) - 1; k < n; k = int(next.Add(1)) - 1 {
				if err := fn(w, k); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// naiveTask is the payload of the naive design's task: one recipient.
type naiveTask struct {
	Batch    string `json:"b"`
	Index    int    `json:"i"`
	Receiver string `json:"r,omitempty"`
	Room     string `json:"m,omitempty"`
	N        int    `json:"n"`
}

// workerWarmup is how long a freshly started asynq server is given before
// a measurement that needs a running worker starts.
const workerWarmup = 300 * time.Millisecond

// runNaive is the naive design, end to end: one asynq task per recipient
// (same Redis, its own queue, h.conc workers, the same idle poll as
// chatbatch's worker, -task-check-interval), each rendering its message and INSERTing its one
// row with bind parameters. The clock runs from the first enqueue to the
// last row stored.
func (h *harness) runNaive(ctx context.Context, bbs []baselineBatch) (float64, error) {
	queue := h.queue + "_naive"
	defer h.redis.deleteQueue(queue)
	query := "INSERT INTO " + h.baseTable("messages") + " (" + messageColumns + ") VALUES " + h.d.placeholders(1, len(messageColumnList))
	counts, total := countsOf(bbs)
	var done, failed atomic.Int64
	finished := make(chan struct{})
	handler := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		var nt naiveTask
		if err := json.Unmarshal(t.Payload(), &nt); err != nil {
			return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
		}
		row := messageRow(h.d, nt.Batch, nt.Index, para{receiver: nt.Receiver, room: nt.Room, n: nt.N}, time.Now())
		if _, err := h.d.sql.ExecContext(ctx, query, row...); err != nil {
			failed.Add(1)
			return err
		}
		if done.Add(1) == int64(total) {
			close(finished)
		}
		return nil
	})
	srv := asynq.NewServer(h.redis.opt, asynq.Config{
		Concurrency:       h.conc,
		Queues:            map[string]int{queue: 1},
		TaskCheckInterval: cmp.Or(h.taskCheck, batch.DefaultTaskCheckInterval),
		Logger:            nopLogger{},
		LogLevel:          asynq.FatalLevel,
	})
	if err := h.quiet(ctx); err != nil {
		return 0, err
	}
	if err := srv.Start(handler); err != nil {
		return 0, fmt.Errorf("naive: start asynq server: %w", err)
	}
	defer srv.Shutdown()
	client := asynq.NewClient(h.redis.opt)
	defer client.Close()
	var tasks []*asynq.Task
	for _, b := range bbs {
		for i, p := range b.paras {
			payload, _ := json.Marshal(naiveTask{Batch: b.id, Index: i, Receiver: p.receiver, Room: p.room, N: p.n})
			tasks = append(tasks, asynq.NewTask("naive:message", payload, asynq.Queue(queue), asynq.MaxRetry(3)))
		}
	}
	time.Sleep(workerWarmup)

	start := time.Now()
	var wg sync.WaitGroup
	var enqErr atomic.Value
	per := (len(tasks) + h.conc - 1) / h.conc
	for lo := 0; lo < len(tasks); lo += per {
		part := tasks[lo:min(lo+per, len(tasks))]
		wg.Go(func() {
			for _, t := range part {
				if _, err := client.EnqueueContext(ctx, t); err != nil {
					enqErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := enqErr.Load().(error); err != nil {
		return 0, fmt.Errorf("naive: enqueue: %w", err)
	}
	stall := time.NewTimer(stallTimeout)
	defer stall.Stop()
	select {
	case <-finished:
	case <-stall.C:
		return 0, fmt.Errorf("naive: %d of %d rows stored after %v (%d INSERTs failed)", done.Load(), total, stallTimeout, failed.Load())
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	elapsed := time.Since(start)
	if err := h.verifyBaseline(ctx, counts); err != nil {
		return 0, fmt.Errorf("naive: %w", err)
	}
	if n := failed.Load(); n > 0 {
		return 0, fmt.Errorf("naive: %d INSERTs failed", n)
	}
	return float64(total) / elapsed.Seconds(), nil
}
