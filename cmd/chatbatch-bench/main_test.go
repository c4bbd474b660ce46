package main

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

// The tests run the benchmark with tiny settings and check what it
// reports and that every run was verified — never the speed, which the
// machine decides.

// TestMain lets the workers scenario start this test binary as its
// worker processes, as it starts chatbatch-bench.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == workerProcessFlag {
		os.Exit(workerProcessMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func runBench(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	// The tests share the machine with each other: waiting for it to be
	// quiet would only make them slow.
	code = run(t.Context(), append([]string{"-quiet=0"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// checkReport asserts exit status 0, a table row for every scenario in
// want on each database in dbs, and the verification line.
func checkReport(t *testing.T, code int, stdout, stderr string, dbs []string, want []string) {
	t.Helper()
	if code != 0 {
		t.Fatalf("exit status %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "All runs verified") {
		t.Errorf("no verification line in:\n%s", stdout)
	}
	if !strings.Contains(stdout, "| scenario | db | chatbatch msgs/s | baseline msgs/s | ratio | target | |") {
		t.Errorf("no table header in:\n%s", stdout)
	}
	rows := map[string]bool{} // scenario + db
	for _, line := range strings.Split(stdout, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, " | ")
		name, _, _ := strings.Cut(strings.TrimPrefix(cells[0], "| `"), "`")
		rows[name+"/"+cells[1]] = true
		rows[name] = true
	}
	for _, s := range want {
		if s == "stats" || s == "memory" {
			if !rows[s] {
				t.Errorf("no row for scenario %s in:\n%s", s, stdout)
			}
			continue
		}
		for _, db := range dbs {
			if !rows[s+"/"+db] {
				t.Errorf("no row for scenario %s on %s in:\n%s", s, db, stdout)
			}
		}
	}
}

var allScenarios = []string{"worker-a", "worker-b", "worker-c", "floor", "e2e-10x", "e2e-a", "e2e-b", "naive", "latency", "stats", "memory", "load", "bytes", "retention", "plans", "workers", "reads"}

// tinyLoad keeps the load scenario short in tests, and tinyBookkeeping
// the retention (40 batches of one recipient a cycle) and plans ones.
var (
	tinyLoad        = []string{"-load-clients=2", "-load-recipients=50", "-load-duration=500ms"}
	tinyBookkeeping = []string{"-retention-recipients=40", "-plan-sizes=60,20"}
)

// checkBookkeeping asserts the rows of the bookkeeping scenarios on db,
// with what they verified: the bytes row; for retention the size after
// each send and prune, each prune with its 404s and its messages kept,
// and the sweep times; for plans a row per query and size, and the
// comparisons of the sizes.
func checkBookkeeping(t *testing.T, stdout, db string, scens ...string) {
	t.Helper()
	var rows []string
	for _, line := range strings.Split(stdout, "\n") {
		if strings.Contains(line, " | "+db+" | ") {
			rows = append(rows, line)
		}
	}
	count := func(parts ...string) int {
		n := 0
		for _, r := range rows {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(r, p)
			}
			if all {
				n++
			}
		}
		return n
	}
	for _, s := range scens {
		switch s {
		case "bytes":
			if count("`bytes` 9 bookkeeping bytes per recipient", " B | ") != 1 {
				t.Errorf("%s: no bytes row in:\n%s", db, stdout)
			}
		case "retention":
			for _, want := range []string{"bookkeeping size, empty tables", "after send 1: 40 batches of 1 recipients, every message verified", "after send 2", "Sweep calls while pruning"} {
				if count("`retention`", want) != 1 {
					t.Errorf("%s: no retention row %q in:\n%s", db, want, stdout)
				}
			}
			for _, n := range []string{"1", "2"} {
				if count("`retention`", "after prune "+n+": every batch pruned by the sweep", "sampled GETs answer 404 BATCH_NOT_FOUND", "messages still stored") != 1 {
					t.Errorf("%s: no row of prune %s with its checks in:\n%s", db, n, stdout)
				}
			}
		case "reads":
			// The scenario fails the run unless every read was recorded
			// once, a second pass recorded none and (PostgreSQL) no batch
			// row was written; the row says how it compared.
			if count("`reads` 12 first reads recorded by Service.MarkReads", " reads/s | ", " sent/s | ", "≤ 0.50× the send's time") != 1 {
				t.Errorf("%s: no reads row in:\n%s", db, stdout)
			}
		case "plans":
			for _, q := range planQueries {
				for _, size := range []string{"20", "60"} {
					if count("`plans` 11 plan: "+q, ", "+size+" finished batches") == 0 {
						t.Errorf("%s: no plan row for %s at %s batches in:\n%s", db, q, size, stdout)
					}
				}
				if count("`plans` 11 plan shape: "+q, "same plan") == 0 {
					t.Errorf("%s: no plan comparison for %s in:\n%s", db, q, stdout)
				}
			}
		}
	}
}

// TestRunSQLiteMiniredis runs every scenario on SQLite and the in-process
// Redis, with profiles.
func TestRunSQLiteMiniredis(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu"), filepath.Join(dir, "mem")
	code, stdout, stderr := runBench(t, append([]string{"-redis=mem", "-runs=2", "-recipients=300", "-backlog=900",
		"-memory-sizes=300,900", "-concurrency=4", "-scenarios=all", "-cpuprofile=" + cpu, "-memprofile=" + mem}, append(tinyLoad, tinyBookkeeping...)...)...)
	checkReport(t, code, stdout, stderr, []string{"sqlite"}, allScenarios)
	checkBookkeeping(t, stdout, "sqlite", "bytes", "retention", "plans", "reads")
	if !strings.Contains(stdout, "2 end to end, 10 concurrent × 300 (a) vs the least it does | sqlite") {
		t.Errorf("the floor scenario has no end-to-end least on SQLite:\n%s", stdout)
	}
	if !strings.Contains(stdout, "1 worker rate (b) receivers, rooms created, 900 backlog vs the least it does | sqlite") {
		t.Errorf("the floor scenario has no least of (b) on SQLite:\n%s", stdout)
	}
	for _, n := range []string{"1 worker rate (a), a first send, vs the least a first send does with the chunks' bookkeeping | sqlite",
		"1 worker rate (b) receivers, rooms created, 900 backlog vs the least it does with the chunks' bookkeeping | sqlite",
		"2 end to end, 10 concurrent × 300 (a) vs the least it does with the bookkeeping | sqlite",
		"2 end to end, 1 × 300 (a) vs the least it does with the bookkeeping | sqlite"} {
		if !strings.Contains(stdout, n) {
			t.Errorf("the floor scenario has no row %q:\n%s", n, stdout)
		}
	}
	if !strings.Contains(stdout, "1 worker rate (c) room paras, 900 backlog vs the write with the chunks' bookkeeping | sqlite") {
		t.Errorf("the floor scenario has no write with the chunks' bookkeeping in (c) on SQLite:\n%s", stdout)
	}
	if !strings.Contains(stdout, "- sqlite: the dbstat virtual table") {
		t.Errorf("the notes do not say how SQLite's sizes are measured:\n%s", stdout)
	}
	if !strings.Contains(stdout, "chatbatch-bench -quiet=0 -redis=mem -runs=2") {
		t.Errorf("the command line is not at the top:\n%s", stdout)
	}
	if !strings.Contains(stderr, "WARNING: -redis=mem") {
		t.Errorf("no warning about miniredis in stderr:\n%s", stderr)
	}
	if !strings.Contains(stdout, "skipped: PostgreSQL only") {
		t.Errorf("the stats scenario does not say it needs PostgreSQL:\n%s", stdout)
	}
	for _, f := range []string{cpu + ".sqlite.worker-a.1", cpu + ".sqlite.e2e-b.2", mem + ".sqlite.worker-c.1", mem + ".sqlite.worker-c.1.before"} {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Errorf("profile %s: %v", f, err)
		}
	}
	if _, err := os.Stat(cpu + ".sqlite.worker-a.1.before"); err == nil {
		t.Errorf("a CPU profile has a .before file")
	}
}

// TestRunServices runs the benchmark against the real services named by
// the CHATBATCH_TEST_* variables: each database on the real Redis if
// CHATBATCH_TEST_REDIS is set (the in-process one otherwise), and SQLite
// on the real Redis.
func TestRunServices(t *testing.T) {
	t.Parallel()
	redisAddr := os.Getenv("CHATBATCH_TEST_REDIS")
	redisArg := "-redis=mem"
	if redisAddr != "" {
		redisArg = "-redis=" + redisAddr
	}
	tiny := append(append([]string{"-runs=1", "-recipients=300", "-backlog=600", "-memory-sizes=300,600", "-concurrency=4"}, tinyLoad...), tinyBookkeeping...)
	cases := []struct {
		name, env string
		args      func(v string) []string
		dbs       []string
	}{
		{"postgres", "CHATBATCH_TEST_POSTGRES", func(v string) []string { return []string{"-postgres=" + v, "-sqlite=false", "-scenarios=all"} }, []string{"postgres"}},
		{"mysql", "CHATBATCH_TEST_MYSQL", func(v string) []string { return []string{"-mysql=" + v, "-sqlite=false", "-scenarios=all"} }, []string{"mysql", "mariadb"}},
		{"redis", "CHATBATCH_TEST_REDIS", func(string) []string { return nil }, []string{"sqlite"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := os.Getenv(c.env)
			if v == "" {
				testenv.Skip(t, "set %s to run the benchmark on %s", c.env, c.name)
			}
			t.Parallel()
			args := append(append([]string{redisArg}, tiny...), c.args(v)...)
			code, stdout, stderr := runBench(t, args...)
			want := []string{"worker-a", "worker-b", "worker-c", "e2e-10x", "e2e-a", "e2e-b", "naive", "latency", "bytes"}
			if c.name != "redis" {
				want = append(want, "retention", "plans", "reads")
			}
			if c.name == "postgres" {
				want = append(want, "floor", "stats", "memory", "load", "workers")
				for _, n := range []string{"1 worker process ×", "2 worker processes ×", "4 worker processes ×", "4 worker processes: CPU in cores of PostgreSQL's backends", "4 worker processes: recipients per CPU-second of PostgreSQL's backends", "4 worker processes: CPU in cores of every postgres process"} {
					if !strings.Contains(stdout, n) {
						t.Errorf("the workers scenario has no row %q:\n%s", n, stdout)
					}
				}
				if !strings.Contains(stdout, "pgx CopyFrom, 4 streams (ceiling) | postgres") {
					t.Errorf("no pgx CopyFrom rows:\n%s", stdout)
				}
				for _, n := range []string{"the least a first send does, without chatbatch: per chunk of recipients, one look-up of the pairs' members and the messages' write (pgx CopyFrom on PostgreSQL), nothing else, vs plain INSERT | postgres",
					"a first send, vs the least a first send does | postgres",
					"2 end to end, 10 concurrent × 300 (a): the least it does, without chatbatch: each request's receivers looked up",
					"2 end to end, 1 × 300 (a) vs the least it does | postgres",
					"1 worker rate (b) receivers, rooms created, 600 backlog: the least it does, without chatbatch: per chunk of recipients, one look-up of the pairs' members (none found)"} {
					if !strings.Contains(stdout, n) {
						t.Errorf("the floor scenario has no row %q:\n%s", n, stdout)
					}
				}
				if _, err := os.Stat("/proc/stat"); err == nil {
					for _, n := range []string{"1 worker rate (a) receivers, rooms exist, 600 backlog: CPU bound where the cores are saturated",
						"2 end to end, 10 concurrent × 300 (a): bound with the database on cores of its own",
						"of that, the bench process's (Go) per 1,000 recipients: worker (a) vs plain INSERT's client | postgres",
						"worker (a) without the message write nor the send-time check vs plain INSERT | postgres",
						"worker (a) with the message write, without the send-time check vs plain INSERT | postgres"} {
						if !strings.Contains(stdout, n) {
							t.Errorf("the floor scenario has no row %q:\n%s", n, stdout)
						}
					}
				}
			}
			db := c.dbs[0]
			for _, d := range c.dbs {
				if strings.Contains(stdout, "| "+d+" |") {
					db = d
				}
			}
			// Every database's store keeps the directory cache here (CI's
			// MySQL allows its triggers), so each has its repeat sends.
			// (worker-a's and e2e-a's rows).
			if n := strings.Count(stdout, "a repeat send (the rooms known to the directory cache) vs plain INSERT | "+db+" |"); n != 2 {
				t.Errorf("%s has %d repeat send rows, want 2 (worker-a, e2e-a):\n%s", db, n, stdout)
			}
			if !strings.Contains(stdout, "1 worker rate (b) receivers, rooms created, 600 backlog vs the least it does | "+db+" |") {
				t.Errorf("%s has no least of (b):\n%s", db, stdout)
			}
			if !strings.Contains(stdout, "1 worker rate (b) receivers, rooms created, 600 backlog vs the least it does with the chunks' bookkeeping | "+db+" |") {
				t.Errorf("%s has no least of (b) with the chunks' bookkeeping:\n%s", db, stdout)
			}
			if !strings.Contains(stdout, "1 worker rate (a), a first send, vs the least a first send does with the chunks' bookkeeping | "+db+" |") {
				t.Errorf("%s has no least of (a) with the chunks' bookkeeping:\n%s", db, stdout)
			}
			if !strings.Contains(stdout, "2 end to end, 10 concurrent × 300 (a) vs the least it does with the bookkeeping | "+db+" |") {
				t.Errorf("%s has no end-to-end least with the bookkeeping:\n%s", db, stdout)
			}
			if !strings.Contains(stdout, "1 worker rate (c) room paras, 600 backlog vs the write with the chunks' bookkeeping | "+db+" |") {
				t.Errorf("%s has no write with the chunks' bookkeeping in (c):\n%s", db, stdout)
			}
			checkReport(t, code, stdout, stderr, []string{db}, want)
			checkBookkeeping(t, stdout, db, want...)
			if c.name == "postgres" && !strings.Contains(stdout, "(EXPLAIN ANALYZE) | postgres |") {
				t.Errorf("the PostgreSQL plans are not EXPLAIN ANALYZE's:\n%s", stdout)
			}
			if strings.Contains(stdout, "| sqlite |") && c.name != "redis" {
				t.Errorf("-sqlite=false still ran SQLite:\n%s", stdout)
			}
		})
	}
}

func TestFlagErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-nope"}, "flag provided but not defined: -nope"},
		{[]string{"-runs=0"}, "-runs must be at least 1"},
		{[]string{"-recipients=10001"}, "-recipients must be between 1 and 10000"},
		{[]string{"-recipients=0"}, "-recipients must be between 1 and 10000"},
		{[]string{"-backlog=-5"}, "-backlog must be at least 1"},
		{[]string{"-quiet=-1s"}, "-quiet must not be negative"},
		{[]string{"-concurrency=0"}, "-concurrency must be at least 1"},
		{[]string{"-scenarios=worker-a,warp"}, `unknown scenario "warp"`},
		{[]string{"-scenarios=,"}, "-scenarios is empty"},
		{[]string{"-memory-sizes=10,x"}, `-memory-sizes: "x" is not a positive number`},
		{[]string{"-sqlite=false"}, "no database"},
		{[]string{"-redis="}, "-redis is empty"},
		{[]string{"-redis=redis://[::1"}, "-redis:"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"-runs=x"}, `invalid value "x" for flag -runs`},
		{[]string{"-copy-streams=-1"}, "-copy-streams must not be negative"},
		{[]string{"-retention-recipients=0"}, "-retention-recipients must be at least 1"},
		{[]string{"-plan-sizes=10,x"}, `-plan-sizes: "x" is not a positive number`},
		{[]string{"-plan-sizes=0"}, `-plan-sizes: "0" is not a positive number`},
		{[]string{"-kept-shape=two-tx"}, `-kept-shape: unknown shape "two-tx"`},
		{[]string{"-kept-shape=one-tx", "-postgres=postgres://x"}, "-kept-shape one-tx is for SQLite and MySQL"},
	} {
		code, stdout, stderr := runBench(t, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) || stdout != "" {
			t.Errorf("%q: exit %d, stderr %q, stdout %q; want exit 2 and %q", c.args, code, stderr, stdout, c.want)
		}
	}
	code, _, stderr := runBench(t, "-h")
	if code != 0 || !strings.Contains(stderr, "Usage: chatbatch-bench [flags]") || !strings.Contains(stderr, "-scenarios") {
		t.Errorf("-h: exit %d, %q", code, stderr)
	}
}

func TestRedisUnreachable(t *testing.T) {
	t.Parallel()
	code, _, stderr := runBench(t, "-redis=127.0.0.1:1", "-runs=1")
	if code != 1 || !strings.Contains(stderr, "redis 127.0.0.1:1") {
		t.Errorf("exit %d, %q; want 1 naming the Redis", code, stderr)
	}
}

func TestQuickDefaults(t *testing.T) {
	o, err := parseFlags([]string{"-quick", "-runs=2"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.runs != 2 || o.quiet != 2*time.Second || o.recipients != 1000 || o.backlog != 5000 || o.has("stats") || !o.has("memory") || len(o.memorySizes) != 2 || o.copyStreams != 10 {
		t.Errorf("-quick -runs=2 = %+v", o)
	}
	if !o.has("bytes") || o.has("retention") || o.has("plans") || o.has("workers") || o.has("reads") || o.retentionRecipients != 20_000 || !slices.Equal(o.planSizes, []int{1000, 10_000}) {
		t.Errorf("-quick: bytes %v, retention %v (%d recipients), plans %v (%v); want bytes only, 20,000 and [1000 10000]",
			o.has("bytes"), o.has("retention"), o.retentionRecipients, o.has("plans"), o.planSizes)
	}
	o, err = parseFlags([]string{"-quick", "-scenarios=stats"}, &bytes.Buffer{})
	if err != nil || !o.has("stats") {
		t.Errorf("-quick -scenarios=stats: %v %+v", err, o)
	}
	o, err = parseFlags(nil, &bytes.Buffer{})
	if err != nil || o.quiet != 30*time.Second || !o.has("bytes") || !o.has("stats") || o.has("retention") || o.has("plans") || o.has("reads") || o.retentionRecipients != 1_000_000 || !slices.Equal(o.planSizes, []int{10_000, 1_000_000}) {
		t.Errorf("defaults: %v %+v", err, o)
	}
	o, err = parseFlags([]string{"-scenarios=all", "-plan-sizes=500,20,500"}, &bytes.Buffer{})
	if err != nil || !o.has("retention") || !o.has("plans") || !o.has("reads") || !slices.Equal(o.planSizes, []int{20, 500}) {
		t.Errorf("-scenarios=all -plan-sizes=500,20,500: %v %+v", err, o)
	}
}

// testHarness is a harness on the database name at dsn and an
// in-process Redis, closed (its tables dropped) when t ends.
func testHarness(t *testing.T, name, dsn string, conc int, tag string) (*harness, *database) {
	t.Helper()
	r, err := openRedis(t.Context(), "mem")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	d, err := openDatabase(t.Context(), name, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	h, err := newHarness(t.Context(), d, r, conc, tag)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.close(context.Background(), false); err != nil {
			t.Error(err)
		}
	})
	return h, d
}

// TestVerificationCatches checks that verification fails for batches and
// baseline rows that are not all there.
func TestVerificationCatches(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	h, d := testHarness(t, "sqlite", "sqlite:"+filepath.Join(t.TempDir(), "v.db"), 2, "v")
	if err := h.seedPoolA(ctx, 10); err != nil {
		t.Fatal(err)
	}
	bbs := baselineBatches(splitPlan(10, 10, paraFor("worker-a", "", 0)))
	if _, err := h.runPlain(ctx, bbs, false); err != nil {
		t.Fatal(err)
	}
	if err := h.verifyBaseline(ctx, map[string]int{bbs[0].id: 11}); err == nil || !strings.Contains(err.Error(), "10 rows (10 distinct IDs), want 11") {
		t.Errorf("verifyBaseline with one row missing = %v", err)
	}
	// A batch accepted but never run is not completed.
	bs, err := h.acceptPlan(ctx, splitPlan(3, 3, paraFor("worker-a", "", 0)))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.verify(ctx, bs); err == nil || !strings.Contains(err.Error(), "status queued") {
		t.Errorf("verify of a batch not run = %v", err)
	}
	h.startWorker()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := h.waitDone(wctx, bs); err != nil {
		t.Fatal(err)
	}
	if err := h.verify(ctx, bs); err != nil {
		t.Fatal(err)
	}
	// A message deleted afterwards is caught.
	if _, err := d.sql.ExecContext(ctx, "DELETE FROM "+h.table("messages")+" WHERE id = ?", bs[0].id+"-1"); err != nil {
		t.Fatal(err)
	}
	if err := h.verify(ctx, bs); err == nil || !strings.Contains(err.Error(), "2 messages stored (2 distinct IDs), want 3") {
		t.Errorf("verify with a message missing = %v", err)
	}
}

// TestKeptShapes runs the kept contender in each -kept-shape on SQLite
// and (CHATBATCH_TEST_MYSQL) MySQL, and checks in the tables that each
// shape wrote what it says: the store's and one-tx's outcomes in the
// chunks' rows, small-rows' in a table of their own (dropped afterwards),
// none's nowhere.
func TestKeptShapes(t *testing.T) {
	t.Parallel()
	dbs := map[string]string{"sqlite": "sqlite:" + filepath.Join(t.TempDir(), "k.db")}
	if v := os.Getenv("CHATBATCH_TEST_MYSQL"); v != "" {
		dbs["mysql"] = v
	} else {
		t.Run("mysql", func(t *testing.T) {
			testenv.Skip(t, "set CHATBATCH_TEST_MYSQL to run the kept shapes on MySQL")
		})
	}
	for name, dsn := range dbs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			h, d := testHarness(t, name, dsn, 3, "k")
			outcomes := map[keptShape]string{}
			for _, shape := range keptShapes {
				h.keptShape = shape
				if err := h.emptyMessages(ctx); err != nil {
					t.Fatal(err)
				}
				bbs := baselineBatches(splitPlan(2*unit+7, 2*unit+7, paraFor("worker-c", "", 0)))
				rate, err := h.runKept(ctx, bbs)
				if err != nil || rate <= 0 {
					t.Fatalf("%s: rate %v, %v", shape, rate, err)
				}
				var done, chunks int
				var text sql.NullString
				if err := d.sql.QueryRowContext(ctx, "SELECT COUNT(*), SUM(done), MAX(outcomes) FROM "+h.baseTable("chunks")+" WHERE batch_id = ?", bbs[0].id).Scan(&chunks, &done, &text); err != nil {
					t.Fatalf("%s: %v", shape, err)
				}
				outcomes[shape] = text.String
				want := chunks // done: the chunks' rows are completed
				if shape == keptSmallRows || shape == keptNone {
					want = 0 // their claims and outcomes are elsewhere, or nowhere
				}
				if chunks != 3 || done != want {
					t.Errorf("%s: %d of %d chunks done, want %d of 3", shape, done, chunks, want)
				}
				b, err := h.base.GetBatch(ctx, appID, bbs[0].id)
				if err != nil {
					t.Fatal(err)
				}
				if finished := !b.FinishedAt.IsZero(); finished != (shape != keptNone) || b.Sent != map[bool]int{true: 2*unit + 7}[finished] {
					t.Errorf("%s: batch finished %v with %d sent", shape, finished, b.Sent)
				}
				for _, tb := range []string{"kept_claims", "kept_outcomes"} {
					if _, err := d.sql.ExecContext(ctx, "SELECT 1 FROM "+h.baseTable(tb)); err == nil {
						t.Errorf("%s: table %s left behind", shape, tb)
					}
				}
			}
			// one-tx writes the outcomes text the store writes (the batch
			// IDs within differ, so compare the sizes).
			if s, o := len(outcomes[keptStore]), len(outcomes[keptOneTx]); s == 0 || o < s*9/10 || o > s*11/10 {
				t.Errorf("outcomes: the store's %d bytes, one-tx's %d", s, o)
			}
		})
	}
}

func TestCommandLineRedactsPasswords(t *testing.T) {
	got := commandLine([]string{"-postgres", "postgres://u:secret@db:5432/x?sslmode=disable", "-mysql=root:pw@tcp(127.0.0.1:3306)/test", "-runs", "1"})
	if strings.Contains(got, "secret") || strings.Contains(got, ":pw@") {
		t.Errorf("password in %s", got)
	}
	want := "chatbatch-bench -postgres 'postgres://u:xxxxx@db:5432/x?sslmode=disable' '-mysql=root:xxxxx@tcp(127.0.0.1:3306)/test' -runs 1"
	if got != want {
		t.Errorf("commandLine =\n%s\nwant\n%s", got, want)
	}
}

func TestSpread(t *testing.T) {
	if got := spread([]float64{3000, 1000, 2000.4}, fmtRate); got != "2,000 (1,000–3,000)" {
		t.Errorf("spread = %q", got)
	}
	if got := spread([]float64{0.5}, fmtRatio); got != "0.50×" {
		t.Errorf("spread of one = %q", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median = %v", got)
	}
}

// TestWaitQuietWaitsWhileBusy keeps every core busy and checks that
// waitQuiet waits its whole bound, then returns at once with a bound of 0.
func TestWaitQuietWaitsWhileBusy(t *testing.T) {
	if _, _, _, ok := machineTicks(); !ok {
		testenv.Skip(t, "no /proc/stat: waitQuiet does not wait here")
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for !stop.Load() { // spin: keep a core busy
			}
		})
	}
	waited, err := waitQuiet(t.Context(), 600*time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if waited < 600*time.Millisecond {
		t.Errorf("waitQuiet returned after %v with every core busy; want it to wait its 600ms", waited)
	}
	if waited, err := waitQuiet(t.Context(), 0); err != nil || waited > 50*time.Millisecond {
		t.Errorf("waitQuiet(0) = %v, %v; want no wait", waited, err)
	}
}
