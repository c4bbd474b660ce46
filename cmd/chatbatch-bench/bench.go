package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// run is the whole command: parse args, benchmark, print. It returns the
// exit status: 0, 1 for an error or a failed verification, 2 for bad
// flags, 3 for a missed target under -strict.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "chatbatch-bench:", err)
		return 2
	}
	b := &bench{o: o, out: stdout, log: stderr, args: args, seq: time.Now().UnixNano() % 1_000_000}
	return b.main(ctx)
}

// bench is one invocation.
type bench struct {
	o        *options
	out, log io.Writer
	args     []string
	redis    *redisTarget
	dbs      []*database
	rows     []row
	seq      int64 // makes fresh user names unique
	workerA  map[string][]float64
	profiles []string
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (b *bench) fresh() string {
	b.seq++
	return strconv.FormatInt(b.seq, 36)
}

func (b *bench) main(ctx context.Context) int {
	started := time.Now()
	var err error
	b.redis, err = openRedis(ctx, b.o.redis)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(b.log, "chatbatch-bench:", err)
		return 2
	}
	if err != nil {
		fmt.Fprintln(b.log, "chatbatch-bench:", err)
		return 1
	}
	defer b.redis.close()
	if b.redis.mini != nil {
		fmt.Fprintln(b.log, "chatbatch-bench: WARNING: -redis=mem runs an in-process miniredis, several times slower than Redis for asynq: the numbers are not comparable with a real Redis")
	}
	defer func() {
		for _, d := range b.dbs {
			d.close()
		}
	}()
	if b.o.sqlite {
		dir, err := os.MkdirTemp("", "chatbatch-bench-")
		if err != nil {
			fmt.Fprintln(b.log, "chatbatch-bench:", err)
			return 1
		}
		if b.o.keep {
			fmt.Fprintln(b.log, "chatbatch-bench: -keep: the SQLite database stays in", dir)
		} else {
			defer os.RemoveAll(dir)
		}
		b.o.sqliteDSN = "sqlite:" + filepath.Join(dir, "bench.db")
	}
	for _, c := range []struct{ name, dsn string }{{"postgres", b.o.postgres}, {"mysql", b.o.mysql}, {"sqlite", b.o.sqliteDSN}} {
		if c.dsn == "" {
			continue
		}
		d, err := openDatabase(ctx, c.name, c.dsn)
		if err != nil {
			fmt.Fprintf(b.log, "chatbatch-bench: -%s: %v\n", c.name, err)
			return 1
		}
		b.dbs = append(b.dbs, d)
	}
	b.printHeader()
	b.workerA = map[string][]float64{}
	var runErr error
	for i, d := range b.dbs {
		if runErr = b.runDatabase(ctx, d, i == 0); runErr != nil {
			runErr = fmt.Errorf("%s: %w", d.label(), runErr)
			break
		}
	}
	if runErr == nil {
		b.crossDatabase()
	}
	if b.o.has("stats") && !slices.ContainsFunc(b.dbs, func(d *database) bool { return d.name == "postgres" }) {
		b.rows = append(b.rows, row{scenario: "stats", label: "skipped: PostgreSQL only (give -postgres)", db: "—", cb: "—", base: "—", ratio: "—"})
	}
	fmt.Fprintln(b.out)
	printTable(b.out, b.rows)
	b.printNotes(time.Since(started))
	if runErr != nil {
		fmt.Fprintln(b.out, "\nFAILED:", runErr)
		fmt.Fprintln(b.log, "chatbatch-bench:", runErr)
		return 1
	}
	missed := 0
	for _, r := range b.rows {
		if r.result == "FAIL" {
			missed++
		}
	}
	fmt.Fprintf(b.out, "\nAll runs verified: every message stored exactly once, every batch completed with sent = count. %d target(s) missed.\n", missed)
	if missed > 0 && b.o.strict {
		return 3
	}
	return 0
}

func (b *bench) printHeader() {
	o := b.o
	fmt.Fprintln(b.out, "# chatbatch-bench")
	fmt.Fprintln(b.out)
	fmt.Fprintln(b.out, "    "+commandLine(b.args))
	fmt.Fprintln(b.out)
	host, _ := os.Hostname()
	fmt.Fprintf(b.out, "- %s %s/%s, %d CPUs (GOMAXPROCS %d), host %s, %s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), host, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(b.out, "- Redis: %s, %s\n", b.redis.desc, b.redis.version)
	for _, d := range b.dbs {
		what := d.version
		if d.name == "sqlite" {
			what = "SQLite " + d.version + " (file in a temporary directory, WAL)"
		}
		fmt.Fprintf(b.out, "- %s: %s\n", d.label(), what)
	}
	fmt.Fprintf(b.out, "- runs %d, concurrency %d, %s recipients per request, backlog %s, scenarios %s\n",
		o.runs, o.concurrency, group(int64(o.recipients)), group(int64(o.backlog)), strings.Join(b.selected(), ","))
	if o.has("retention") || o.has("plans") {
		var sizes []string
		for _, n := range o.planSizes {
			sizes = append(sizes, group(int64(n)))
		}
		fmt.Fprintf(b.out, "- retention: %s recipients a cycle; plans at %s finished batches\n", group(int64(o.retentionRecipients)), strings.Join(sizes, ", "))
	}
}

func (b *bench) selected() []string {
	var s []string
	for _, n := range scenarioNames() {
		if b.o.has(n) {
			s = append(s, n)
		}
	}
	return s
}

func (b *bench) printNotes(took time.Duration) {
	o := b.o
	fmt.Fprintln(b.out)
	fmt.Fprintln(b.out, "Scenarios:")
	for _, s := range scenarios {
		if b.o.has(s.name) {
			fmt.Fprintf(b.out, "- `%s`: %s\n", s.name, s.desc)
		}
	}
	fmt.Fprintln(b.out, "\nBaselines, in the same process, interleaved with chatbatch (the order alternates run by run), same concurrency:")
	fmt.Fprintln(b.out, "- plain INSERT: 500-row multi-row INSERTs with bind parameters through database/sql into a second prefix's tables (same schema and indexes); in (b) also the rooms and members.")
	fmt.Fprintf(b.out, "- pgx CopyFrom (PostgreSQL): the same rows over %d connections (-copy-streams), one COPY per table per connection — the ceiling; no target. On few cores, fewer streams than -concurrency copy faster.\n", b.o.copyStreams)
	fmt.Fprintln(b.out, "- naive asynq: one task per recipient, each rendering and INSERTing one row.")
	fmt.Fprintln(b.out, "Cells: median (min–max) over the runs; ratio = chatbatch ÷ baseline per run. msgs/s counts recipients (messages), in (b) each with its room and 2 members.")
	if o.has("bytes") || o.has("retention") {
		fmt.Fprintln(b.out, "\nSizes (bytes, retention):")
		for _, d := range b.dbs {
			fmt.Fprintf(b.out, "- %s: %s.\n", d.label(), d.sizeMethod())
		}
	}
	if len(b.profiles) > 0 {
		fmt.Fprintf(b.out, "\nProfiles written: %d files, e.g. %s (merge: go tool pprof -top FILES…)\n", len(b.profiles), b.profiles[0])
	}
	fmt.Fprintf(b.out, "\nTook %s.\n", took.Round(time.Second))
}

// series collects per-run values by contender.
type series map[string][]float64

func (s series) add(k string, v float64) { s[k] = append(s[k], v) }

// addCPU records what m measured for contender c, per 1,000 of the
// recipients: the machine's busy CPU as "cpu-"+c and the bench process's
// share as "self-"+c (nothing where /proc is not to be read, or m
// measured nothing).
func (s series) addCPU(c string, m cpuMeter, recipients int) {
	if ms, self, ok := m.perThousand(recipients); ok {
		s.add("cpu-"+c, ms)
		s.add("self-"+c, self)
	}
}

func rotate(cs []string, rep int) []string {
	n := len(cs)
	out := make([]string, n)
	for i := range cs {
		out[i] = cs[(i+rep)%n]
	}
	return out
}

// runDatabase runs every selected scenario on d.
func (b *bench) runDatabase(ctx context.Context, d *database, primary bool) (err error) {
	o := b.o
	db := d.label()
	b.logf("%s: setting up", db)
	h, err := b.timedHarness(ctx, d, "")
	if err != nil {
		return err
	}
	h.streams = o.copyStreams
	defer func() {
		if cerr := h.close(context.WithoutCancel(ctx), o.keep); cerr != nil && err == nil {
			err = fmt.Errorf("clean up: %w", cerr)
		}
	}()
	poolA := max(o.backlog, 10*o.recipients)
	needA := false
	for _, s := range []string{"worker-a", "worker-c", "e2e-10x", "e2e-a", "naive", "latency", "memory", "load", "workers"} {
		needA = needA || o.has(s)
	}
	seedStart := time.Now()
	if needA {
		if err := h.seedPoolA(ctx, poolA); err != nil {
			return fmt.Errorf("seed users and rooms: %w", err)
		}
	} else if err := h.seedUsers(ctx, []string{sender}); err != nil {
		return fmt.Errorf("seed sender: %w", err)
	}
	if o.has("worker-c") {
		if err := h.seedRoomsC(ctx, o.backlog, poolA); err != nil {
			return fmt.Errorf("seed rooms: %w", err)
		}
	}
	// The targets are for tables as a deployment has them once
	// autovacuum (or the host) has visited them: with statistics and, on
	// PostgreSQL, vacuumed; the stats scenario measures tables without
	// statistics.
	for _, t := range h.st.Tables() {
		if err := d.settle(ctx, t); err != nil {
			return fmt.Errorf("settle (vacuum, analyze) %s: %w", t, err)
		}
	}
	b.logf("%s: seeded and analyzed in %v (prefix %s, queue %s)", db, time.Since(seedStart).Round(time.Millisecond), h.prefix, h.queue)

	res := map[string]series{}
	for _, s := range scenarioNames() {
		res[s] = series{}
	}
	if err := b.warmUp(ctx, h); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	for rep := range o.runs {
		for _, scen := range []string{"worker-a", "worker-b", "worker-c"} {
			if o.has(scen) {
				if err := b.workerRep(ctx, h, scen, rep, res[scen]); err != nil {
					return fmt.Errorf("%s run %d: %w", scen, rep+1, err)
				}
			}
		}
		if o.has("e2e-10x") {
			if err := b.e2eRep(ctx, h, "e2e-10x", rep, res["e2e-10x"]); err != nil {
				return fmt.Errorf("e2e-10x run %d: %w", rep+1, err)
			}
		}
		if o.has("e2e-a") || o.has("naive") || o.has("latency") {
			if err := b.e2eRep(ctx, h, "e2e-a", rep, res["e2e-a"]); err != nil {
				return fmt.Errorf("e2e-a run %d: %w", rep+1, err)
			}
		}
		if o.has("e2e-b") {
			if err := b.e2eRep(ctx, h, "e2e-b", rep, res["e2e-b"]); err != nil {
				return fmt.Errorf("e2e-b run %d: %w", rep+1, err)
			}
		}
	}
	rec := group(int64(o.recipients))
	labels := map[string]string{
		"worker-a": "1 worker rate (a) receivers, rooms exist, " + group(int64(o.backlog)) + " backlog",
		"worker-b": "1 worker rate (b) receivers, rooms created, " + group(int64(o.backlog)) + " backlog",
		"worker-c": "1 worker rate (c) room paras, " + group(int64(o.backlog)) + " backlog",
		"e2e-10x":  "2 end to end, 10 concurrent × " + rec + " (a)",
		"e2e-a":    "2 end to end, 1 × " + rec + " (a)",
		"e2e-b":    "2 end to end, 1 × " + rec + " (b)",
	}
	// The targets are PostgreSQL's; the other databases' ratios are
	// reported beside them (and MariaDB/MySQL's rate compared with
	// PostgreSQL's in crossDatabase).
	targets := map[string]float64{"worker-a": 0.5, "worker-b": 0.35, "worker-c": 0.5, "e2e-10x": 0.4, "e2e-a": 0.3, "e2e-b": 0.2, "naive": 10}
	if d.name != "postgres" {
		clear(targets)
	}
	for _, scen := range []string{"worker-a", "worker-b", "worker-c", "e2e-10x", "e2e-a", "e2e-b"} {
		if !o.has(scen) {
			continue
		}
		s := res[scen]
		b.rows = append(b.rows, ratioRow(scen, labels[scen]+" vs plain INSERT", db, s["chatbatch"], s["plain"], targets[scen]))
		if len(s["repeat"]) > 0 {
			b.rows = append(b.rows, ratioRow(scen, labels[scen]+", a repeat send (the rooms known to the directory cache) vs plain INSERT", db, s["repeat"], s["plain"], 0))
		}
		b.boundRows(scen, labels[scen], db, s)
		if scen == "worker-b" && len(s["least"]) > 0 {
			b.rows = append(b.rows,
				ratioRow(scen, labels[scen]+": the least it does, without chatbatch: per chunk of recipients, one look-up of the pairs' members (none found), the rooms and their members inserted, the messages written (pgx CopyFrom on PostgreSQL), vs plain INSERT", db, s["least"], s["plain"], 0),
				ratioRow(scen, labels[scen]+" vs the least it does", db, s["chatbatch"], s["least"], 0))
		}
		if scen == "worker-b" && len(s["leastkept"]) > 0 {
			b.rows = append(b.rows,
				ratioRow(scen, labels[scen]+": the least it does with chatbatch's start and completion of each chunk (its StartChunk and CompleteChunk), vs plain INSERT", db, s["leastkept"], s["plain"], 0),
				ratioRow(scen, labels[scen]+" vs the least it does with the chunks' bookkeeping", db, s["chatbatch"], s["leastkept"], 0))
		}
		if scen == "worker-c" && len(s["kept"]) > 0 {
			b.rows = append(b.rows,
				ratioRow(scen, labels[scen]+": "+o.keptShape.label()+", vs plain INSERT", db, s["kept"], s["plain"], 0),
				ratioRow(scen, labels[scen]+" vs "+o.keptShape.short(), db, s["chatbatch"], s["kept"], 0))
		}
		if strings.HasPrefix(scen, "e2e") && len(s["least"]) > 0 {
			b.rows = append(b.rows,
				ratioRow(scen, labels[scen]+": the least it does, without chatbatch: each request's receivers looked up, then per chunk of recipients, one look-up of the pairs' members and the messages' write, vs plain INSERT", db, s["least"], s["plain"], 0),
				ratioRow(scen, labels[scen]+" vs the least it does", db, s["chatbatch"], s["least"], 0))
		}
		if strings.HasPrefix(scen, "e2e") && len(s["leastkept"]) > 0 {
			b.rows = append(b.rows,
				ratioRow(scen, labels[scen]+": the least it does with the bookkeeping: as the least, with each request's batch and chunks stored (bunstore's CreateBatch) after its look-up, and each chunk started and completed (its StartChunk and CompleteChunk), vs plain INSERT", db, s["leastkept"], s["plain"], 0),
				ratioRow(scen, labels[scen]+" vs the least it does with the bookkeeping", db, s["chatbatch"], s["leastkept"], 0))
		}
		if d.name == "postgres" {
			b.rows = append(b.rows, ratioRow(scen, labels[scen]+" vs pgx CopyFrom, "+strconv.Itoa(o.copyStreams)+" streams (ceiling)", db, s["chatbatch"], s["copy"], 0))
		}
	}
	if o.has("floor") {
		b.floorRows(db, res["worker-a"])
	}
	b.workerA[d.name] = res["worker-a"]["chatbatch"]
	if o.has("naive") {
		s := res["e2e-a"]
		b.rows = append(b.rows, ratioRow("naive", "3 end to end, 1 × "+rec+" (a) vs one asynq task per recipient", db, s["chatbatch"], s["naive"], targets["naive"]))
		if o.has("e2e-10x") {
			// The naive design's rate does not depend on the size of the
			// workload (one task per recipient, steady state), so its rate
			// is also set beside chatbatch's at 10 × the requests.
			b.rows = append(b.rows, ratioRow("naive", "3 end to end, 10 concurrent × "+rec+" (a) vs one asynq task per recipient (rate of the 1 × run)", db, res["e2e-10x"]["chatbatch"], s["naive"], 0))
		}
	}
	if o.has("latency") {
		lat := res["e2e-a"]["latency"]
		r := row{scenario: "latency", label: "4 first chunk started − 200 response, 1 × " + rec + " (a)", db: db,
			cb: spread(lat, fmtMs), base: "—", ratio: "—", target: "≤ 100 ms"}
		r.result = passFail(median(lat) <= 100)
		b.rows = append(b.rows, r)
	}
	if o.has("stats") && d.name == "postgres" {
		if err := b.stats(ctx, d); err != nil {
			return fmt.Errorf("stats: %w", err)
		}
	}
	if o.has("memory") && primary {
		if err := b.memory(ctx, h, poolA); err != nil {
			return fmt.Errorf("memory: %w", err)
		}
	}
	if o.has("load") && primary {
		if err := b.load(ctx, h, poolA); err != nil {
			return fmt.Errorf("load: %w", err)
		}
	}
	if o.has("workers") {
		if why := b.workersSupported(d); why != "" {
			b.rows = append(b.rows, row{scenario: "workers", label: "skipped: " + why, db: db, cb: "—", base: "—", ratio: "—"})
		} else if err := b.workers(ctx, h); err != nil {
			return fmt.Errorf("workers: %w", err)
		}
	}
	// The bookkeeping scenarios (retention.go), each in tables of its own.
	for _, s := range []struct {
		name string
		run  func(context.Context, *database) error
	}{{"bytes", b.bytesScenario}, {"retention", b.retention}, {"plans", b.plans}, {"reads", b.reads}} {
		if o.has(s.name) {
			if err := s.run(ctx, d); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
		}
	}
	return nil
}

// warmUp runs, unmeasured, requests of each kind the selected scenarios
// send through chatbatch, and the same rows through the baselines, so
// that no measured run pays for first use on either side: pool
// connections opened, statements prepared and planned on each of them,
// caches filled. The requests go 10 at once when e2e-10x is selected, so
// that as many connections are warmed as it uses.
func (b *bench) warmUp(ctx context.Context, h *harness) error {
	o := b.o
	var kinds []string
	for kind, scens := range map[string][]string{
		"e2e-a":    {"worker-a", "e2e-10x", "e2e-a", "naive", "latency"},
		"e2e-b":    {"worker-b", "e2e-b"},
		"worker-c": {"worker-c"},
	} {
		if slices.ContainsFunc(scens, o.has) {
			kinds = append(kinds, kind)
		}
	}
	slices.Sort(kinds)
	requests := 1
	if o.has("e2e-10x") {
		requests = 10
	}
	start := time.Now()
	for _, kind := range kinds {
		n := requests * o.recipients
		if kind == "worker-c" {
			n = min(n, o.backlog) // the rooms seeded for (c)
		}
		// (b) creates rooms: fresh receivers for every contender.
		newPlan := func() plan { return splitPlan(n, o.recipients, paraFor(kind, b.fresh(), 0)) }
		withRooms := kind == "e2e-b"
		p := newPlan()
		if withRooms {
			if err := b.seedFresh(ctx, h, p); err != nil {
				return err
			}
		}
		if _, _, err := b.endToEnd(ctx, h, p, "warm-up-"+kind, 0, false); err != nil {
			return fmt.Errorf("%s: chatbatch: %w", kind, err)
		}
		if _, err := h.runPlain(ctx, baselineBatches(newPlan()), withRooms); err != nil {
			return fmt.Errorf("%s: plain: %w", kind, err)
		}
		if h.d.name == "postgres" {
			if _, err := h.runCopy(ctx, baselineBatches(newPlan()), withRooms); err != nil {
				return fmt.Errorf("%s: copy: %w", kind, err)
			}
		}
	}
	if len(kinds) > 0 {
		b.logf("%s: warmed up (%s, %d × %s recipients each, not measured) in %v", h.d.label(), strings.Join(kinds, ", "), requests, group(int64(o.recipients)), time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// paraFor makes the i-th recipient of a scenario; tag names fresh users.
func paraFor(scen, tag string, offset int) func(i int) para {
	switch scen {
	case "worker-b", "e2e-b":
		return func(i int) para { return para{receiver: userB(tag, i), n: i} }
	case "worker-c":
		return func(i int) para { return para{room: roomC(i), n: i} }
	default:
		return func(i int) para { return para{receiver: userA(offset + i), n: offset + i} }
	}
}

// seedFresh adds the users of a (b) plan: they exist, their rooms do not.
func (b *bench) seedFresh(ctx context.Context, h *harness, p plan) error {
	var users []string
	for k := range p.requests {
		for _, q := range p.gen(k) {
			users = append(users, q.receiver)
		}
	}
	return h.seedUsers(ctx, users)
}

// workerRep is one run of a worker-rate scenario: plain INSERT, pgx
// CopyFrom (PostgreSQL) and chatbatch, in rotating order.
func (b *bench) workerRep(ctx context.Context, h *harness, scen string, rep int, s series) error {
	o := b.o
	withRooms := scen == "worker-b"
	contenders := []string{"plain", "chatbatch"}
	if h.d.name == "postgres" {
		contenders = []string{"plain", "copy", "chatbatch"}
	}
	if scen == "worker-a" && h.caches {
		// A repeat send: the receivers' rooms known to bunstore's
		// directory cache (where it has one).
		contenders = append(contenders, "repeat")
	}
	if scen == "worker-a" && o.has("floor") {
		contenders = append(contenders, "floor", "unchecked", "nocheck", "least", "leastkept")
	}
	if scen == "worker-b" && o.has("floor") {
		contenders = append(contenders, "least", "leastkept") // the floor of (b)
	}
	if scen == "worker-c" && o.has("floor") {
		// (c)'s least is the write alone (plain, copy); this is the write
		// with the chunks' bookkeeping.
		contenders = append(contenders, "kept")
	}
	for _, c := range rotate(contenders, rep) {
		var rate float64
		var err error
		// (b) needs fresh receivers for every contender: each creates rooms.
		p := splitPlan(o.backlog, o.recipients, paraFor(scen, b.fresh(), 0))
		if err := h.emptyMessages(ctx); err != nil {
			return err
		}
		switch c {
		case "chatbatch", "repeat":
			if withRooms {
				if err := b.seedFresh(ctx, h, p); err != nil {
					return fmt.Errorf("seed fresh users: %w", err)
				}
			}
			rate, err = b.workerRate(ctx, h, p, scen, rep, c == "repeat")
		case "plain":
			rate, err = h.runPlain(ctx, baselineBatches(p), withRooms)
		case "copy":
			rate, err = h.runCopy(ctx, baselineBatches(p), withRooms)
		case "least", "leastkept":
			rate, err = h.runLeast(ctx, baselineBatches(p), withRooms, c == "leastkept")
		case "kept":
			rate, err = h.runKept(ctx, baselineBatches(p))
		case "floor", "unchecked", "nocheck":
			rate, err = b.floorRate(ctx, h, p, c, rep)
		}
		if err != nil {
			return err
		}
		s.add(c, rate)
		// The machine's CPU over the span the rate was timed over: the
		// baselines' statements, chatbatch's worker phase (not its accept).
		s.addCPU(c, h.phaseCPU, o.backlog)
		b.logf("%s: %s run %d/%d: %-9s %s msgs/s (%v waited for a quiet machine)", h.d.label(), scen, rep+1, o.runs, c, fmtRate(rate), h.waited.Round(time.Millisecond))
	}
	return nil
}

// workerRate accepts the plan with the worker stopped, then runs the
// worker until every batch is done, and returns recipients per second
// from the first chunk's started_at to the last batch's finished_at.
// repeat makes it a repeat send: the directory cache knows the
// receivers' rooms, as an earlier send to them left it.
func (b *bench) workerRate(ctx context.Context, h *harness, p plan, scen string, rep int, repeat bool) (float64, error) {
	if err := h.stopWorker(); err != nil {
		return 0, err
	}
	bs, err := h.acceptPlan(ctx, p)
	if err != nil {
		return 0, err
	}
	if repeat {
		if err := h.warmDirectory(ctx, p); err != nil {
			return 0, fmt.Errorf("warm the directory cache: %w", err)
		}
	}
	if err := h.quiet(ctx); err != nil {
		return 0, err
	}
	stop := b.profile(h.d.label(), scen, rep)
	h.phaseCPU = startCPU()
	h.startWorker()
	_, err = h.waitDone(ctx, bs)
	h.phaseCPU.stop()
	stopErr := h.stopWorker()
	stop()
	if err != nil {
		return 0, err
	}
	if stopErr != nil {
		return 0, stopErr
	}
	first, last, err := h.span(ctx, bs)
	if err != nil {
		return 0, err
	}
	if err := h.verify(ctx, bs); err != nil {
		return 0, err
	}
	total := 0
	for _, a := range bs {
		total += a.count
	}
	return float64(total) / last.Sub(first).Seconds(), nil
}

// e2eRep is one run of an end-to-end scenario: e2e-10x (10 concurrent
// requests, a), e2e-a (one request; also the naive and latency
// scenarios), e2e-b (one request, fresh receivers).
func (b *bench) e2eRep(ctx context.Context, h *harness, scen string, rep int, s series) error {
	o := b.o
	requests := 1
	if scen == "e2e-10x" {
		requests = 10
	}
	var contenders []string
	if o.has(scen) {
		contenders = append(contenders, "plain")
		if h.d.name == "postgres" {
			contenders = append(contenders, "copy")
		}
	}
	contenders = append(contenders, "chatbatch")
	if scen == "e2e-a" && h.caches {
		contenders = append(contenders, "repeat") // as in workerRep
	}
	if scen == "e2e-a" && o.has("naive") {
		contenders = append(contenders, "naive")
	}
	if scen != "e2e-b" && o.has("floor") {
		contenders = append(contenders, "least", "leastkept") // the floor of (a) end to end
	}
	for _, c := range rotate(contenders, rep) {
		p := splitPlan(requests*o.recipients, o.recipients, paraFor(scen, b.fresh(), 0))
		var rate float64
		var err error
		h.phaseCPU = cpuMeter{} // the naive contender measures none
		if err := h.emptyMessages(ctx); err != nil {
			return err
		}
		switch c {
		case "chatbatch":
			if scen == "e2e-b" {
				if err := b.seedFresh(ctx, h, p); err != nil {
					return fmt.Errorf("seed fresh users: %w", err)
				}
			}
			var latency time.Duration
			rate, latency, err = b.endToEnd(ctx, h, p, scen, rep, false)
			if err == nil && requests == 1 {
				s.add("latency", float64(latency)/float64(time.Millisecond))
				b.logf("%s: %s run %d/%d: start latency %s", h.d.label(), scen, rep+1, o.runs, fmtMs(float64(latency)/float64(time.Millisecond)))
			}
		case "repeat":
			rate, _, err = b.endToEnd(ctx, h, p, scen, rep, true)
		case "plain":
			rate, err = h.runPlain(ctx, baselineBatches(p), scen == "e2e-b")
		case "copy":
			rate, err = h.runCopy(ctx, baselineBatches(p), scen == "e2e-b")
		case "naive":
			rate, err = h.runNaive(ctx, baselineBatches(p))
		case "least", "leastkept":
			rate, err = h.runLeastEndToEnd(ctx, baselineBatches(p), c == "leastkept")
		}
		if err != nil {
			return fmt.Errorf("%s: %w", c, err)
		}
		s.add(c, rate)
		s.addCPU(c, h.phaseCPU, requests*o.recipients)
		b.logf("%s: %s run %d/%d: %-9s %s msgs/s (%v waited for a quiet machine)", h.d.label(), scen, rep+1, o.runs, c, fmtRate(rate), h.waited.Round(time.Millisecond))
	}
	return nil
}

// endToEnd posts every request of p at once to a running worker and
// returns recipients per second from the first POST to the last
// OnBatchDone, and (for one request) the start latency: the first
// chunk's started_at minus the time the 200 response was read. The
// directory cache starts empty (a first send to these receivers), or
// with repeat as an earlier send to them left it.
func (b *bench) endToEnd(ctx context.Context, h *harness, p plan, scen string, rep int, repeat bool) (float64, time.Duration, error) {
	bodies := make([][]byte, p.requests)
	firsts := make([]para, p.requests)
	total := 0
	for k := range bodies {
		ps := p.gen(k)
		bodies[k], firsts[k] = requestBody(ps), ps[0]
		total += len(ps)
	}
	h.st.ForgetDirectory()
	if repeat {
		if err := h.warmDirectory(ctx, p); err != nil {
			return 0, 0, fmt.Errorf("warm the directory cache: %w", err)
		}
	}
	if err := h.quiet(ctx); err != nil {
		return 0, 0, err
	}
	h.startWorker()
	time.Sleep(workerWarmup)
	stop := b.profile(h.d.label(), scen, rep)
	bs := make([]acceptedBatch, len(bodies))
	errs := make([]error, len(bodies))
	h.phaseCPU = startCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for k, body := range bodies {
		wg.Go(func() { bs[k], errs[k] = h.post(ctx, body) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		stop()
		return 0, 0, err
	}
	last, err := h.waitDone(ctx, bs)
	h.phaseCPU.stop()
	stop()
	if stopErr := h.stopWorker(); err == nil {
		err = stopErr
	}
	if err != nil {
		return 0, 0, err
	}
	for k := range bs {
		bs[k].first = firsts[k]
	}
	if err := h.verify(ctx, bs); err != nil {
		return 0, 0, err
	}
	var latency time.Duration
	if len(bs) == 1 {
		first, _, err := h.span(ctx, bs)
		if err != nil {
			return 0, 0, err
		}
		latency = first.Sub(bs[0].respAt)
		b.logf("%s: %s run %d/%d: accepted (POST to its 200) in %s, done %s after its 200", h.d.label(), scen, rep+1, b.o.runs,
			fmtMs(float64(bs[0].respAt.Sub(start))/float64(time.Millisecond)), fmtMs(float64(last.Sub(bs[0].respAt))/float64(time.Millisecond)))
	}
	return float64(total) / last.Sub(start).Seconds(), latency, nil
}

// stats runs worker rate (a) on never-analyzed tables and again after
// ANALYZE, in a fresh prefix per run (PostgreSQL).
func (b *bench) stats(ctx context.Context, d *database) error {
	o := b.o
	var un, an []float64
	for rep := range o.runs {
		u, a, err := b.statsRep(ctx, d, rep)
		if err != nil {
			return fmt.Errorf("run %d: %w", rep+1, err)
		}
		un, an = append(un, u), append(an, a)
	}
	b.rows = append(b.rows, ratioRow("stats", "5 worker rate (a), "+group(int64(o.backlog))+" backlog: never analyzed vs analyzed (baseline column)", d.label(), un, an, 1/1.5))
	return nil
}

// timedHarness is a harness for the scenarios that time contenders:
// -concurrency, -quiet and -task-check-interval applied.
func (b *bench) timedHarness(ctx context.Context, d *database, tag string) (*harness, error) {
	h, err := newHarness(ctx, d, b.redis, b.o.concurrency, tag)
	if err != nil {
		return nil, err
	}
	h.quietMax = b.o.quiet
	h.taskCheck = b.o.taskCheckInterval
	h.keptShape = b.o.keptShape
	return h, nil
}

func (b *bench) statsRep(ctx context.Context, d *database, rep int) (unanalyzed, analyzed float64, err error) {
	o := b.o
	h, err := b.timedHarness(ctx, d, "s")
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if cerr := h.close(context.WithoutCancel(ctx), o.keep); cerr != nil && err == nil {
			err = cerr
		}
	}()
	tables := h.st.Tables()
	for _, t := range tables {
		if _, err := d.sql.ExecContext(ctx, "ALTER TABLE "+t+" SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)"); err != nil {
			return 0, 0, fmt.Errorf("disable autovacuum on %s: %w", t, err)
		}
	}
	n := 2 * o.backlog
	start := time.Now()
	if err := h.seedPoolA(ctx, n); err != nil {
		return 0, 0, fmt.Errorf("seed: %w", err)
	}
	var analyzedTables int
	if err := d.sql.QueryRowContext(ctx, "SELECT COUNT(*) FROM pg_stat_user_tables WHERE relname = ANY($1) AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)", tables).Scan(&analyzedTables); err != nil {
		return 0, 0, err
	}
	if analyzedTables > 0 {
		return 0, 0, fmt.Errorf("%d tables were analyzed although autovacuum is off", analyzedTables)
	}
	b.logf("%s: stats run %d/%d: loaded %s users, rooms and 2× members in %v, not analyzed", d.label(), rep+1, o.runs, group(int64(n)), time.Since(start).Round(time.Millisecond))
	unanalyzed, err = b.workerRate(ctx, h, splitPlan(o.backlog, o.recipients, paraFor("worker-a", "", 0)), "stats-unanalyzed", rep, false)
	if err != nil {
		return 0, 0, fmt.Errorf("unanalyzed: %w", err)
	}
	b.logf("%s: stats run %d/%d: unanalyzed %s msgs/s", d.label(), rep+1, o.runs, fmtRate(unanalyzed))
	for _, t := range tables {
		if _, err := d.sql.ExecContext(ctx, "ANALYZE "+t); err != nil {
			return 0, 0, fmt.Errorf("analyze %s: %w", t, err)
		}
	}
	analyzed, err = b.workerRate(ctx, h, splitPlan(o.backlog, o.recipients, paraFor("worker-a", "", o.backlog)), "stats-analyzed", rep, false)
	if err != nil {
		return 0, 0, fmt.Errorf("analyzed: %w", err)
	}
	b.logf("%s: stats run %d/%d: analyzed   %s msgs/s", d.label(), rep+1, o.runs, fmtRate(analyzed))
	return unanalyzed, analyzed, nil
}

// memory measures the worker's heap at each backlog of -memory-sizes, and
// Redis's memory per queued batch, once per size.
func (b *bench) memory(ctx context.Context, h *harness, poolA int) error {
	o := b.o
	db := h.d.label()
	var heaps []float64
	for _, size := range o.memorySizes {
		p := splitPlan(size, o.recipients, func(i int) para { return para{receiver: userA(i % poolA), n: i} })
		if err := h.stopWorker(); err != nil {
			return err
		}
		runtime.GC()
		usedBefore, usedOK := b.redis.usedMemory(ctx)
		bs, err := h.acceptPlan(ctx, p)
		if err != nil {
			return err
		}
		usedAfter, _ := b.redis.usedMemory(ctx)
		qBytes, qKeys, qErr := b.redis.queueMemory(ctx, h.queue)
		chunks := 0
		for _, a := range bs {
			chunks += (a.count + unit - 1) / unit
		}

		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		before := ms.HeapInuse
		peak := before
		stopSampling := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			var ms runtime.MemStats
			for {
				select {
				case <-stopSampling:
					return
				case <-t.C:
					runtime.ReadMemStats(&ms)
					peak = max(peak, ms.HeapInuse)
				}
			}
		}()
		stop := b.profile(db, "memory-"+strconv.Itoa(size), 0)
		start := time.Now()
		h.startWorker()
		_, err = h.waitDone(ctx, bs)
		close(stopSampling)
		<-sampled
		stopErr := h.stopWorker()
		stop()
		if err != nil {
			return err
		}
		if stopErr != nil {
			return stopErr
		}
		if err := h.verify(ctx, bs); err != nil {
			return err
		}
		b.logf("%s: memory %s recipients: heap in use %s before the worker, max %s while it ran (%v)", db, group(int64(size)), fmtMB(float64(before)), fmtMB(float64(peak)), time.Since(start).Round(time.Millisecond))
		heaps = append(heaps, float64(peak))
		b.rows = append(b.rows, row{scenario: "memory", label: "6 worker heap, max HeapInuse while running, " + group(int64(size)) + " recipients (" + group(int64(len(bs))) + " batches)", db: db,
			cb: fmtMB(float64(peak)), base: "—", ratio: "—", target: "(before start: " + fmtMB(float64(before)) + ")"})
		redisCell := "n/a (no INFO memory)"
		if usedOK {
			delta := float64(usedAfter - usedBefore)
			redisCell = fmt.Sprintf("INFO used_memory Δ %s/batch, %s/chunk", fmtBytes(delta/float64(len(bs))), fmtBytes(delta/float64(chunks)))
		}
		if qErr == nil && qKeys > 0 {
			redisCell += fmt.Sprintf("; queue keys (MEMORY USAGE of %d keys) %s/batch, %s/chunk", qKeys, fmtBytes(float64(qBytes)/float64(len(bs))), fmtBytes(float64(qBytes)/float64(chunks)))
		}
		b.rows = append(b.rows, row{scenario: "memory", label: "6 Redis per queued batch, " + group(int64(size)) + " recipients queued, worker stopped (" + group(int64(chunks)) + " chunks)", db: "redis",
			cb: redisCell, base: "—", ratio: "—"})
	}
	if len(heaps) > 1 {
		first, last := o.memorySizes[0], o.memorySizes[len(o.memorySizes)-1]
		r := row{scenario: "memory", label: "6 worker heap: " + group(int64(last)) + " recipients vs " + group(int64(first)), db: db,
			cb: fmtMB(heaps[len(heaps)-1]), base: fmtMB(heaps[0]), ratio: fmtRatio(heaps[len(heaps)-1] / heaps[0]), target: "≤ 1.50×"}
		r.result = passFail(heaps[len(heaps)-1] <= 1.5*heaps[0])
		b.rows = append(b.rows, r)
	}
	return nil
}

func fmtBytes(x float64) string {
	if x >= 10*1024 {
		return strconv.FormatFloat(x/1024, 'f', 1, 64) + " KiB"
	}
	return group(int64(x+0.5)) + " B"
}

// crossDatabase adds the MariaDB/MySQL vs PostgreSQL comparison.
func (b *bench) crossDatabase() {
	my, pg := b.workerA["mysql"], b.workerA["postgres"]
	if len(my) == 0 || len(pg) == 0 {
		return
	}
	name := "mysql"
	for _, d := range b.dbs {
		if d.name == "mysql" {
			name = d.label()
		}
	}
	ratio := median(my) / median(pg)
	b.rows = append(b.rows, row{scenario: "worker-a", label: "7 worker rate (a): " + name + " (chatbatch column) vs postgres (baseline column)", db: name + "/postgres",
		cb: spread(my, fmtRate), base: spread(pg, fmtRate), ratio: fmtRatio(ratio), target: "≥ 0.80×", result: passFail(ratio >= 0.8)})
}

// profile starts the CPU profile and the heap profile pair of one
// chatbatch run (when asked for) and returns the function that ends them.
func (b *bench) profile(db, scen string, rep int) func() {
	o := b.o
	if o.cpuprofile == "" && o.memprofile == "" {
		return func() {}
	}
	suffix := "." + db + "." + scen + "." + strconv.Itoa(rep+1)
	var cpu *os.File
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile + suffix)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			b.logf("cpuprofile: %v", err)
			if f != nil {
				f.Close()
			}
		} else {
			cpu = f
			b.profiles = append(b.profiles, f.Name())
		}
	}
	writeHeap := func(name string) {
		f, err := os.Create(name)
		if err == nil {
			err = pprof.Lookup("heap").WriteTo(f, 0)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			b.logf("memprofile: %v", err)
			return
		}
		b.profiles = append(b.profiles, name)
	}
	if o.memprofile != "" {
		writeHeap(o.memprofile + suffix + ".before")
	}
	return func() {
		if cpu != nil {
			pprof.StopCPUProfile()
			cpu.Close()
		}
		if o.memprofile != "" {
			writeHeap(o.memprofile + suffix)
		}
	}
}
