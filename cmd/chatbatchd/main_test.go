package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/chatbatch/chatbatch"
	"github.com/chatbatch/chatbatch/adapters/bunstore"
	"github.com/chatbatch/chatbatch/adapters/bunstore/bunopen"
	"github.com/chatbatch/chatbatch/adapters/webhook"
	"github.com/chatbatch/chatbatch/internal/apispec"
	"github.com/chatbatch/chatbatch/internal/seed"
	"github.com/chatbatch/chatbatch/store"

	"github.com/chatbatch/chatbatch/internal/testenv"
)

// binary is the chatbatchd built once for the whole test run.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatbatchd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "chatbatchd")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Env = append(os.Environ(), "GOFLAGS=") // not .ci/run's -json for go test
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building chatbatchd:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one chatbatchd process under test.
type proc struct {
	cmd    *exec.Cmd
	url    string // base URL; "" for a worker-only process
	stderr *syncBuffer
	done   chan struct{}
	exit   int
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProc runs chatbatchd with args in dir and waits until it listens
// (or, with -api=false, until it logs that the worker started). It is
// stopped with SIGTERM when the test ends, and must exit 0.
func startProc(t *testing.T, dir string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	must(t, err)
	must(t, p.cmd.Start())
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "chatbatchd listening on "); ok {
				ready <- u
			}
		}
	}()
	go func() {
		_ = p.cmd.Wait()
		p.exit = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if p.exit != 0 {
			t.Errorf("chatbatchd %v exited with %d\n%s", args, p.exit, p.stderr)
		}
	})
	api := !slices.Contains(args, "-api=false")
	deadline := time.After(60 * time.Second)
	for {
		select {
		case u := <-ready:
			p.url = u
			return p
		case <-p.done:
			t.Fatalf("chatbatchd %v exited with %d before it was ready:\n%s", args, p.exit, p.stderr)
		case <-deadline:
			t.Fatalf("chatbatchd %v not ready after 60 s:\n%s", args, p.stderr)
		case <-time.After(50 * time.Millisecond):
			if !api && strings.Contains(p.stderr.String(), "batch worker started") {
				return p
			}
		}
	}
}

func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("chatbatchd did not stop within 30 s of SIGTERM")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type envelope struct {
	RC     int             `json:"RC"`
	RM     string          `json:"RM"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// send makes a request with the API key and a JSON body, and returns the
// answer with its body read.
func send(t *testing.T, method, u, key, body string) (*http.Request, *http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	must(t, err)
	if key != "" {
		req.Header.Set("IM-API-KEY", key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	must(t, err)
	return req, res, raw
}

func call(t *testing.T, method, u, key, body string) (int, envelope) {
	t.Helper()
	req, res, raw := send(t, method, u, key, body)
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatalf("%s %s: %d %s", method, u, res.StatusCode, raw)
	}
	// The batch API's answers (not the host's own endpoints) must match
	// openapi.yaml, and a request it accepted must be one it describes.
	if strings.HasPrefix(req.URL.Path, "/messages/batch") {
		if err := apispec.Check(method, req.URL.RequestURI(), res.StatusCode, res.Header, raw); err != nil {
			t.Errorf("API description: %v", err)
		}
		if res.StatusCode == http.StatusOK {
			if err := apispec.CheckRequest(method, req.URL.RequestURI(), req.Header, []byte(body)); err != nil {
				t.Errorf("API description: a request chatbatchd accepted: %v", err)
			}
		}
	}
	return res.StatusCode, env
}

// sendAndWait posts a batch and waits until it is finished.
func sendAndWait(t *testing.T, base, key, body string) string {
	t.Helper()
	status, env := call(t, http.MethodPost, base+"/messages/batch", key, body)
	if status != 200 || env.RC != 0 {
		t.Fatalf("POST /messages/batch = %d %+v", status, env)
	}
	var res struct{ BatchID string }
	must(t, json.Unmarshal(env.Result, &res))
	return waitBatch(t, base, key, res.BatchID)
}

// waitBatch waits until batch id is completed.
func waitBatch(t *testing.T, base, key, id string) string {
	t.Helper()
	res := struct{ BatchID string }{id}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, env := call(t, http.MethodGet, base+"/messages/batch/"+res.BatchID, key, "")
		var st struct {
			Status       string
			Sent, Failed int
		}
		must(t, json.Unmarshal(env.Result, &st))
		if st.Status == "completed" {
			return res.BatchID
		}
		if st.Status == "completed_with_errors" || time.Now().After(deadline) {
			t.Fatalf("batch %s: %+v", res.BatchID, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type roomMessage struct {
	ID, Room, Sender, Message, MessageType, BatchID string
	CreatedAt                                       time.Time
}

func roomMessages(t *testing.T, base, key, room string) []roomMessage {
	t.Helper()
	status, env := call(t, http.MethodGet, base+"/rooms/"+url.PathEscape(room)+"/messages?limit=10", key, "")
	if status != 200 {
		t.Fatalf("GET /rooms/%s/messages = %d %+v", room, status, env)
	}
	var res struct{ Messages []roomMessage }
	must(t, json.Unmarshal(env.Result, &res))
	return res.Messages
}

// checkSeedExamples sends the three examples of the API description and
// reads the results back through the host's own endpoints.
func checkSeedExamples(t *testing.T, api, key string) {
	t.Helper()
	direct := func(u string) string { return store.DirectRoomID("system", u) }
	b1 := sendAndWait(t, api, key, seed.Broadcast)
	b2 := sendAndWait(t, api, key, seed.Template)
	b3 := sendAndWait(t, api, key, seed.Rooms)
	texts := func(room, batch string) []string {
		var out []string
		for _, m := range roomMessages(t, api, key, room) {
			if m.BatchID == batch {
				out = append(out, m.Message)
				if m.Sender != "system" || m.MessageType != "text" || m.Room != room {
					t.Errorf("message %+v", m)
				}
			}
		}
		return out
	}
	for _, u := range []string{"user-a", "user-b", "user-c"} {
		if got := texts(direct(u), b1); !slices.Equal(got, []string{"系統公告:明天將進行例行維護"}) {
			t.Errorf("%s got %q from the broadcast", u, got)
		}
	}
	if got := texts(direct("user-a"), b2); !slices.Equal(got, []string{"Hi Alice,您的訂單 ORD-001 已出貨!"}) {
		t.Errorf("user-a got %q from the template example", got)
	}
	if got := texts(direct("user-b"), b2); !slices.Equal(got, []string{"Hi Bob,您的訂單 ORD-002 已出貨!"}) {
		t.Errorf("user-b got %q from the template example", got)
	}
	for _, room := range []string{"room-001", "room-002", "room-003"} {
		if got := texts(room, b3); !slices.Equal(got, []string{"活動提醒:明天 14:00 開始"}) {
			t.Errorf("%s got %q", room, got)
		}
	}
	// Newest first.
	msgs := roomMessages(t, api, key, direct("user-a"))
	if len(msgs) != 2 || msgs[0].BatchID != b2 {
		t.Errorf("user-a's room, newest first: %+v", msgs)
	}
}

func unique(prefix string) string { return prefix + strings.ToLower(rand.Text()[:8]) }

func TestEmbeddedDefaults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// As a newcomer runs it: only -demo (and a free port).
	p := startProc(t, dir, []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0")
	checkSeedExamples(t, p.url, "demo-key")
	if _, err := os.Stat(filepath.Join(dir, "chatbatch.db")); err != nil {
		t.Errorf("the default SQLite file is missing: %v", err)
	}
	logs := p.stderr.String()
	for _, want := range []string{"in-process Redis", "for development only", "batch accepted", "batch finished"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	checkHealth(t, p.url)
	checkBadIDs(t, p.url, "demo-key")
	p.stop(t)
	logs = p.stderr.String()
	if !strings.Contains(logs, "chatbatchd stopped") {
		t.Errorf("no clean stop in the log:\n%s", logs)
	}
	// Never the API key, never a message body.
	for _, secret := range []string{"demo-key", "Alice", "ORD-001", "系統公告", "活動提醒"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log contains %q", secret)
		}
	}
}

func checkHealth(t *testing.T, base string) {
	t.Helper()
	for _, path := range []string{"/healthz", "/readyz"} {
		if status, env := call(t, http.MethodGet, base+path, "", ""); status != 200 || env.RC != 0 {
			t.Errorf("GET %s = %d %+v", path, status, env)
		}
	}
	res, err := http.Get(base + "/")
	must(t, err)
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(page), "chatbatchd") {
		t.Errorf("GET / = %d", res.StatusCode)
	}
	res, err = http.Get(base + "/openapi.yaml")
	must(t, err)
	spec, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/yaml" || !bytes.Equal(spec, chatbatch.OpenAPI) {
		t.Errorf("GET /openapi.yaml = %d %q, %d bytes; want 200 application/yaml, openapi.yaml", res.StatusCode, res.Header.Get("Content-Type"), len(spec))
	}
	if status, env := call(t, http.MethodGet, base+"/users/user-a/rooms", "wrong", ""); status != 401 || env.Error == nil || env.Error.Code != "INVALID_API_KEY" {
		t.Errorf("a host endpoint with a wrong key = %d %+v", status, env)
	}
}

// checkBadIDs asks for IDs no user, room or batch can have (a NUL byte,
// invalid UTF-8): client errors in the envelope, never 503.
func checkBadIDs(t *testing.T, base, key string) {
	t.Helper()
	for _, c := range []struct {
		path, code string
		status     int
	}{
		{"/rooms/%00/messages", "INVALID_PARAMETER", 400},
		{"/rooms/a%FFb/messages", "INVALID_PARAMETER", 400},
		{"/users/%00/rooms", "INVALID_PARAMETER", 400},
		{"/users/%C3%28/rooms", "INVALID_PARAMETER", 400},
		{"/events?user=%00", "INVALID_PARAMETER", 400},
		{"/messages/batch/%00", "BATCH_NOT_FOUND", 404},
		{"/messages/batch/batch-%FF", "BATCH_NOT_FOUND", 404},
		{"/messages/batch/%00/recipients", "BATCH_NOT_FOUND", 404},
	} {
		status, env := call(t, http.MethodGet, base+c.path, key, "")
		if status != c.status || env.Error == nil || env.Error.Code != c.code {
			t.Errorf("GET %s = %d %+v, want %d %s", c.path, status, env, c.status, c.code)
		}
	}
	if status, env := call(t, http.MethodDelete, base+"/messages/batch/%00", key, ""); status != 404 || env.Error == nil || env.Error.Code != "BATCH_NOT_FOUND" {
		t.Errorf("DELETE /messages/batch/%%00 = %d %+v, want 404 BATCH_NOT_FOUND", status, env)
	}
}

// bigBatch is a batch of n recipients (all user-a), n/500 chunks.
func bigBatch(n int) string {
	paras := make([]string, n)
	for i := range paras {
		paras[i] = fmt.Sprintf(`{"receiver":"user-a","$n$":%d}`, i)
	}
	return `{"messageType":"text","message":"secret body #$n$","paras":[` + strings.Join(paras, ",") + `]}`
}

func TestJSONLogs(t *testing.T) {
	t.Parallel()
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY=s3cret-key-for-test"}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:", "-log-format", "json")
	sendAndWait(t, p.url, "s3cret-key-for-test", seed.Template)
	sendAndWait(t, p.url, "s3cret-key-for-test", bigBatch(1200))
	p.stop(t)
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	found := map[string]bool{}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("a log line is not JSON: %q", l)
		}
		found[fmt.Sprint(rec["msg"])] = true
		if strings.Contains(l, "s3cret") || strings.Contains(l, "Alice") || strings.Contains(l, "secret body") {
			t.Errorf("the log leaks the key or a body: %s", l)
		}
		if rec["msg"] == "batch progress" && (rec["total"] != 1200.0 || rec["done"] == nil || rec["recipients_per_second"] == nil) {
			t.Errorf("progress line %s", l)
		}
	}
	for _, want := range []string{"batch accepted", "batch progress", "batch finished", "chatbatchd stopped"} {
		if !found[want] {
			t.Errorf("no %q log line", want)
		}
	}
}

// externalServices returns the PostgreSQL and Redis of the test variables
// with a fresh database, or skips.
func externalServices(t *testing.T) (db, redisURL string) {
	t.Helper()
	pg, rd := os.Getenv("CHATBATCH_TEST_POSTGRES"), os.Getenv("CHATBATCH_TEST_REDIS")
	if pg == "" || rd == "" {
		testenv.Skip(t, "set CHATBATCH_TEST_POSTGRES and CHATBATCH_TEST_REDIS to run chatbatchd against PostgreSQL and Redis")
	}
	admin, err := sql.Open("pgx", pg)
	must(t, err)
	defer admin.Close()
	name := unique("chatbatchd_")
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("creating a test database: %v", err)
	}
	t.Cleanup(func() {
		a, err := sql.Open("pgx", pg)
		if err == nil {
			_, _ = a.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
			a.Close()
		}
	})
	u, err := url.Parse(pg)
	must(t, err)
	u.Path = "/" + name
	if !strings.Contains(rd, "://") {
		rd = "redis://" + rd
	}
	return u.String(), rd
}

func TestPostgresAndRedis(t *testing.T) {
	t.Parallel()
	db, rd := externalServices(t)
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY=k"}, "-demo", "-addr", "127.0.0.1:0", "-db", db, "-redis", rd,
		"-queue", unique("q"), "-app", unique("app"))
	checkSeedExamples(t, p.url, "k")
	checkHealth(t, p.url)
}

// TestSplitProcesses runs an API-only and a worker-only process on one
// PostgreSQL and one Redis: the batch accepted by one is sent by the other.
func TestSplitProcesses(t *testing.T) {
	t.Parallel()
	db, rd := externalServices(t)
	common := []string{"-db", db, "-redis", rd, "-queue", unique("q"), "-app", unique("app")}
	api := startProc(t, t.TempDir(), []string{"IM_API_KEY=k"}, append([]string{"-demo", "-worker=false", "-addr", "127.0.0.1:0"}, common...)...)
	worker := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, append([]string{"-api=false"}, common...)...)
	checkSeedExamples(t, api.url, "k")
	if !strings.Contains(worker.stderr.String(), "batch finished") {
		t.Errorf("the worker process did not log the batches it sent")
	}
	if strings.Contains(api.stderr.String(), "batch worker started") {
		t.Errorf("the API-only process ran a worker")
	}
}

func TestBadStart(t *testing.T) {
	t.Parallel()
	closed := closedPort(t)
	cases := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown flag", []string{"-demo", "-colour"}, nil, "flag provided but not defined: -colour"},
		{"extra argument", []string{"-demo", "serve"}, nil, `unexpected argument "serve"`},
		{"unparsable -db", []string{"-demo", "-db", "oracle://x"}, nil, "-db:"},
		{"unparsable -redis", []string{"-demo", "-redis", "http://127.0.0.1:6379"}, nil, "-redis:"},
		{"unreachable -redis", []string{"-demo", "-redis", "redis://" + closed}, nil, "-redis: cannot reach"},
		{"unreachable -db", []string{"-demo", "-db", "postgres://postgres@" + closed + "/test?sslmode=disable&connect_timeout=3"}, nil, "-db:"},
		{"bad -concurrency", []string{"-demo", "-concurrency", "0"}, nil, "-concurrency"},
		{"bad -task-check-interval", []string{"-demo", "-task-check-interval", "0s"}, nil, "-task-check-interval: must be at least 1ms"},
		{"bad task check env", []string{"-demo"}, []string{"CHATBATCHD_TASK_CHECK_INTERVAL=fast"}, "CHATBATCHD_TASK_CHECK_INTERVAL"},
		{"bad -push", []string{"-demo", "-push", "apns"}, nil, "-push"},
		{"fcm without credentials", []string{"-demo", "-push", "fcm"}, nil, "-fcm-credentials is required"},
		{"bad -deliver", []string{"-demo", "-deliver", "kafka"}, nil, "-deliver"},
		{"bad -push-rate", []string{"-demo", "-push-rate", "-5"}, nil, "-push-rate"},
		{"webhook without URL", []string{"-demo", "-deliver", "webhook"}, []string{"CHATBATCHD_WEBHOOK_SECRET=whsec_c2VjcmV0"}, "-webhook-url"},
		{"webhook with a bad secret", []string{"-demo", "-push", "webhook", "-webhook-url", "http://127.0.0.1:1/"}, []string{"CHATBATCHD_WEBHOOK_SECRET=hunter2"}, "whsec_"},
		{"bad -write-timeout", []string{"-demo", "-write-timeout", "0s"}, nil, "must be positive"},
		{"bad -max-header-bytes", []string{"-demo", "-max-header-bytes", "10"}, nil, "-max-header-bytes: must be at least 1024"},
		{"bad store timeout env", []string{"-demo"}, []string{"CHATBATCHD_STORE_TIMEOUT=soon"}, "CHATBATCHD_STORE_TIMEOUT"},
		{"no API key", []string{}, []string{"IM_API_KEY="}, "IM_API_KEY is not set"},
		{"bad env", []string{"-demo"}, []string{"CHATBATCHD_WORKER=maybe"}, "CHATBATCHD_WORKER"},
		{"nothing to run", []string{"-demo", "-api=false", "-worker=false"}, nil, "nothing to run"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cmd := exec.Command(binary, append([]string{"-addr", "127.0.0.1:0"}, c.args...)...)
			cmd.Dir = dir
			cmd.Env = append(append(os.Environ(), "IM_API_KEY=k"), c.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := make(chan error, 1)
			must(t, cmd.Start())
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-ctx.Done():
				_ = cmd.Process.Kill()
				t.Fatalf("chatbatchd %v did not exit", c.args)
			}
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Errorf("exit code %d, want 2\n%s", code, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "chatbatchd: ") || !strings.Contains(last, c.want) {
				t.Errorf("stderr ends with %q, want a chatbatchd: line containing %q", last, c.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("a failed start wrote %d files into the working directory", len(entries))
			}
		})
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestHelp: chatbatchd -h lists every flag once, grouped by concern, with
// its environment variable, a unit in every help line that counts or
// paces something, -healthcheck among them, and never the value of a
// secret from the environment.
func TestHelp(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binary, "-h")
	cmd.Env = append(os.Environ(), "CHATBATCHD_WEBHOOK_SECRET=whsec_c2VjcmV0LXZhbHVlLWZvci10ZXN0cw==")
	raw, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chatbatchd -h: %v", err)
	}
	out := string(raw)
	for _, want := range []string{"-addr", "CHATBATCHD_ADDR", "-db", "-redis", "-api", "-worker", "-concurrency", "-task-check-interval", "-demo", "-push", "-log-format",
		"-fcm-credentials", "CHATBATCHD_FCM_CREDENTIALS", "-fcm-endpoint", "-fcm-tokens", "-healthcheck URL", "-extra-fields", "-client-key", "-token-ttl", "-default-sender",
		"-store-timeout", "-read-timeout", "-write-timeout", "-idle-timeout", "-max-header-bytes", "IM_API_KEY"} {
		if !strings.Contains(out, want) {
			t.Errorf("-h does not mention %s", want)
		}
	}
	if strings.Contains(out, "c2VjcmV0") {
		t.Errorf("-h shows the webhook secret of the environment")
	}

	// Every flag in one group, in the group's order, under its title.
	var all []string
	o, err := parseFlags([]string{"-h"}, func(string) string { return "" }, io.Discard)
	if o != nil || !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("parseFlags(-h) = %v, %v", o, err)
	}
	seen := map[string]int{}
	pos := 0
	for _, g := range flagGroups {
		i := strings.Index(out, "\n"+g.title+":\n")
		if i < pos {
			t.Errorf("the group %q is missing or out of order", g.title)
			continue
		}
		pos = i
		for _, name := range g.names {
			seen[name]++
			all = append(all, name)
			j := strings.Index(out[pos:], "\n  -"+name+" ")
			if j < 0 {
				j = strings.Index(out[pos:], "\n  -"+name+"\n")
			}
			if j < 0 {
				t.Errorf("-%s is not listed under %q", name, g.title)
				continue
			}
			pos += j
		}
	}
	listed := regexp.MustCompile(`(?m)^  -([a-z-]+)`).FindAllStringSubmatch(out, -1)
	for _, m := range listed {
		if seen[m[1]] != 1 {
			t.Errorf("-%s is in %d groups", m[1], seen[m[1]])
		}
	}
	if len(listed) != len(all) {
		t.Errorf("-h lists %d flags, the groups %d", len(listed), len(all))
	}

	// Units: a rate says per what, a size in what.
	help := func(name string) string {
		i := strings.Index(out, "\n  -"+name+" ")
		rest := out[i+1:]
		if k := strings.Index(rest[1:], "\n  -"); k >= 0 {
			rest = rest[:k+1]
		}
		return rest
	}
	for name, unit := range map[string]string{"push-rate": "per second", "rate-limit": "per minute", "max-header-bytes": "in bytes",
		"max-pending": "recipients", "max-pending-per-app": "recipients", "concurrency": "chunks", "max-retry": "retries"} {
		if !strings.Contains(help(name), unit) {
			t.Errorf("-%s's help does not say %q:\n%s", name, unit, help(name))
		}
	}
	// -healthcheck with other flags is a usage error, not a server start.
	if _, err := parseFlags([]string{"-demo", "-healthcheck", "http://127.0.0.1:8080/readyz"}, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), "takes no other flag") {
		t.Errorf("-healthcheck among other flags: %v", err)
	}
}

// TestKillWorker kills a worker process (SIGKILL) in the middle of a
// batch, starts another, and checks that the batch completes with exactly
// one message per recipient: nothing lost, nothing stored twice, and
// soon: the chunk the killed worker held is taken over by the new
// worker's sweep once its lease (10 s) has run out, not when asynq's
// recoverer gets to it a minute or two later.
func TestKillWorker(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: the worker-kill test waits for a chunk lease to run out")
	}
	rd := os.Getenv("CHATBATCH_TEST_REDIS")
	if rd == "" {
		testenv.Skip(t, "set CHATBATCH_TEST_REDIS to run the worker-kill test (the queue must outlive the worker)")
	}
	if !strings.Contains(rd, "://") {
		rd = "redis://" + rd
	}
	dir := t.TempDir()
	app := unique("app")
	common := []string{"-db", "sqlite:" + filepath.Join(dir, "chat.db"), "-redis", rd, "-queue", unique("q"), "-app", app}
	api := startProc(t, dir, []string{"IM_API_KEY=k"}, append([]string{"-demo", "-worker=false", "-addr", "127.0.0.1:0"}, common...)...)
	victim := startProc(t, dir, []string{"IM_API_KEY="}, append([]string{"-api=false", "-concurrency", "1"}, common...)...)

	// 20 chunks to 10,000 users of their own, whose rooms the worker
	// creates: time to kill the worker half-way. (To one user, whose room
	// the directory cache knows after the first chunk, the worker could
	// finish before a loaded machine reads its first progress line.)
	const n = 10000
	receivers := make([]string, n)
	paras := make([]string, n)
	for i := range receivers {
		receivers[i] = fmt.Sprintf("kw-%05d", i)
		paras[i] = fmt.Sprintf(`{"receiver":%q,"$n$":%d}`, receivers[i], i)
	}
	users, err := bunopen.Open(t.Context(), "sqlite:"+filepath.Join(dir, "chat.db"))
	must(t, err)
	directory, err := bunstore.New(users, nil)
	must(t, err)
	must(t, directory.AddUsers(t.Context(), app, receivers...))
	must(t, users.Close())
	body := `{"messageType":"text","message":"secret body #$n$","paras":[` + strings.Join(paras, ",") + `]}`
	status, env := call(t, http.MethodPost, api.url+"/messages/batch", "k", body)
	if status != 200 {
		t.Fatalf("POST = %d %+v", status, env)
	}
	var res struct{ BatchID string }
	must(t, json.Unmarshal(env.Result, &res))
	// Kill it once it has done some chunks, with others still to do.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(victim.stderr.String(), "batch progress") {
		if time.Now().After(deadline) {
			t.Fatalf("the worker made no progress:\n%s", victim.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	must(t, victim.cmd.Process.Kill())
	<-victim.done
	victim.exit = 0 // killed on purpose

	_, env = call(t, http.MethodGet, api.url+"/messages/batch/"+res.BatchID, "k", "")
	var mid struct{ Sent, Pending int }
	must(t, json.Unmarshal(env.Result, &mid))
	if mid.Pending == 0 {
		t.Fatalf("the worker finished before it was killed; the test proves nothing: %+v", mid)
	}
	t.Logf("killed the worker with %d sent, %d pending", mid.Sent, mid.Pending)

	restarted := time.Now()
	heir := startProc(t, dir, []string{"IM_API_KEY="}, append([]string{"-api=false"}, common...)...)
	deadline = time.Now().Add(150 * time.Second)
	var st struct {
		Status                string
		Sent, Failed, Pending int
	}
	for {
		_, env = call(t, http.MethodGet, api.url+"/messages/batch/"+res.BatchID, "k", "")
		must(t, json.Unmarshal(env.Result, &st))
		if st.Pending == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st.Status != "completed" || st.Sent != n {
		t.Fatalf("after restarting the worker: %+v, want all %d sent", st, n)
	}
	// The lease (10 s) plus a sweep (2 s), or for a task the dead worker
	// took but never started two half leases and a sweep, plus the rest of
	// the batch (about a second): the bound is 15 s, the rest is
	// slack for a loaded machine.
	took := time.Since(restarted)
	t.Logf("the batch completed %v after the new worker started (taken over from the dead worker: %v)",
		took.Round(100*time.Millisecond), strings.Contains(heir.stderr.String(), "held by a worker that is gone"))
	if took > 20*time.Second {
		t.Errorf("the batch completed %v after the new worker started, want within 20 s", took)
	}
	// Exactly one stored message per recipient: every index once.
	db, err := bunopen.Open(t.Context(), "sqlite:"+filepath.Join(dir, "chat.db"))
	must(t, err)
	defer db.Close()
	var rows, distinct, lo, hi int
	must(t, db.QueryRowContext(t.Context(), "SELECT COUNT(*), COUNT(DISTINCT idx), MIN(idx), MAX(idx) FROM chatbatch_messages WHERE batch_id = ?", res.BatchID).
		Scan(&rows, &distinct, &lo, &hi))
	if rows != n || distinct != n || lo != 0 || hi != n-1 {
		t.Errorf("stored %d messages (%d distinct recipients, indexes %d..%d) for %d recipients", rows, distinct, lo, hi, n)
	}
}

// TestWebhookDelivery runs chatbatchd with -deliver webhook and -push
// webhook against a receiver that verifies every signature: the seed's
// template example arrives as signed messages and push notifications.
func TestWebhookDelivery(t *testing.T) {
	t.Parallel()
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("chatbatchd webhook test secret!!"))
	var mu sync.Mutex
	got := map[string][]json.RawMessage{}
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]string{secret}, r.Header, body, time.Now(), 0); err != nil {
			t.Errorf("a webhook request did not verify: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var env struct {
			Type string            `json:"type"`
			Data []json.RawMessage `json:"data"`
		}
		must(t, json.Unmarshal(body, &env))
		mu.Lock()
		got[env.Type] = append(got[env.Type], env.Data...)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()
	dir := t.TempDir()
	p := startProc(t, dir, []string{"IM_API_KEY=", "CHATBATCHD_WEBHOOK_SECRET=" + secret},
		"-demo", "-addr", "127.0.0.1:0", "-deliver", "webhook", "-push", "webhook", "-webhook-url", receiver.URL+"/hooks")
	sendAndWait(t, p.url, "demo-key", seed.Template) // it asks for push

	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		nm, np := len(got["messages"]), len(got["push"])
		mu.Unlock()
		if (nm >= 2 && np >= 2) || time.Now().After(deadline) {
			if nm != 2 || np != 2 {
				t.Fatalf("the receiver got %d messages and %d push notifications, want 2 and 2", nm, np)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.stop(t)
	if strings.Contains(p.stderr.String(), secret) {
		t.Error("the log shows the webhook secret")
	}
}

// fcmKey is an RSA key for the service accounts of the FCM tests.
var fcmKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// writeServiceAccount writes a service-account key for tokenURI into dir,
// changed by edit.
func writeServiceAccount(t *testing.T, dir, tokenURI string, edit func(map[string]any)) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(fcmKey())
	must(t, err)
	sa := map[string]any{
		"type": "service_account", "project_id": "chatbatchd-test", "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "push@chatbatchd-test.iam.gserviceaccount.com", "token_uri": tokenURI,
	}
	if edit != nil {
		edit(sa)
	}
	b, err := json.Marshal(sa)
	must(t, err)
	path := filepath.Join(dir, "service-account.json")
	must(t, os.WriteFile(path, b, 0o600))
	return path
}

// TestFCMFlags checks -push fcm's flags: a bad service-account key is a
// usage error naming the file and the field, in parseFlags and as
// chatbatchd's exit.
func TestFCMFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := writeServiceAccount(t, t.TempDir(), "https://oauth2.googleapis.com/token", nil)
	noKey := writeServiceAccount(t, t.TempDir(), "https://oauth2.googleapis.com/token", func(m map[string]any) { delete(m, "private_key") })
	badKey := writeServiceAccount(t, t.TempDir(), "https://oauth2.googleapis.com/token", func(m map[string]any) { m["private_key"] = "not a key" })
	tokens := filepath.Join(dir, "tokens.json")
	must(t, os.WriteFile(tokens, []byte(`{"demo":{"user-a":["tok-a"]}}`), 0o600))
	badTokens := filepath.Join(dir, "bad-tokens.json")
	must(t, os.WriteFile(badTokens, []byte(`{"demo":["tok-a"]}`), 0o600))
	missing := filepath.Join(dir, "missing.json")
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		want string // "" for no error
	}{
		{"good", []string{"-push", "fcm", "-fcm-credentials", good, "-fcm-tokens", tokens}, nil, ""},
		{"good from the environment", []string{"-push", "fcm"}, map[string]string{"CHATBATCHD_FCM_CREDENTIALS": good, "CHATBATCHD_FCM_TOKENS": tokens, "CHATBATCHD_FCM_ENDPOINT": "http://127.0.0.1:1"}, ""},
		{"no credentials", []string{"-push", "fcm", "-fcm-tokens", tokens}, nil, "-push fcm: -fcm-credentials is required"},
		{"no tokens", []string{"-push", "fcm", "-fcm-credentials", good}, nil, "-push fcm: -fcm-tokens is required"},
		{"no private_key", []string{"-push", "fcm", "-fcm-credentials", noKey, "-fcm-tokens", tokens}, nil,
			`-fcm-credentials: fcm: service account ` + noKey + `: field "private_key": missing`},
		{"bad private_key", []string{"-push", "fcm", "-fcm-tokens", tokens}, map[string]string{"CHATBATCHD_FCM_CREDENTIALS": badKey},
			`-fcm-credentials: fcm: service account ` + badKey + `: field "private_key": not a PEM-encoded private key`},
		{"missing credentials file", []string{"-push", "fcm", "-fcm-credentials", missing, "-fcm-tokens", tokens}, nil,
			`-fcm-credentials: fcm: service account ` + missing + `: no such file or directory`},
		{"bad tokens file", []string{"-push", "fcm", "-fcm-credentials", good, "-fcm-tokens", badTokens}, nil, "-fcm-tokens: " + badTokens + `: not {"<app>"`},
		{"bad endpoint", []string{"-push", "fcm", "-fcm-credentials", good, "-fcm-tokens", tokens, "-fcm-endpoint", "fcm.googleapis.com"}, nil, "-fcm-endpoint"},
		{"not fcm: no check", []string{"-push", "log", "-fcm-credentials", missing}, nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "IM_API_KEY" {
					return "k"
				}
				return c.env[k]
			}
			o, err := parseFlags(c.args, getenv, io.Discard)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("parseFlags(%q): %v", c.args, err)
			case c.want == "":
				if c.args[1] == "fcm" && o.fcmTokens == nil {
					t.Error("-fcm-tokens was not read")
				}
			case err == nil || !strings.Contains(err.Error(), c.want):
				t.Errorf("parseFlags(%q): %v, want %q", c.args, err, c.want)
			case strings.Contains(err.Error(), "PRIVATE KEY"):
				t.Errorf("the error shows the key: %v", err)
			}
			if _, ok := err.(*usageError); err != nil && !ok {
				t.Errorf("%v is not a usage error", err)
			}
		})
	}
	t.Run("exit", func(t *testing.T) {
		cmd := exec.Command(binary, "-demo", "-addr", "127.0.0.1:0", "-push", "fcm", "-fcm-credentials", noKey, "-fcm-tokens", tokens)
		cmd.Dir = t.TempDir()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		_ = cmd.Run()
		want := `chatbatchd: -fcm-credentials: fcm: service account ` + noKey + `: field "private_key": missing`
		if code := cmd.ProcessState.ExitCode(); code != 2 || strings.TrimSpace(stderr.String()) != want {
			t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr.String(), want)
		}
	})
}

// TestFCMPush runs chatbatchd with -push fcm (and -push-rate, which wraps
// it) against a fake token endpoint and a fake FCM: the seed's template
// example is pushed to user-a's devices, the device FCM calls
// UNREGISTERED is dropped and logged, and user-b, who has no devices, is
// skipped.
func TestFCMPush(t *testing.T) {
	t.Parallel()
	oauth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.PostFormValue("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || r.PostFormValue("assertion") == "" {
			t.Errorf("token endpoint: form %v", r.PostForm)
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"ya29.chatbatchd-test","token_type":"Bearer","expires_in":3600}`)
	}))
	defer oauth.Close()
	type pushed struct{ token, title, body string }
	var mu sync.Mutex
	var got []pushed
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/projects/chatbatchd-test/messages:send" || r.Header.Get("Authorization") != "Bearer ya29.chatbatchd-test" {
			t.Errorf("FCM: %s, Authorization %q", r.URL.Path, r.Header.Get("Authorization"))
		}
		var body struct {
			Message struct {
				Token        string
				Notification struct{ Title, Body string }
			}
		}
		must(t, json.NewDecoder(r.Body).Decode(&body))
		m := body.Message
		if m.Token == "tok-gone" {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND",`+
				`"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`)
			return
		}
		mu.Lock()
		got = append(got, pushed{m.Token, m.Notification.Title, m.Notification.Body})
		mu.Unlock()
		io.WriteString(w, `{"name":"projects/chatbatchd-test/messages/1"}`)
	}))
	defer fake.Close()
	dir := t.TempDir()
	sa := writeServiceAccount(t, t.TempDir(), oauth.URL+"/token", nil)
	tokens := filepath.Join(t.TempDir(), "tokens.json")
	must(t, os.WriteFile(tokens, []byte(`{"demo":{"user-a":["tok-a","tok-gone"],"user-c":["tok-c"]}}`), 0o600))
	p := startProc(t, dir, []string{"IM_API_KEY=", "CHATBATCHD_FCM_ENDPOINT=" + fake.URL},
		"-demo", "-addr", "127.0.0.1:0", "-push", "fcm", "-fcm-credentials", sa, "-fcm-tokens", tokens, "-push-rate", "100")
	sendAndWait(t, p.url, "demo-key", seed.Template) // it asks for push to user-a and user-b

	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 1 && strings.Contains(p.stderr.String(), "dropped an invalid device token") || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.stop(t)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].token != "tok-a" || got[0].title != "system" || !strings.HasPrefix(got[0].body, "Hi Alice,") {
		t.Errorf("FCM got %+v, want one push to tok-a", got)
	}
	if log := p.stderr.String(); !strings.Contains(log, "dropped an invalid device token") || !strings.Contains(log, "user=user-a") {
		t.Errorf("the log does not report the invalid token:\n%s", log)
	}
	if strings.Contains(p.stderr.String(), "ya29.chatbatchd-test") || strings.Contains(p.stderr.String(), "PRIVATE KEY") {
		t.Error("the log shows the access token or the key")
	}
}

// scrape GETs a Prometheus endpoint and returns its text.
func scrape(t *testing.T, u string) string {
	t.Helper()
	res, err := http.Get(u)
	must(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	must(t, err)
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET %s = %d %s", u, res.StatusCode, res.Header.Get("Content-Type"))
	}
	return string(body)
}

// metricValue returns the value of the first sample of name whose labels
// contain every one of labels, or -1.
func metricValue(text, name string, labels ...string) float64 {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		matches := true
		for _, l := range labels {
			matches = matches && strings.Contains(rest, l)
		}
		if !matches {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(rest[strings.LastIndexByte(rest, ' ')+1:], &v); err == nil {
			return v
		}
	}
	return -1
}

// TestMetrics scrapes GET /metrics after a batch: chatbatch's counters
// and histograms, asynq's queue metrics and the Go runtime's, in
// Prometheus text; and a worker-only process serves its own on
// -metrics-addr, with /healthz and /readyz.
func TestMetrics(t *testing.T) {
	t.Parallel()
	queue := unique("q")
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:", "-queue", queue)
	sendAndWait(t, p.url, "demo-key", seed.Template)
	text := scrape(t, p.url+"/metrics")
	checks := []struct {
		name   string
		labels []string
		min    float64
	}{
		{"chatbatch_batches_accepted_total", []string{`chatbatch_app_id="demo"`}, 1},
		{"chatbatch_recipients_total", []string{`chatbatch_outcome="sent"`}, 2},
		{"chatbatch_accept_duration_seconds_count", []string{`http_response_status_code="200"`}, 1},
		{"chatbatch_chunk_duration_seconds_count", []string{`chatbatch_result="done"`}, 1},
		{"chatbatch_queue_lag_seconds_count", nil, 1},
		{"asynq_tasks_processed_total", []string{`queue="` + queue + `"`}, 1},
		{"go_goroutines", nil, 1},
	}
	for _, c := range checks {
		if v := metricValue(text, c.name, c.labels...); v < c.min {
			t.Errorf("%s%v = %v, want at least %v", c.name, c.labels, v, c.min)
		}
	}
	if strings.Contains(text, "demo-key") || strings.Contains(text, "Alice") {
		t.Errorf("/metrics shows the API key or message content")
	}

	// A worker-only process, its metrics on a port of their own.
	db, rd := externalServices(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	must(t, ln.Close())
	common := []string{"-db", db, "-redis", rd, "-queue", unique("q"), "-app", unique("app")}
	api := startProc(t, t.TempDir(), []string{"IM_API_KEY=k"}, append([]string{"-demo", "-worker=false", "-addr", "127.0.0.1:0", "-metrics=false"}, common...)...)
	startProc(t, t.TempDir(), []string{"IM_API_KEY="}, append([]string{"-api=false", "-metrics-addr", addr}, common...)...)
	sendAndWait(t, api.url, "k", seed.Template)
	if v := metricValue(scrape(t, "http://"+addr+"/metrics"), "chatbatch_recipients_total", `chatbatch_outcome="sent"`); v != 2 {
		t.Errorf("the worker's chatbatch_recipients_total{sent} = %v, want 2", v)
	}
	// Its probes (deploy/kubernetes/worker.yaml) are on the same port.
	for _, path := range []string{"/healthz", "/readyz"} {
		res, err := http.Get("http://" + addr + path)
		must(t, err)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("the worker's GET %s = %d, want 200", path, res.StatusCode)
		}
	}
	res, err := http.Get(api.url + "/metrics")
	must(t, err)
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("-metrics=false: GET /metrics = %d, want 404", res.StatusCode)
	}
}

// TestRecallOverTheLiveStream: a user connected to GET /events gets a
// batch's message and, after POST …/recall, its retraction; the room no
// longer holds the message.
func TestRecallOverTheLiveStream(t *testing.T) {
	t.Parallel()
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:")
	next := openEvents(t, p.url, "demo-key", "user-a")
	next("ready")
	id := sendAndWait(t, p.url, "demo-key", `{"messageType":"text","message":"take me back","paras":[{"receiver":"user-a"}]}`)
	if m := next("message"); m["id"] != id+"-0" || m["message"] != "take me back" {
		t.Fatalf("message event %v", m)
	}
	status, env := call(t, http.MethodPost, p.url+"/messages/batch/"+id+"/recall", "demo-key", "")
	if status != 200 {
		t.Fatalf("recall = %d %+v", status, env)
	}
	if m := next("retraction"); m["id"] != id+"-0" || m["message"] != "" {
		t.Errorf("retraction event %v", m)
	}
	for _, m := range roomMessages(t, p.url, "demo-key", store.DirectRoomID("system", "user-a")) {
		if m.BatchID == id {
			t.Errorf("the recalled message is still in the room: %+v", m)
		}
	}
}

// openEvents opens GET /events?user= and returns a function that waits
// for the next event of a name (the others are skipped) and decodes it.
func openEvents(t *testing.T, base, key, user string) func(want string) map[string]any {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/events?user="+url.QueryEscape(user), nil)
	must(t, err)
	req.Header.Set("IM-API-KEY", key)
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != 200 {
		t.Fatalf("GET /events = %d", res.StatusCode)
	}
	events := make(chan [2]string, 16)
	go func() {
		sc := bufio.NewScanner(res.Body)
		name := ""
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				name = v
			} else if v, ok := strings.CutPrefix(line, "data: "); ok {
				events <- [2]string{name, v}
			}
		}
		close(events)
	}()
	return func(want string) map[string]any {
		t.Helper()
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("the stream ended before a %s event", want)
				}
				if ev[0] == want {
					var m map[string]any
					must(t, json.Unmarshal([]byte(ev[1]), &m))
					return m
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("no %s event within 20 s", want)
			}
		}
	}
}

// TestRateLimitFlag: -rate-limit caps the requests of each app a minute
// on every endpoint chatbatchd authenticates — the batch API, IMKit's
// admin calls, rooms, users and the live stream — counted together,
// each refusal the API's 429 envelope with Retry-After and X-RateLimit-*.
// IMKit's deprecated API_KEY header is counted like IM-API-KEY.
func TestRateLimitFlag(t *testing.T) {
	t.Parallel()
	p := startProc(t, t.TempDir(), []string{"IM_API_KEY="}, "-demo", "-addr", "127.0.0.1:0", "-db", "sqlite::memory:", "-rate-limit", "6", "-app", unique("app"))
	endpoints := []struct{ method, path, header, body string }{
		{http.MethodGet, "/messages/batch", "IM-API-KEY", ""},
		{http.MethodGet, "/admin/clients", "IM-API-KEY", ""},
		{http.MethodPost, "/admin/clients", "API_KEY", `{"_id":"user-z","nickname":"Z"}`},
		{http.MethodGet, "/users/user-a/rooms", "IM-API-KEY", ""},
		{http.MethodGet, "/rooms/room-001/messages", "IM-API-KEY", ""},
		{http.MethodGet, "/events?user=user-a", "IM-API-KEY", ""},
	}
	do := func(method, path, header, body string) *http.Response {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, p.url+path, strings.NewReader(body))
		must(t, err)
		req.Header.Set(header, "demo-key")
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := http.DefaultClient.Do(req)
		must(t, err)
		if res.StatusCode == http.StatusOK && strings.HasPrefix(path, "/events") {
			res.Body.Close() // a stream: its status is all this test needs
			return res
		}
		b, err := io.ReadAll(res.Body)
		must(t, err)
		res.Body.Close()
		res.Body = io.NopCloser(bytes.NewReader(b))
		return res
	}
	for _, e := range endpoints { // the six requests the limit allows, one per endpoint
		if res := do(e.method, e.path, e.header, e.body); res.StatusCode != http.StatusOK {
			t.Errorf("%s %s (%s) within the limit: %d", e.method, e.path, e.header, res.StatusCode)
		}
	}
	for _, e := range endpoints { // now each one is over it
		res := do(e.method, e.path, e.header, e.body)
		var env envelope
		if res.StatusCode == http.StatusTooManyRequests {
			must(t, json.NewDecoder(res.Body).Decode(&env))
		}
		if res.StatusCode != http.StatusTooManyRequests || env.Error == nil || env.Error.Code != "RATE_LIMIT_EXCEEDED" ||
			res.Header.Get("Retry-After") == "" || res.Header.Get("X-RateLimit-Limit") != "6" || res.Header.Get("X-RateLimit-Remaining") != "0" {
			t.Errorf("%s %s (%s) over the limit: %d %+v %v, want 429 RATE_LIMIT_EXCEEDED with Retry-After and X-RateLimit-*", e.method, e.path, e.header, res.StatusCode, env, res.Header)
		}
	}
}
