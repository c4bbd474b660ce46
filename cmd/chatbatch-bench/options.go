package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chatbatch/chatbatch/batch"
)

// scenarioInfo describes one value of -scenarios.
type scenarioInfo struct {
	name, desc string
}

// scenarios lists every scenario in the order they run and print.
var scenarios = []scenarioInfo{
	{"worker-a", "1 worker rate, receivers whose one-on-one rooms exist (a): backlog accepted with the worker stopped, then first chunk started → last chunk done; a first send (the directory cache emptied before the accept) and a repeat send (the rooms known to it; not where the store keeps no cache)"},
	{"worker-b", "1 worker rate, receivers without rooms (b): the worker creates every room; the baseline writes rooms + members + messages"},
	{"worker-c", "1 worker rate, room paras (c), rooms of 2 members"},
	{"floor", "1 worker rate (a) with a Messages that stores nothing, again without the send-time check of receivers and rooms too, and writing but not checking, run with worker-a: what the worker's other store calls cost, what the check costs, each contender's CPU and the bound it sets; and the least a first send does, without chatbatch (per chunk of recipients, one look-up of the pairs' members and the messages' write: pgx CopyFrom on PostgreSQL, the plain INSERT's statements elsewhere), in worker-b the least that creates rooms (the look-up finds none; the rooms and their members inserted, then the messages), each again with chatbatch's start and completion of every chunk (leastkept), in worker-c the messages' write with chatbatch's start and completion of each chunk and nothing else (the least of (c) is the write: plain INSERT, pgx CopyFrom), and in e2e-10x and e2e-a the least those requests do (each request's receivers looked up first), again with each request's batch stored by chatbatch's CreateBatch and its chunks started and completed (leastkept)"},
	{"e2e-10x", "2 end to end, 10 concurrent requests (a): first POST → every batch completed"},
	{"e2e-a", "2 end to end, one request (a); a first send (the directory cache emptied before it) and a repeat send (the rooms known to it; not where the store keeps no cache)"},
	{"e2e-b", "2 end to end, one request (b)"},
	{"naive", "3 chatbatch end to end, one request (a), vs one asynq task per recipient each doing one INSERT"},
	{"latency", "4 start latency of one batch: first chunk's started_at − the client's 200 response"},
	{"stats", "5 worker rate (a) on never-analyzed tables (autovacuum off) vs the same after ANALYZE; PostgreSQL only"},
	{"memory", "6 worker heap (max HeapInuse while running) at growing backlogs, and Redis memory per queued batch"},
	{"load", "8 accept latency under load: -load-clients clients posting -load-recipients batches back to back for -load-duration while the worker runs; every batch verified; first database only"},
	{"bytes", "9 bookkeeping bytes per recipient (batches + chunks + idempotency-keys tables) vs the message rows' bytes per recipient, after -backlog recipients of (a) sent through the API with an Idempotency-Key each; fresh tables"},
	{"retention", "10 (not in the default set) -retention-cycles (2) cycles of -retention-recipients sent as 2,000 batches of (a) and pruned by the library's own sweep (a second Service whose clock is past Config.Retention): bookkeeping size after each step, each Sweep call timed, pruned batches answer 404 and their messages stay; fresh tables"},
	{"workers", "12 (not in the default set) sizing: -backlog recipients of (a) accepted with no worker running, drained by 1, 2 and 4 worker processes (this binary again, each a Service.Run with -concurrency) on the one PostgreSQL; the rate, and the CPU of every postgres process, of the workers' own backends and of the worker processes, read from /proc; PostgreSQL on this machine and a real Redis only"},
	{"plans", "11 (not in the default set) the plans of the store's own ListBatches, PendingChunks and PruneBatches SELECTs, captured as sent, at each of -plan-sizes finished batches (cloned by INSERT … SELECT); fresh tables"},
	{"reads", "13 (not in the default set) read receipts: -backlog recipients of (a) sent, then the first read of each recorded through Service.MarkReads (1,000 a call, -concurrency at once), timed against the send; every read recorded once, a second pass records none, no batch row written (PostgreSQL: xmin); fresh tables"},
}

// optIn are the scenarios that run only when named (or with "all").
var optIn = []string{"retention", "plans", "workers", "reads"}

func scenarioNames() []string {
	var names []string
	for _, s := range scenarios {
		names = append(names, s.name)
	}
	return names
}

// options are the parsed flags.
type options struct {
	postgres, mysql     string
	sqlite              bool
	redis               string
	concurrency         int
	taskCheckInterval   time.Duration
	recipients          int
	backlog             int
	runs                int
	scenarios           map[string]bool
	quick, strict       bool
	quiet               time.Duration
	cpuprofile          string
	memprofile          string
	memorySizes         []int
	keep                bool
	copyStreams         int
	sqliteDSN           string
	loadClients         int
	loadRecipients      int
	loadDuration        time.Duration
	loadMaxPending      int
	retentionRecipients int
	retentionCycles     int
	planSizes           []int
	keptShape           keptShape
}

func (o *options) has(s string) bool { return o.scenarios[s] }

// usageError is a bad flag: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

const maxRecipients = batch.DefaultMaxRecipients

const usageHead = `chatbatch-bench: chatbatch's end-to-end throughput beside baselines, in one process.

Usage: chatbatch-bench [flags]

Each database given is benchmarked in turn (SQLite, in a temporary file,
unless -sqlite=false). Every scenario repeats -runs times; each repetition
runs the baselines and chatbatch back to back, alternating their order, and
the table shows medians with min–max.

Flags:
`

// parseFlags parses args. Flags not given take -quick's defaults when
// -quick is set.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("chatbatch-bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.postgres, "postgres", "", "PostgreSQL `DSN` (postgres://…); empty: not benchmarked")
	fs.StringVar(&o.mysql, "mysql", "", "MySQL/MariaDB `DSN` (user:pass@tcp(host:3306)/db or mysql://…); empty: not benchmarked")
	fs.BoolVar(&o.sqlite, "sqlite", true, "benchmark SQLite (a file in a temporary directory, WAL)")
	fs.StringVar(&o.redis, "redis", "127.0.0.1:6379", "Redis `address` (host:port or redis://…); \"mem\": an in-process miniredis (numbers not comparable)")
	fs.IntVar(&o.concurrency, "concurrency", 10, "worker concurrency (chunks at once), and goroutines of every baseline")
	fs.DurationVar(&o.taskCheckInterval, "task-check-interval", 0, "the worker's batch.Config.TaskCheckInterval, how long an idle worker waits before it polls the queue again (and the naive baseline's); 0: its default, batch.DefaultTaskCheckInterval")
	fs.IntVar(&o.recipients, "recipients", maxRecipients, "recipients per request (at most 10000)")
	fs.IntVar(&o.backlog, "backlog", 100_000, "recipients accepted before the worker starts, in the worker-rate and stats scenarios")
	fs.IntVar(&o.runs, "runs", 3, "repetitions of each scenario")
	scen := fs.String("scenarios", "", "comma-separated `list` of scenarios (default all but "+strings.Join(optIn, ", ")+"; \"all\": every one): "+strings.Join(scenarioNames(), ", "))
	fs.BoolVar(&o.quick, "quick", false, "a short run (under a minute): -runs 1 -quiet 2s -recipients 1000 -backlog 5000 -memory-sizes 5000,20000 -load-clients 4 -load-recipients 100 -load-duration 2s -retention-recipients 20000 -plan-sizes 1000,10000, no stats scenario")
	fs.DurationVar(&o.quiet, "quiet", 30*time.Second, "before each contender's measured span, wait up to this long for the machine to be quiet (what ran before it no longer keeping the cores or the disk busy); 0: do not wait")
	fs.BoolVar(&o.strict, "strict", false, "exit with status 3 when a target is missed")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of each chatbatch run (and floor contender) to `file` (one file per run, named file.DB.SCENARIO.RUN; floor contenders as SCENARIO floor-NAME)")
	fs.StringVar(&o.memprofile, "memprofile", "", "write heap profiles before and after each chatbatch run to `file`.DB.SCENARIO.RUN[.before] (compare with pprof -base)")
	sizes := fs.String("memory-sizes", "10000,100000,1000000", "backlogs (recipients) of the memory scenario; the last is compared with the first")
	fs.IntVar(&o.copyStreams, "copy-streams", 0, "connections of the pgx CopyFrom baseline (default: -concurrency)")
	fs.BoolVar(&o.keep, "keep", false, "keep the tables and queues afterwards, and SQLite's temporary directory (for inspection)")
	fs.IntVar(&o.loadClients, "load-clients", 32, "clients of the load scenario")
	fs.IntVar(&o.loadRecipients, "load-recipients", 1000, "recipients per batch in the load scenario")
	fs.DurationVar(&o.loadDuration, "load-duration", 60*time.Second, "how long the load scenario's clients post")
	fs.IntVar(&o.loadMaxPending, "load-max-pending", 200_000, "admission control in the load scenario (batch.Admission.MaxPending; chatbatchd's default): refused POSTs wait their Retry-After and post again; 0: off")
	fs.IntVar(&o.retentionRecipients, "retention-recipients", 1_000_000, "recipients of each cycle of the retention scenario, sent as 2,000 batches (at least 1 recipient each)")
	fs.IntVar(&o.retentionCycles, "retention-cycles", 2, "send-and-prune cycles of the retention scenario (at least 2: the second shows whether the space is reused)")
	shape := fs.String("kept-shape", string(keptStore), "how worker-c's kept contender (with floor) writes the chunks' bookkeeping, on SQLite and MySQL: store (bunstore's StartChunk and CompleteChunk), one-tx (the same statements and the messages in one transaction a chunk), small-rows (the claim and the outcomes in rows of their own, without the recipients), none (the messages alone: a control)")
	planSizes := fs.String("plan-sizes", "10000,1000000", "finished batches at which the plans scenario explains the store's queries; the largest is compared with the smallest")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usageHead)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, usagef("%v (run chatbatch-bench -h for the flags)", err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q (run chatbatch-bench -h for the flags)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["runs"] {
			o.runs = 1
		}
		if !set["quiet"] {
			o.quiet = 2 * time.Second
		}
		if !set["recipients"] {
			o.recipients = 1000
		}
		if !set["backlog"] {
			o.backlog = 5000
		}
		if !set["memory-sizes"] {
			*sizes = "5000,20000"
		}
		if !set["load-duration"] {
			o.loadDuration = 2 * time.Second
		}
		if !set["load-clients"] {
			o.loadClients = 4
		}
		if !set["load-recipients"] {
			o.loadRecipients = 100
		}
		if !set["retention-recipients"] {
			o.retentionRecipients = 20_000
		}
		if !set["plan-sizes"] {
			*planSizes = "1000,10000"
		}
	}
	switch {
	case o.concurrency < 1:
		return nil, usagef("-concurrency must be at least 1, not %d", o.concurrency)
	case o.recipients < 1 || o.recipients > maxRecipients:
		return nil, usagef("-recipients must be between 1 and %d (the API's limit per request), not %d", maxRecipients, o.recipients)
	case o.backlog < 1:
		return nil, usagef("-backlog must be at least 1, not %d", o.backlog)
	case o.copyStreams < 0:
		return nil, usagef("-copy-streams must not be negative, not %d", o.copyStreams)
	case o.quiet < 0:
		return nil, usagef("-quiet must not be negative, not %v", o.quiet)
	case o.runs < 1:
		return nil, usagef("-runs must be at least 1, not %d", o.runs)
	case o.loadClients < 1 || o.loadRecipients < 1 || o.loadRecipients > maxRecipients || o.loadDuration <= 0 || o.loadMaxPending < 0:
		return nil, usagef("-load-clients, -load-recipients (1–%d) and -load-duration must be positive", maxRecipients)
	case o.retentionRecipients < 1:
		return nil, usagef("-retention-recipients must be at least 1, not %d", o.retentionRecipients)
	case o.retentionCycles < 2:
		return nil, usagef("-retention-cycles must be at least 2, not %d", o.retentionCycles)
	case o.redis == "":
		return nil, usagef("-redis is empty; give host:port, redis://… or mem")
	case o.postgres == "" && o.mysql == "" && !o.sqlite:
		return nil, usagef("no database: give -postgres, -mysql, or leave -sqlite on")
	}
	o.keptShape = keptShape(*shape)
	switch {
	case !slices.Contains(keptShapes, o.keptShape):
		return nil, usagef("-kept-shape: unknown shape %q; known: store, one-tx, small-rows, none", *shape)
	case o.keptShape != keptStore && o.postgres != "":
		return nil, usagef("-kept-shape %s is for SQLite and MySQL; on PostgreSQL kept writes by COPY: leave -postgres out", *shape)
	}
	if o.copyStreams == 0 {
		o.copyStreams = o.concurrency
	}
	o.scenarios = map[string]bool{}
	if *scen == "" {
		for _, s := range scenarios {
			if s.name == "stats" && o.quick || slices.Contains(optIn, s.name) {
				continue
			}
			o.scenarios[s.name] = true
		}
	} else {
		for _, s := range strings.Split(*scen, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if s == "all" {
				for _, n := range scenarioNames() {
					o.scenarios[n] = true
				}
				continue
			}
			if !slices.Contains(scenarioNames(), s) {
				return nil, usagef("-scenarios: unknown scenario %q; known: %s", s, strings.Join(scenarioNames(), ", "))
			}
			o.scenarios[s] = true
		}
		if len(o.scenarios) == 0 {
			return nil, usagef("-scenarios is empty")
		}
	}
	if o.scenarios["floor"] {
		o.scenarios["worker-a"] = true // floor is a contender of worker-a's runs
	}
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, usagef("-memory-sizes: %q is not a positive number", f)
		}
		o.memorySizes = append(o.memorySizes, n)
	}
	for _, f := range strings.Split(*planSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, usagef("-plan-sizes: %q is not a positive number", f)
		}
		o.planSizes = append(o.planSizes, n)
	}
	slices.Sort(o.planSizes)
	o.planSizes = slices.Compact(o.planSizes)
	return o, nil
}
