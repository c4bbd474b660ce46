package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/chatbatch/chatbatch/store"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

func TestParseRedis(t *testing.T) {
	t.Parallel()
	good := []struct {
		uri  string
		want asynq.RedisConnOpt
	}{
		{"redis-sentinel://127.0.0.1:26379/0?master=mymaster",
			asynq.RedisFailoverClientOpt{MasterName: "mymaster", SentinelAddrs: []string{"127.0.0.1:26379"}}},
		{"redis-sentinel://:s3cr%40t@a.example:26379,b.example:26380,[::1]:26381/3?master=m1",
			asynq.RedisFailoverClientOpt{MasterName: "m1", SentinelAddrs: []string{"a.example:26379", "b.example:26380", "[::1]:26381"}, Password: "s3cr@t", DB: 3}},
		{"redis-sentinel://app:pw@h:1?master=m&sentinel_password=sp&sentinel_username=su",
			asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"h:1"}, Username: "app", Password: "pw", SentinelUsername: "su", SentinelPassword: "sp"}},
		{"redis-sentinel://h:1,h:1/?master=m", asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"h:1"}}},
		{"redis://:pw@127.0.0.1:6379/2", asynq.RedisClientOpt{Addr: "127.0.0.1:6379", Password: "pw", DB: 2}},
		{"redis-socket:///tmp/redis.sock?db=1", asynq.RedisClientOpt{Network: "unix", Addr: "/tmp/redis.sock", DB: 1}},
	}
	for _, c := range good {
		got, err := parseRedis(c.uri)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("parseRedis(%q) = %#v, %v; want %#v", c.uri, got, err, c.want)
		}
	}
	bad := []struct{ uri, want string }{
		{"redis-sentinel://127.0.0.1:26379/0", "?master=NAME is required"},
		{"redis-sentinel://127.0.0.1:26379/0?master=", "?master=NAME is required"},
		{"redis-sentinel:///0?master=m", "no sentinel address"},
		{"redis-sentinel://:pw@/0?master=m", "no sentinel address"},
		{"redis-sentinel://127.0.0.1/0?master=m", `sentinel address "127.0.0.1" is not host:port`},
		{"redis-sentinel://h:1,,h:2/0?master=m", `sentinel address "" is not host:port`},
		{"redis-sentinel://h:1,:2/0?master=m", `sentinel address ":2" is not host:port`},
		{"redis-sentinel://h:port/0?master=m", `port "port" is not a number`},
		{"redis-sentinel://h:70000/0?master=m", `port "70000" is not a number`},
		{"redis-sentinel://h:1/zero?master=m", "the path must be the database number"},
		{"redis-sentinel://h:1/0/1?master=m", "the path must be the database number"},
		{"redis-sentinel://h:1/-1?master=m", "the path must be the database number"},
		{"redis-sentinel://h:1/0?master=m&master=n", "master is given 2 times"},
		{"redis-sentinel://h:1/0?master=m&db=2", `unknown parameter "db"`},
		{"redis-sentinel://h:1/0?master=%zz", "not correctly %-escaped"},
		{"redis-sentinel://:p%zz@h:1/0?master=m", "password is not correctly %-escaped"},
		{"redis-cluster://h:1,h:2", "does not support Redis Cluster"},
		{"rediss-sentinel://h:1/0?master=m", "not supported"},
		{"http://127.0.0.1:6379", `unsupported scheme "http"`},
		{"127.0.0.1:6379", "not a Redis URI"},
		{"redis://h:1/x", "database number"},
	}
	for _, c := range bad {
		_, err := parseRedis(c.uri)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseRedis(%q) = %v, want an error containing %q", c.uri, err, c.want)
		}
	}
	if _, err := parseRedis("redis-sentinel://:hunter2@h:1/0?sentinel_password=hunter3"); err == nil || strings.Contains(err.Error(), "hunter") {
		t.Errorf("an error repeats a password: %v", err)
	}
}

func TestRedactRedis(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"redis-sentinel://:pw@h:1,h:2/0?master=m&sentinel_password=sp&x=1": "redis-sentinel://:xxxxx@h:1,h:2/0?master=m&sentinel_password=xxxxx&x=1",
		"redis-sentinel://u:pw@h:1?master=m&sentinel_password=sp":          "redis-sentinel://u:xxxxx@h:1?master=m&sentinel_password=xxxxx",
		"redis://:pw@127.0.0.1:6379":                                       "redis://:xxxxx@127.0.0.1:6379",
		"redis://127.0.0.1:6379/0":                                         "redis://127.0.0.1:6379/0",
		"redis://user@127.0.0.1:6379/0":                                    "redis://user@127.0.0.1:6379/0",
		"garbage":                                                          "-redis",
	} {
		if got := redactRedis(in); got != want {
			t.Errorf("redactRedis(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSentinelUsageErrors: a malformed sentinel URI is a usage error
// (exit 2) naming the problem, without its password.
func TestSentinelUsageErrors(t *testing.T) {
	t.Parallel()
	closed := closedPort(t)
	for uri, want := range map[string]string{
		"redis-sentinel://:hunter2@127.0.0.1:26379/0":                             "-redis: redis-sentinel: ?master=NAME is required",
		"redis-sentinel://:hunter2@127.0.0.1/0?master=m":                          `sentinel address "127.0.0.1" is not host:port`,
		"redis-cluster://127.0.0.1:7000":                                          "does not support Redis Cluster",
		"redis-sentinel://:hunter2@" + closed + "/0?master=m&sentinel_password=x": "-redis: cannot reach redis-sentinel://:xxxxx@",
	} {
		cmd := exec.Command(binary, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:", "-redis", uri)
		cmd.Dir = t.TempDir()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(stderr.String(), want) || strings.Contains(stderr.String(), "hunter2") {
			t.Errorf("-redis %s: %v, exit %d, stderr %q; want 2 and %q without the password", uri, err, code, stderr.String(), want)
		}
	}
}

// startSentinel starts a Redis Sentinel monitoring the Redis of
// CHATBATCH_TEST_REDIS as master "chatbatch", or skips saying why.
func startSentinel(t *testing.T) (sentinelAddr, master string) {
	t.Helper()
	rd := os.Getenv("CHATBATCH_TEST_REDIS")
	if rd == "" {
		testenv.Skip(t, "set CHATBATCH_TEST_REDIS (e.g. 127.0.0.1:6379) to run chatbatchd through a Redis Sentinel monitoring it")
	}
	if strings.Contains(rd, "://") {
		opt, err := redis.ParseURL(rd)
		must(t, err)
		rd = opt.Addr
	}
	host, port, err := net.SplitHostPort(rd)
	must(t, err)
	var bin []string
	if p, err := exec.LookPath("redis-sentinel"); err == nil {
		bin = []string{p}
	} else if p, err := exec.LookPath("redis-server"); err == nil {
		bin = []string{p, "--sentinel"}
	} else {
		testenv.Skip(t, "neither redis-sentinel nor redis-server is on the PATH: install redis-server to run the Sentinel test")
	}
	if ip := net.ParseIP(host); ip == nil {
		// Sentinel monitors an address, not a name.
		ips, err := net.LookupIP(host)
		if err != nil || len(ips) == 0 {
			testenv.Skip(t, "cannot resolve %s for the sentinel: %v", host, err)
		}
		host = ips[0].String()
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	_, sport, _ := net.SplitHostPort(addr)
	must(t, ln.Close())
	master = "chatbatch"
	conf := filepath.Join(dir, "sentinel.conf")
	must(t, os.WriteFile(conf, fmt.Appendf(nil, "port %s\nbind 127.0.0.1\ndaemonize no\ndir %s\nsentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s 60000\n",
		sport, dir, master, host, port, master), 0o600))
	cmd := exec.Command(bin[0], append(bin[1:], conf)...)
	if len(bin) == 2 { // redis-server CONF --sentinel
		cmd = exec.Command(bin[0], conf, "--sentinel")
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		testenv.Skip(t, "cannot start a sentinel (%v): %v", bin, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
	defer sc.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		got, err := sc.GetMasterAddrByName(ctx, master).Result()
		cancel()
		if err == nil && len(got) == 2 {
			return addr, master
		}
		if time.Now().After(deadline) {
			testenv.Skip(t, "the sentinel (%v) did not answer for master %s within 15 s (%v):\n%s", bin, master, err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSentinelEndToEnd runs chatbatchd with -redis redis-sentinel://…
// through a real sentinel: the queue (asynq's failover client), the live
// stream's publisher and subscriber (go-redis' failover client) and the
// rate limiter all reach the master the sentinel names.
func TestSentinelEndToEnd(t *testing.T) {
	t.Parallel()
	addr, master := startSentinel(t)
	app, queue := unique("app"), unique("q")
	uri := fmt.Sprintf("redis-sentinel://%s/0?master=%s", addr, master)
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY=k"}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:",
		"-redis", uri, "-app", app, "-queue", queue, "-rate-limit", "1000")
	// The master itself, as the sentinel names it.
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: master, SentinelAddrs: []string{addr}})
	defer rdb.Close()
	ctx := t.Context()
	// chatbatchd's subscriber is on the master.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := rdb.PubSubNumSub(ctx, eventsChannel(app)).Result()
		must(t, err)
		if n[eventsChannel(app)] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no subscriber of %s on the master: %v", eventsChannel(app), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	sub := rdb.Subscribe(ctx, eventsChannel(app))
	defer sub.Close()
	_, err := sub.Receive(ctx)
	must(t, err)
	checkSeedExamples(t, p.url, "k")
	// The worker published what it delivered.
	select {
	case m := <-sub.Channel():
		if !strings.Contains(m.Payload, store.DirectRoomID("system", "user-a")) && !strings.Contains(m.Payload, "room-00") {
			t.Errorf("an unexpected event: %s", m.Payload)
		}
	case <-time.After(10 * time.Second):
		t.Error("no event published on the master within 10 s")
	}
	// The queue is on the master.
	if n, err := rdb.Exists(ctx, "asynq:{"+queue+"}:pending", "asynq:{"+queue+"}:processed").Result(); err != nil {
		t.Error(err)
	} else if keys, _ := rdb.Keys(ctx, "asynq:{"+queue+"}:*").Result(); len(keys) == 0 {
		t.Errorf("no key of queue %s on the master (%d)", queue, n)
	}
	// And the rate limiter.
	if keys, _ := rdb.Keys(ctx, "chatbatchd:ratelimit:*").Result(); len(keys) == 0 {
		t.Error("no rate-limit key on the master")
	}
	if status, env := call(t, http.MethodGet, p.url+"/readyz", "", ""); status != 200 {
		t.Errorf("GET /readyz = %d %+v", status, env)
	}
}

// redisProc is a redis-server (or sentinel) of a test's own.
type redisProc struct {
	port string
	cmd  *exec.Cmd
	out  bytes.Buffer
}

func startRedisProc(t *testing.T, args ...string) *redisProc {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		testenv.Skip(t, "install redis-server to run the Sentinel failover test (apt-get install redis-server)")
	}
	_, port, _ := net.SplitHostPort(closedPort(t))
	p := &redisProc{port: port}
	p.cmd = exec.Command("redis-server", args...)
	p.cmd.Args = append(p.cmd.Args, "--port", port)
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	must(t, p.cmd.Start())
	t.Cleanup(p.kill)
	c := redis.NewClient(&redis.Options{Addr: p.addr()})
	defer c.Close()
	for i := 0; c.Ping(context.Background()).Err() != nil; i++ {
		if i > 100 {
			t.Fatalf("redis-server %v did not start:\n%s", args, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

func (p *redisProc) addr() string { return "127.0.0.1:" + p.port }

// kill ends the process with SIGKILL, as a crashed host would.
func (p *redisProc) kill() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// TestSentinelFailoverUnderLoad: chatbatchd (an API and a worker process)
// on PostgreSQL and a Redis master with a replica, watched by three
// sentinels. In the middle of a large batch the master is killed with
// SIGKILL; the sentinels promote the replica, and chatbatchd follows:
// every batch completes within 30 s of the promotion with every message
// stored exactly once (tasks the replica never received are enqueued
// again by the sweep from the database), and the rate limiter and the
// live stream work on the new master.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	t.Parallel()
	e := newFaultEnv(t) // PostgreSQL; its Redis is not used
	master := startRedisProc(t, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	replica := startRedisProc(t, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--replicaof", "127.0.0.1", master.port)
	const name = "cbmaster"
	var sentinels []string
	for range 3 {
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		must(t, os.WriteFile(conf, fmt.Appendf(nil, "bind 127.0.0.1\ndir %s\nsentinel monitor %s 127.0.0.1 %s 2\n"+
			"sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n",
			dir, name, master.port, name, name, name), 0o600))
		s := startRedisProc(t, conf, "--sentinel")
		sentinels = append(sentinels, s.addr())
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinels[0]})
	defer sc.Close()
	masterAddr := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		got, err := sc.GetMasterAddrByName(ctx, name).Result()
		if err != nil || len(got) != 2 {
			return ""
		}
		return net.JoinHostPort(got[0], got[1])
	}
	// The replica in sync and every sentinel knowing the others, before
	// anything depends on a failover.
	rc := redis.NewClient(&redis.Options{Addr: replica.addr()})
	defer rc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, _ := rc.Info(context.Background(), "replication").Result()
		n, _ := sc.Sentinels(context.Background(), name).Result()
		if strings.Contains(info, "master_link_status:up") && len(n) == 2 && masterAddr() == master.addr() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica or the sentinels are not ready: %q, %d other sentinels", info, len(n))
		}
		time.Sleep(100 * time.Millisecond)
	}

	uri := fmt.Sprintf("redis-sentinel://%s/0?master=%s", strings.Join(sentinels, ","), name)
	api := e.api(e.db, uri, "-rate-limit", "600") // a burst of 600, refilled at 10 a second
	// A worker slow enough that the master dies in the middle of the batch.
	pg, db := proxied(t, e.db)
	pg.SetLatency(5 * time.Millisecond)
	e.worker(db, uri, "-concurrency", "2")
	const n = 8000
	first := e.post(api, bigBatch(n))
	e.waitChunks(first, 2)
	master.kill()
	killed := time.Now()
	deadline = time.Now().Add(60 * time.Second)
	for masterAddr() != replica.addr() {
		if time.Now().After(deadline) {
			t.Fatalf("the sentinels did not promote the replica within a minute (master %q)", masterAddr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	promoted := time.Now()
	pg.SetLatency(0)
	t.Logf("the replica was promoted %v after the master was killed", promoted.Sub(killed).Round(100*time.Millisecond))

	// A batch accepted after the promotion, through the new master.
	var second string
	for {
		status, env, _, err := tryCall(http.MethodPost, api.url+"/messages/batch", "k", bigBatch(500), 10*time.Second)
		if err == nil && status == 200 {
			var res struct{ BatchID string }
			must(t, json.Unmarshal(env.Result, &res))
			second = res.BatchID
			break
		}
		if time.Since(promoted) > 30*time.Second {
			t.Fatalf("no POST accepted within 30 s of the promotion: %d %+v %v", status, env, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, id := range []string{first, second} {
		e.waitDone(id, 60*time.Second)
	}
	if took := time.Since(promoted); took > 30*time.Second {
		t.Errorf("the batches finished %v after the promotion, want within 30 s", took.Round(100*time.Millisecond))
	} else {
		t.Logf("every batch finished %v after the promotion", took.Round(100*time.Millisecond))
	}
	e.verify(first, n)
	e.verify(second, 500)

	// The rate limiter and the live stream are on the new master.
	nm := redis.NewClient(&redis.Options{Addr: replica.addr()})
	defer nm.Close()
	ctx := t.Context()
	// The limiter answers (it serves without its headers when Redis does
	// not), counting down on the new master. Its client finds the new
	// master through the sentinels on its own schedule, which the batches
	// need not wait for (they finished as little as 0.2 s after the
	// promotion): give it a bound, as the live stream below gets.
	limiterBack := time.Now().Add(20 * time.Second)
	for {
		_, _, h, err := tryCall(http.MethodGet, api.url+"/messages/batch?limit=1", "k", "", 10*time.Second)
		must(t, err)
		if h.Get("X-RateLimit-Remaining") != "" || time.Now().After(limiterBack) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var remaining []string
	for range 5 {
		_, _, h, err := tryCall(http.MethodGet, api.url+"/messages/batch?limit=1", "k", "", 10*time.Second)
		must(t, err)
		remaining = append(remaining, h.Get("X-RateLimit-Remaining"))
	}
	if a, err1 := strconv.Atoi(remaining[0]); err1 != nil {
		t.Errorf("no X-RateLimit-Remaining 20 s after the failover (%q): the rate limiter does not reach the new master", remaining)
	} else if b, err2 := strconv.Atoi(remaining[4]); err2 != nil || b >= a {
		t.Errorf("X-RateLimit-Remaining %q: the limiter on the new master does not count", remaining)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		subs, err := nm.PubSubNumSub(ctx, eventsChannel(e.app)).Result()
		if err == nil && subs[eventsChannel(e.app)] >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API's live stream does not subscribe on the new master: %v %v", subs, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sub := nm.Subscribe(ctx, eventsChannel(e.app))
	defer sub.Close()
	_, err := sub.Receive(ctx)
	must(t, err)
	third := e.post(api, bigBatch(3))
	select {
	case m := <-sub.Channel():
		if !strings.Contains(m.Payload, third) {
			t.Errorf("an event on the new master that is not of the batch just sent: %.200s", m.Payload)
		}
	case <-time.After(15 * time.Second):
		t.Error("the worker published nothing on the new master within 15 s")
	}
	e.waitDone(third, 30*time.Second)
}
