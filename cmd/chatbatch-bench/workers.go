package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
)

// The workers scenario sizes a deployment: the same backlog, accepted
// through the API with no worker running, then drained by 1, 2 and 4
// worker processes — this binary started again with -worker-process, each
// a batch.Service.Run of its own with -concurrency, as chatbatchd
// -api=false runs it — against the one PostgreSQL. It reports the rate
// (first chunk started → last batch finished) and where the CPU went,
// from /proc: every PostgreSQL process (the server is on this machine),
// the backends of the workers' own connections (application_name), the
// worker processes, and the machine's busy CPU (/proc/stat).

// workerCounts are the numbers of worker processes the scenario runs.
var workerCounts = []int{1, 2, 4}

// workerProcessFlag, as the first argument, makes the binary a worker.
const workerProcessFlag = "-worker-process"

// workerProcessMain runs a worker process: flags -postgres, -redis,
// -prefix, -queue, -concurrency. It prints "ready" once its Service is
// built and runs it until SIGTERM.
func workerProcessMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("worker-process", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dsn := fs.String("postgres", "", "")
	rd := fs.String("redis", "", "")
	prefix := fs.String("prefix", "", "")
	queue := fs.String("queue", "", "")
	conc := fs.Int("concurrency", 10, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fail := func(err error) int { fmt.Fprintln(stderr, "worker process:", err); return 1 }
	r, err := openRedis(ctx, *rd)
	if err != nil {
		return fail(err)
	}
	defer r.close()
	d, err := openDatabase(ctx, "postgres", *dsn)
	if err != nil {
		return fail(err)
	}
	defer d.close()
	st, err := bunstore.New(d.bun, &bunstore.Options{TablePrefix: *prefix})
	if err != nil {
		return fail(err)
	}
	svc, err := batch.New(batch.Config{
		Store:         st,
		Deliverer:     delivery.Discard{},
		Authenticator: batch.NewStaticKeys(map[string]batch.Principal{apiKey: {AppID: appID, Admin: true}}),
		Redis:         r.opt,
		Queue:         *queue,
		Concurrency:   *conc,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return fail(err)
	}
	defer svc.Close()
	fmt.Fprintln(stdout, "ready")
	if err := svc.Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// workersSupported says why the scenario cannot run on d, or "".
func (b *bench) workersSupported(d *database) string {
	switch {
	case d.name != "postgres":
		return "PostgreSQL only (give -postgres)"
	case b.redis.mini != nil:
		return "a real Redis only (worker processes cannot reach -redis=mem)"
	}
	if _, ok := machineCPU(); !ok {
		return "Linux only (/proc)"
	}
	return ""
}

// workersSample is one drain by n processes. CPU is in seconds.
type workersSample struct {
	recipients int
	rate       float64 // recipients/s, first chunk started → last batch finished
	wall       float64 // seconds from starting the processes to the last batch seen finished
	pgOwn      float64 // the PostgreSQL backends of the workers' connections
	pgAll      float64 // every postgres process: the server's background processes, and other sessions
	worker     float64 // the worker processes
	redis      float64 // redis-server processes on this machine
	self       float64 // this process (the API, idle while the workers drain)
	busy       float64 // the machine: every process, other users' included (/proc/stat)
}

// pipeline is the CPU of everything the drain runs on: the workers'
// backends, the worker processes, Redis and this process.
func (s workersSample) pipeline() float64 { return s.pgOwn + s.worker + s.redis + s.self }

// workers runs the scenario on d (PostgreSQL) and adds its rows.
func (b *bench) workers(ctx context.Context, h *harness) error {
	o := b.o
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	samples := map[int][]workersSample{}
	for rep := range o.runs {
		counts := workerCounts
		if rep%2 == 1 { // alternate the order, as the other scenarios do
			counts = []int{4, 2, 1}
		}
		for _, n := range counts {
			p := splitPlan(o.backlog, o.recipients, paraFor("worker-a", "", 0))
			s, err := b.drainWith(ctx, h, exe, n, p)
			if err != nil {
				return fmt.Errorf("%d worker processes: %w", n, err)
			}
			samples[n] = append(samples[n], s)
			b.logf("%s: workers run %d/%d: %d process(es) %s msgs/s; cores: backends %.2f, workers %.2f, Redis %.2f, every postgres %.2f, machine %.2f",
				h.d.label(), rep+1, o.runs, n, fmtRate(s.rate), s.pgOwn/s.wall, s.worker/s.wall, s.redis/s.wall, s.pgAll/s.wall, s.busy/s.wall)
		}
	}
	db := h.d.label()
	one := pick(samples[1], func(s workersSample) float64 { return s.rate })
	for _, n := range workerCounts {
		ss := samples[n]
		get := func(f func(workersSample) float64) []float64 { return pick(ss, f) }
		rates := get(func(s workersSample) float64 { return s.rate })
		procs := strconv.Itoa(n) + " worker process"
		if n > 1 {
			procs += "es"
		}
		cores := func(f func(workersSample) float64) []float64 {
			return get(func(s workersSample) float64 { return f(s) / s.wall })
		}
		perSecond := func(f func(workersSample) float64) []float64 {
			return get(func(s workersSample) float64 { return float64(s.recipients) / f(s) })
		}
		b.rows = append(b.rows,
			row{scenario: "workers", label: fmt.Sprintf("12 %s × -concurrency %d, %s backlog (a): recipients/s; baseline and ratio: 1 process", procs, o.concurrency, group(int64(o.backlog))),
				db: db, cb: spread(rates, fmtRate), base: spread(one, fmtRate), ratio: spread(ratios(rates, one), fmtRatio)},
			row{scenario: "workers", label: "12 " + procs + ": CPU in cores of PostgreSQL's backends serving the workers; baseline: of the worker processes; ratio: the backends' share of the pipeline's CPU (backends, workers, Redis, the bench)",
				db: db, cb: spread(cores(func(s workersSample) float64 { return s.pgOwn }), fmtCores), base: spread(cores(func(s workersSample) float64 { return s.worker }), fmtCores),
				ratio: spread(get(func(s workersSample) float64 { return s.pgOwn / s.pipeline() }), fmtPct)},
			row{scenario: "workers", label: "12 " + procs + ": recipients per CPU-second of PostgreSQL's backends serving the workers; baseline: per CPU-second of the worker processes",
				db: db, cb: spread(perSecond(func(s workersSample) float64 { return s.pgOwn }), fmtRate), base: spread(perSecond(func(s workersSample) float64 { return s.worker }), fmtRate), ratio: "—"},
			row{scenario: "workers", label: "12 " + procs + ": CPU in cores of every postgres process (background writers and other sessions too); baseline: Redis; ratio: the machine's busy cores (every process, other users' too)",
				db: db, cb: spread(cores(func(s workersSample) float64 { return s.pgAll }), fmtCores), base: spread(cores(func(s workersSample) float64 { return s.redis }), fmtCores),
				ratio: spread(cores(func(s workersSample) float64 { return s.busy }), fmtCores)},
		)
	}
	return nil
}

func pick(ss []workersSample, f func(workersSample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

func fmtCores(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) + " cores" }
func fmtPct(x float64) string   { return strconv.FormatFloat(100*x, 'f', 0, 64) + "%" }

// drainWith accepts p with no worker running, drains it with n worker
// processes and measures.
func (b *bench) drainWith(ctx context.Context, h *harness, exe string, n int, p plan) (workersSample, error) {
	var s workersSample
	if err := h.stopWorker(); err != nil {
		return s, err
	}
	bs, err := h.acceptPlan(ctx, p)
	if err != nil {
		return s, err
	}
	appName := "cbbworkers_" + strings.TrimSuffix(h.prefix, "_")
	dsn, err := withApplicationName(h.d.dsn, appName)
	if err != nil {
		return s, err
	}
	pgBefore, redisBefore := cpuByName("postgres"), cpuByName("redis-server")
	selfBefore, _ := procCPU(os.Getpid())
	cpu := startCPU()
	start := time.Now()
	procs := make([]*workerProc, 0, n)
	defer func() {
		for _, wp := range procs {
			wp.stop()
		}
	}()
	for range n {
		wp, err := startWorkerProcess(ctx, exe, "-postgres", dsn, "-redis", b.o.redis, "-prefix", h.prefix, "-queue", h.queue, "-concurrency", strconv.Itoa(b.o.concurrency))
		if err != nil {
			return s, err
		}
		procs = append(procs, wp)
	}
	if err := h.waitFinished(ctx, bs, procs); err != nil {
		return s, err
	}
	// Read the CPU before the processes (and their backends) exit.
	cpu.stop()
	s.wall = time.Since(start).Seconds()
	pgAfter, redisAfter := cpuByName("postgres"), cpuByName("redis-server")
	selfAfter, _ := procCPU(os.Getpid())
	s.self = (selfAfter - selfBefore).Seconds()
	for pid, t := range pgAfter {
		s.pgAll += (t - pgBefore[pid]).Seconds() // a backend born since counts whole
	}
	for pid, t := range redisAfter {
		s.redis += (t - redisBefore[pid]).Seconds()
	}
	own, err := h.backendPIDs(ctx, appName)
	if err != nil {
		return s, err
	}
	for _, pid := range own {
		s.pgOwn += pgAfter[pid].Seconds()
	}
	for _, wp := range procs {
		t, _ := procCPU(wp.cmd.Process.Pid)
		s.worker += t.Seconds()
	}
	s.busy = float64(cpu.end-cpu.start) / float64(time.Second)
	for _, wp := range procs {
		if err := wp.stop(); err != nil {
			return s, err
		}
	}
	first, last, err := h.span(ctx, bs)
	if err != nil {
		return s, err
	}
	if err := h.verify(ctx, bs); err != nil {
		return s, err
	}
	total := 0
	for _, a := range bs {
		total += a.count
	}
	s.recipients = total
	s.rate = float64(total) / last.Sub(first).Seconds()
	return s, nil
}

// withApplicationName sets application_name in a postgres:// URL, so
// that the workers' backends can be told from the others.
func withApplicationName(dsn, name string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("the workers scenario needs -postgres as a postgres:// URL")
	}
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// backendPIDs are the PostgreSQL backends connected as appName.
func (h *harness) backendPIDs(ctx context.Context, appName string) ([]int, error) {
	rows, err := h.d.sql.QueryContext(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = $1", appName)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var pids []int
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			return nil, err
		}
		pids = append(pids, pid)
	}
	return pids, rows.Err()
}

// waitFinished polls the batches table until every batch of bs has
// finished (the worker processes have no OnBatchDone of the bench's).
func (h *harness) waitFinished(ctx context.Context, bs []acceptedBatch, procs []*workerProc) error {
	ids := []any{appID}
	var in []string
	for i, b := range bs {
		ids = append(ids, b.id)
		in = append(in, h.d.param(i+2))
	}
	q := "SELECT COUNT(*) FROM " + h.table("batches") + " WHERE app_id = " + h.d.param(1) + " AND id IN (" + strings.Join(in, ", ") + ") AND finished_at IS NOT NULL"
	progress, since := -1, time.Now()
	for {
		var n int
		if err := h.d.sql.QueryRowContext(ctx, q, ids...).Scan(&n); err != nil {
			return err
		}
		if n == len(bs) {
			return nil
		}
		if n > progress {
			progress, since = n, time.Now()
		}
		if time.Since(since) > stallTimeout {
			return fmt.Errorf("no batch finished for %v (%d of %d done)", stallTimeout, n, len(bs))
		}
		for _, wp := range procs {
			select {
			case <-wp.done:
				return fmt.Errorf("a worker process exited: %v\n%s", wp.err, wp.stderr.String())
			default:
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// workerProc is a running worker process.
type workerProc struct {
	cmd     *exec.Cmd
	stderr  *lockedBuffer
	done    chan struct{}
	err     error
	stopped bool
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startWorkerProcess(ctx context.Context, exe string, args ...string) (*workerProc, error) {
	wp := &workerProc{stderr: &lockedBuffer{}, done: make(chan struct{})}
	wp.cmd = exec.Command(exe, append([]string{workerProcessFlag}, args...)...)
	wp.cmd.Stderr = wp.stderr
	out, err := wp.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := wp.cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
		wp.err = wp.cmd.Wait()
		close(wp.done)
	}()
	select {
	case <-ready:
		return wp, nil
	case <-wp.done:
		return nil, fmt.Errorf("worker process %s exited before it was ready: %v\n%s", filepath.Base(exe), wp.err, wp.stderr.String())
	case <-time.After(60 * time.Second):
		wp.stop()
		return nil, errors.New("worker process not ready after 60 s")
	case <-ctx.Done():
		wp.stop()
		return nil, ctx.Err()
	}
}

// stop ends the process with SIGTERM (SIGKILL after 30 s) and returns
// its error, if it failed.
func (wp *workerProc) stop() error {
	if !wp.stopped {
		wp.stopped = true
		_ = wp.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-wp.done:
		case <-time.After(30 * time.Second):
			_ = wp.cmd.Process.Kill()
			<-wp.done
		}
	} else {
		<-wp.done
	}
	if wp.err != nil {
		return fmt.Errorf("worker process: %v\n%s", wp.err, wp.stderr.String())
	}
	return nil
}

// procCPU is the user and system CPU time process pid has used, from
// /proc/pid/stat.
func procCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// pid (comm) state ppid … utime stime: comm may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * time.Second / clockTicks, true
}

// cpuByName is the CPU time of every process whose name (comm) is name,
// by pid: "postgres" is the server, its background processes and its
// backends.
func cpuByName(name string) map[int]time.Duration {
	out := map[int]time.Duration{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + d.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != name {
			continue
		}
		if t, ok := procCPU(pid); ok {
			out[pid] = t
		}
	}
	return out
}
