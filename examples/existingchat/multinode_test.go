package main

// The chat server as chat servers run: two API nodes, each with its own
// websocket hub and clients, and worker-only processes, all separate
// processes of this binary on one PostgreSQL schema and one Redis (a queue
// and a bus channel of the test's own). The hubs share events through the
// bus (chat.RedisBus); a node delivers to the clients connected to it.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
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

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/chatbatch/chatbatch/examples/existingchat/batchwire"
	"github.com/chatbatch/chatbatch/examples/existingchat/chat"
	"github.com/chatbatch/chatbatch/examples/existingchat/internal/pgtest"
	"github.com/chatbatch/chatbatch/internal/faultproxy"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary builds this command once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "existingchat-test-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "existingchat")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out.String())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// cluster is the services one multi-node test shares: a schema, a queue
// and a bus channel of its own.
type cluster struct {
	t     *testing.T
	dsn   string // the schema's database URL
	redis string // host:port
	queue string
	bus   string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the multi-node test runs processes for a minute or two")
	}
	rd := os.Getenv(redisEnv)
	if rd == "" {
		pgtest.Skip(t, "set %s=host:port to run the multi-node test on Redis", redisEnv)
	}
	dsn, schema := pgtest.NewSchema(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema) // pgx sends it as a run-time parameter
	q.Set("pool_max_conns", "8")
	u.RawQuery = q.Encode()
	var b [5]byte
	rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	c := &cluster{t: t, dsn: u.String(), redis: rd, queue: "existingchat-multinode-" + suffix, bus: "existingchat-multinode-" + suffix}
	binary(t)
	return c
}

// proc is one process of the cluster.
type proc struct {
	name   string
	args   []string
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	url    string // API nodes: http://127.0.0.1:port
	addr   string
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

var listening = regexp.MustCompile(`msg="existingchat listening" addr=(\S+)`)

// start runs a process: "api" on addr (127.0.0.1:0 for any port) or
// "worker", with the database at dsn ("" for the cluster's).
func (c *cluster) start(name, role, addr, dsn string) *proc {
	t := c.t
	t.Helper()
	args := []string{"-redis", c.redis, "-queue", c.queue, "-bus", c.bus}
	if role == "api" {
		args = append(args, "-worker=false", "-addr", addr)
	} else {
		args = append(args, "-api=false")
	}
	p := &proc{name: name, args: args, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary(t), args...)
	p.cmd.Env = append(os.Environ(), "DATABASE_URL="+cmpOr(dsn, c.dsn), "SESSION_SECRET=multinode-secret", "ADMIN_KEY="+adminKey)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.exit = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.stop(); p.exit != 0 {
			t.Errorf("%s exited with %d:\n%s", p.name, p.exit, p.stderr)
		}
	})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-p.done:
			t.Fatalf("%s exited with %d before it was ready:\n%s", name, p.exit, p.stderr)
		default:
		}
		out := p.stderr.String()
		if m := listening.FindStringSubmatch(out); role == "api" && m != nil {
			p.addr, p.url = m[1], "http://"+m[1]
			return p
		}
		if role != "api" && strings.Contains(out, "batch worker started") {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 60 s:\n%s", name, out)
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// stop ends p with SIGTERM and waits for it.
func (p *proc) stop() {
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
	}
}

// kill ends p with SIGKILL.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.exit = 0 // killed on purpose
}

// client is a websocket client of one node, keeping every event.
type client struct {
	name   string
	mu     sync.Mutex
	events []chat.Event
	ready  chan struct{}
	closed chan struct{}
}

// connect dials node as token's account and returns once the node's hub
// has registered the connection (its "ready" event).
func connect(t *testing.T, name string, node *proc, token string) *client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(node.url, "http")+"/api/v1/ws", &websocket.DialOptions{
		Subprotocols: []string{chat.WebSocketProtocol},
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
	})
	if err != nil {
		cancel()
		t.Fatalf("%s: %v", name, err)
	}
	c := &client{name: name, ready: make(chan struct{}), closed: make(chan struct{})}
	t.Cleanup(func() { cancel(); conn.CloseNow(); <-c.closed })
	go func() {
		defer close(c.closed)
		for {
			_, b, err := conn.Read(ctx)
			if err != nil {
				return
			}
			var ev chat.Event
			if err := json.Unmarshal(b, &ev); err != nil {
				t.Errorf("%s: undecodable event %s", name, b)
				continue
			}
			if ev.Type == "ready" {
				close(c.ready)
				continue
			}
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
		}
	}()
	select {
	case <-c.ready:
	case <-c.closed:
		t.Fatalf("%s: the connection closed before it was ready", name)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no ready event", name)
	}
	return c
}

// counts returns how often c received each message (by external ID, or
// ID for a user's post) in events of type typ.
func (c *client) counts(typ string) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for _, ev := range c.events {
		if ev.Type == typ {
			out[cmpOr(ev.Message.ExternalID, ev.Message.ID)]++
		}
	}
	return out
}

// expectOnce waits until each client has every message of want[client]
// (events of type typ), then a while longer for copies, and checks that
// each got exactly those, each once.
func expectOnce(t *testing.T, typ string, want map[*client][]string, filter func(id string) bool) {
	t.Helper()
	has := func(c *client, ids []string) bool {
		got := c.counts(typ)
		for _, id := range ids {
			if got[id] == 0 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(60 * time.Second)
	for c, ids := range want {
		for !has(c, ids) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond) // a copy would come now
	for c, ids := range want {
		got := c.counts(typ)
		maps.DeleteFunc(got, func(id string, _ int) bool { return !filter(id) })
		wantSet := map[string]int{}
		for _, id := range ids {
			wantSet[id] = 1
		}
		if !maps.Equal(got, wantSet) {
			var extra, missing []string
			for id, n := range got {
				if n != wantSet[id] {
					extra = append(extra, fmt.Sprintf("%s×%d", id, n))
				}
			}
			for id := range wantSet {
				if got[id] == 0 {
					missing = append(missing, id)
				}
			}
			slices.Sort(extra)
			slices.Sort(missing)
			t.Errorf("%s: %s events: received %d distinct; wrong counts %v; missing %v", c.name, typ, len(got), extra, missing)
		}
	}
}

func TestMultiNode(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	a := cl.start("node A", "api", "127.0.0.1:0", "") // the first process migrates
	b := cl.start("node B", "api", "127.0.0.1:0", "")
	// The worker reaches PostgreSQL through a proxy that can slow it down,
	// so that it can be killed in the middle of a batch.
	pg, workerDSN := proxiedDSN(t, cl.dsn)
	w1 := cl.start("worker 1", "worker", "", workerDSN)
	ha, hb := &host{t: t, url: a.url}, &host{t: t, url: b.url}

	// Watch the bus: how often each message was published.
	rdb := redis.NewClient(&redis.Options{Addr: cl.redis})
	t.Cleanup(func() { rdb.Close() })
	published := watchBus(t, rdb, cl.bus)

	ha.account("system")
	tokens := map[string]string{}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		tokens[u], _ = ha.account(u)
	}
	// alice on both nodes; carol on A; bob and dave on B.
	aliceA := connect(t, "alice@A", a, tokens["alice"])
	aliceB := connect(t, "alice@B", b, tokens["alice"])
	bobB := connect(t, "bob@B", b, tokens["bob"])
	carolA := connect(t, "carol@A", a, tokens["carol"])
	daveB := connect(t, "dave@B", b, tokens["dave"])
	all := []*client{aliceA, aliceB, bobB, carolA, daveB}
	of := map[string][]*client{"alice": {aliceA, aliceB}, "bob": {bobB}, "carol": {carolA}, "dave": {daveB}}
	group := hb.must(201, "POST", "/api/v1/conversations", tokens["carol"], map[string]any{
		"kind": "group", "title": "everyone", "members": []string{"alice", "bob", "dave", "system"}})["id"].(string)

	// A user's post on node A reaches the members on both nodes, once.
	post := ha.must(201, "POST", "/api/v1/conversations/"+group+"/messages", tokens["carol"], map[string]string{"body": "hi all"})["id"].(string)
	want := map[*client][]string{}
	for _, c := range all {
		want[c] = []string{post}
	}
	expectOnce(t, "message.created", want, func(id string) bool { return id == post })

	// A batch to one-on-one rooms (system and each user) and to the group,
	// accepted by node A, sent by the worker process.
	var batchID string
	{
		out := ha.must(200, "POST", "/api/v1/messages/batch", "admin", `{"messageType":"text","message":"Hi $n$","sender":"system","paras":[`+
			`{"receiver":"alice","$n$":"Alice"},{"receiver":"bob","$n$":"Bob"},{"receiver":"carol","$n$":"Carol"},{"receiver":"dave","$n$":"Dave"},{"room":"`+group+`","$n$":"all"}]}`)
		batchID = out["result"].(map[string]any)["batchID"].(string)
		if st := hb.waitBatch(batchID, "admin"); st["status"] != "completed" || st["sent"].(float64) != 5 {
			t.Fatalf("batch %v", st)
		}
		want := map[*client][]string{}
		for i, u := range []string{"alice", "bob", "carol", "dave"} {
			for _, c := range of[u] {
				want[c] = []string{fmt.Sprintf("%s-%d", batchID, i), batchID + "-4"}
			}
		}
		inBatch := func(id string) bool { return strings.HasPrefix(id, batchID+"-") }
		expectOnce(t, "message.created", want, inBatch)

		// A recall through node B retracts every message on both nodes.
		hb.must(200, "POST", "/api/v1/messages/batch/"+batchID+"/recall", "admin", nil)
		expectOnce(t, "message.retracted", want, inBatch)
	}

	// SIGKILL of the worker in the middle of a batch: the chunks it had
	// delivered but not recorded are run again by the next worker and
	// published again with the same message IDs; each hub drops the copies.
	// 6,000 messages in 12 chunks to 204 receivers: the four connected
	// users and 200 who are not.
	{
		receivers := []string{"alice", "bob", "carol", "dave"}
		for i := range 200 {
			u := fmt.Sprintf("user%03d", i)
			ha.must(201, "POST", "/api/v1/accounts", "admin", map[string]string{"handle": u})
			receivers = append(receivers, u)
		}
		const n = 6000
		var paras []string
		for i := range n {
			paras = append(paras, fmt.Sprintf(`{"receiver":%q}`, receivers[i%len(receivers)]))
		}
		pg.SetLatency(10 * time.Millisecond)
		out := ha.must(200, "POST", "/api/v1/messages/batch", "admin", `{"messageType":"text","message":"sale","sender":"system","paras":[`+strings.Join(paras, ",")+`]}`)
		id := out["result"].(map[string]any)["batchID"].(string)
		worker := w1
		for round := range 2 {
			before := batchSent(ha, id)
			for deadline := time.Now().Add(90 * time.Second); batchSent(ha, id) == before; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("round %d: the worker made no progress", round+1)
				}
			}
			worker.kill(t)
			t.Logf("kill %d: %v of %d sent", round+1, batchSent(ha, id), n)
			worker = cl.start(fmt.Sprintf("worker %d", round+2), "worker", "", workerDSN)
		}
		pg.SetLatency(0)
		cl.start("worker 4", "worker", "", "")
		if st := ha.waitBatchFor(id, "admin", 3*time.Minute); st["status"] != "completed" || st["sent"].(float64) != n {
			t.Fatalf("batch %v", st)
		}
		want := map[*client][]string{}
		for i := range n {
			for _, c := range of[receivers[i%len(receivers)]] {
				want[c] = append(want[c], fmt.Sprintf("%s-%d", id, i))
			}
		}
		expectOnce(t, "message.created", want, func(m string) bool { return strings.HasPrefix(m, id+"-") })
		// The test is only worth something if a copy was published.
		var copies int
		for i := range n {
			if published(fmt.Sprintf("message.created %s", chatUUID(id, i))) > 1 && len(of[receivers[i%len(receivers)]]) > 0 {
				copies++
			}
		}
		t.Logf("the kills made %d messages to connected users be published more than once", copies)
		if copies == 0 {
			t.Errorf("no message was published twice: the kills came where nothing is redelivered, so the duplicate suppression was not tested")
		}
	}

	// Node B restarts: its clients are disconnected, miss a batch sent
	// meanwhile, reconnect and read it from the history; then receive live
	// again on the restarted node.
	{
		b.stop()
		if b.exit != 0 {
			t.Fatalf("node B exited with %d on SIGTERM:\n%s", b.exit, b.stderr)
		}
		for _, c := range []*client{aliceB, bobB, daveB} {
			select {
			case <-c.closed:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s still connected after node B stopped", c.name)
			}
		}
		out := ha.must(200, "POST", "/api/v1/messages/batch", "admin", `{"messageType":"text","message":"while B was down","sender":"system","paras":[{"receiver":"bob"},{"receiver":"dave"}]}`)
		missed := out["result"].(map[string]any)["batchID"].(string)
		ha.waitBatch(missed, "admin")
		b2 := cl.start("node B again", "api", b.addr, "")
		hb2 := &host{t: t, url: b2.url}
		bob2 := connect(t, "bob@B again", b2, tokens["bob"])
		dave2 := connect(t, "dave@B again", b2, tokens["dave"])
		// Connected (ready), the clients read the history: nothing missed.
		for i, u := range []string{"bob", "dave"} {
			if !inHistory(hb2, tokens[u], fmt.Sprintf("%s-%d", missed, i)) {
				t.Errorf("%s's history after the restart lacks %s-%d", u, missed, i)
			}
		}
		out = hb2.must(200, "POST", "/api/v1/messages/batch", "admin", `{"messageType":"text","message":"after","sender":"system","paras":[{"receiver":"bob"},{"receiver":"dave"},{"receiver":"alice"}]}`)
		after := out["result"].(map[string]any)["batchID"].(string)
		hb2.waitBatch(after, "admin")
		expectOnce(t, "message.created", map[*client][]string{bob2: {after + "-0"}, dave2: {after + "-1"}, aliceA: {after + "-2"}},
			func(m string) bool { return strings.HasPrefix(m, after+"-") || strings.HasPrefix(m, missed+"-") })
	}
}

// chatUUID is the chat server's message ID of chatbatch's message i of batch id.
func chatUUID(id string, i int) string {
	return batchwire.MessageUUID(fmt.Sprintf("%s-%d", id, i))
}

// watchBus subscribes to the bus and returns how often an event key has
// been published so far.
func watchBus(t *testing.T, rdb *redis.Client, channel string) func(key string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ps := rdb.Subscribe(ctx, channel)
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	counts := map[string]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ps.Channel() {
			var msg chat.BusMessage
			if err := json.Unmarshal([]byte(m.Payload), &msg); err != nil {
				t.Errorf("undecodable bus message: %v", err)
				continue
			}
			mu.Lock()
			for _, ev := range msg.Events {
				counts[ev.Key]++
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); ps.Close(); <-done })
	return func(key string) int {
		mu.Lock()
		defer mu.Unlock()
		return counts[key]
	}
}

func proxiedDSN(t *testing.T, dsn string) (*faultproxy.Proxy, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p, err := faultproxy.Start(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	u.Host = p.Addr()
	return p, u.String()
}

func batchSent(h *host, id string) float64 {
	return h.must(200, "GET", "/api/v1/messages/batch/"+id, "admin", nil)["result"].(map[string]any)["sent"].(float64)
}

// inHistory reports whether the direct conversation of token's account
// with system holds chatbatch's message ext.
func inHistory(h *host, token, ext string) bool {
	for _, c := range h.must(200, "GET", "/api/v1/conversations", token, nil)["conversations"].([]any) {
		conv := c.(map[string]any)
		if conv["kind"] != "direct" || !slices.Contains(toStrings(conv["members"]), "system") {
			continue
		}
		for _, m := range h.must(200, "GET", "/api/v1/conversations/"+conv["id"].(string)+"/messages?limit=100", token, nil)["messages"].([]any) {
			if m.(map[string]any)["externalId"] == ext {
				return true
			}
		}
	}
	return false
}
