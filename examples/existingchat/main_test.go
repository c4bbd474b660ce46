package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/examples/existingchat/chat"
	"github.com/chatbatch/chatbatch/examples/existingchat/internal/pgtest"
)

const redisEnv = "CHATBATCH_TEST_REDIS" // e.g. 127.0.0.1:6379

const adminKey = "admin-key-for-tests"

// host is the whole chat server with chatbatch embedded, on real
// PostgreSQL (a schema of its own) and Redis (a queue of its own), its
// worker running in the process.
type host struct {
	t   *testing.T
	url string
	app *app
}

func startHost(t *testing.T) *host {
	t.Helper()
	rd := os.Getenv(redisEnv)
	if rd == "" {
		pgtest.Skip(t, "set %s=host:port to run the end-to-end test on Redis", redisEnv)
	}
	db := pgtest.DB(t, 10)
	var b [5]byte
	rand.Read(b[:])
	queue := "existingchat-test-" + hex.EncodeToString(b[:])
	redis := asynq.RedisClientOpt{Addr: rd}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := newApp(t.Context(), db, config{AdminKey: adminKey, SessionSecret: "session-secret"}, redis, log,
		func(c *batch.Config) { c.Queue = queue })
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(a.srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.batch.Service.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		a.batch.Close()
		ts.Close()
		in := asynq.NewInspector(redis)
		in.DeleteQueue(queue, true)
		in.Close()
	})
	return &host{t: t, url: ts.URL, app: a}
}

// do sends a JSON request; auth is "admin", a session token, or "".
func (h *host) do(method, path, auth string, body any) (int, map[string]any) {
	h.t.Helper()
	var r io.Reader
	if body != nil {
		if s, ok := body.(string); ok {
			r = strings.NewReader(s)
		} else {
			b, _ := json.Marshal(body)
			r = bytes.NewReader(b)
		}
	}
	req, _ := http.NewRequestWithContext(h.t.Context(), method, h.url+path, r)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	switch auth {
	case "":
	case "admin":
		req.Header.Set(chat.AdminKeyHeader, adminKey)
	default:
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			h.t.Fatalf("%s %s: %d %s: not JSON", method, path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out
}

func (h *host) must(want int, method, path, auth string, body any) map[string]any {
	h.t.Helper()
	got, out := h.do(method, path, auth, body)
	if got != want {
		h.t.Fatalf("%s %s: %d %v, want %d", method, path, got, out, want)
	}
	return out
}

func (h *host) account(handle string) (string, chat.Account) {
	h.must(201, "POST", "/api/v1/accounts", "admin", map[string]string{"handle": handle})
	out := h.must(201, "POST", "/api/v1/sessions", "admin", map[string]string{"handle": handle})
	acc := out["account"].(map[string]any)
	return out["token"].(string), chat.Account{ID: int64(acc["id"].(float64)), Handle: handle}
}

// waitBatch polls the batch's status until no recipient is pending.
func (h *host) waitBatch(id, auth string) map[string]any {
	h.t.Helper()
	return h.waitBatchFor(id, auth, 30*time.Second)
}

func (h *host) waitBatchFor(id, auth string, limit time.Duration) map[string]any {
	h.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		res := h.must(200, "GET", "/api/v1/messages/batch/"+id, auth, nil)["result"].(map[string]any)
		if res["pending"].(float64) == 0 {
			return res
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("batch %s not finished: %v", id, res)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wsClient is a websocket client of the chat server that keeps every event.
type wsClient struct {
	mu     sync.Mutex
	events []chat.Event
}

func (h *host) connect(token string, account chat.Account, viaSubprotocol bool) *wsClient {
	h.t.Helper()
	opts := &websocket.DialOptions{Subprotocols: []string{chat.WebSocketProtocol}}
	if viaSubprotocol { // as a browser does
		opts.Subprotocols = append(opts.Subprotocols, "bearer."+token)
	} else {
		opts.HTTPHeader = http.Header{"Authorization": {"Bearer " + token}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.url, "http")+"/api/v1/ws", opts)
	if err != nil {
		h.t.Fatal(err)
	}
	c := &wsClient{}
	done := make(chan struct{})
	h.t.Cleanup(func() { cancel(); conn.CloseNow(); <-done })
	go func() {
		defer close(done)
		for {
			_, b, err := conn.Read(ctx)
			if err != nil {
				return
			}
			var ev chat.Event
			if json.Unmarshal(b, &ev) == nil {
				c.mu.Lock()
				c.events = append(c.events, ev)
				c.mu.Unlock()
			}
		}
	}()
	for deadline := time.Now().Add(5 * time.Second); h.app.srv.Hub.Connected(account.ID) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			h.t.Fatal("websocket not registered")
		}
	}
	return c
}

// messages returns the message.created events received so far.
func (c *wsClient) messages() []chat.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []chat.Message
	for _, ev := range c.events {
		if ev.Type == "message.created" {
			out = append(out, ev.Message)
		}
	}
	return out
}

// settled waits until c has at least n messages, then a little longer
// for any duplicate, and returns them.
func (c *wsClient) settled(t *testing.T, n int) []chat.Message {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(c.messages()) < n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	return c.messages()
}

func TestEndToEnd(t *testing.T) {
	h := startHost(t)
	aliceTok, alice := h.account("alice")
	bobTok, bob := h.account("bob")
	carolTok, _ := h.account("carol")
	h.account("system")
	aliceWS := h.connect(aliceTok, alice, false)
	bobWS := h.connect(bobTok, bob, true)

	// The seed's template example, through the chat server's prefix, with
	// the chat server's admin key.
	seed := `{"messageType":"text","message":"Hi $name$,您的訂單 $orderId$ 已出貨!","push":true,"sender":"system","paras":[` +
		`{"receiver":"alice","$name$":"Alice","$orderId$":"ORD-001"},{"receiver":"bob","$name$":"Bob","$orderId$":"ORD-002"}]}`
	out := h.must(200, "POST", "/api/v1/messages/batch", "admin", seed)
	batchID := out["result"].(map[string]any)["batchID"].(string)
	if st := h.waitBatch(batchID, "admin"); st["status"] != "completed" || st["sent"].(float64) != 2 {
		t.Fatalf("batch status %v", st)
	}

	// Each websocket got exactly its own rendered message, once.
	for _, c := range []struct {
		ws    *wsClient
		text  string
		index string
	}{{aliceWS, "Hi Alice,您的訂單 ORD-001 已出貨!", "-0"}, {bobWS, "Hi Bob,您的訂單 ORD-002 已出貨!", "-1"}} {
		got := c.ws.settled(t, 1)
		if len(got) != 1 || got[0].Body != c.text || got[0].Author != "system" || got[0].ExternalID != batchID+c.index {
			t.Errorf("websocket received %+v, want exactly one %q from system", got, c.text)
		}
	}

	// The chat server's own history shows it, in the direct conversation
	// of alice and system, with the ID the websocket showed.
	convs := h.must(200, "GET", "/api/v1/conversations", aliceTok, nil)["conversations"].([]any)
	if len(convs) != 1 {
		t.Fatalf("alice's conversations: %v", convs)
	}
	conv := convs[0].(map[string]any)
	if conv["kind"] != "direct" || !slices.Equal(toStrings(conv["members"]), []string{"alice", "system"}) {
		t.Errorf("alice's conversation %v, want the direct one with system", conv)
	}
	hist := h.must(200, "GET", "/api/v1/conversations/"+conv["id"].(string)+"/messages", aliceTok, nil)["messages"].([]any)
	if len(hist) != 1 {
		t.Fatalf("history %v", hist)
	}
	m := hist[0].(map[string]any)
	if m["body"] != "Hi Alice,您的訂單 ORD-001 已出貨!" || m["author"] != "system" || m["id"] != aliceWS.messages()[0].ID {
		t.Errorf("history shows %v", m)
	}

	// A user's session sends as the user; naming a sender is refused.
	code, out := h.do("POST", "/api/v1/messages/batch", aliceTok, seed)
	if code != 403 || errorCode(out) != "INSUFFICIENT_PERMISSIONS" {
		t.Errorf("a user naming a sender: %d %v, want 403 INSUFFICIENT_PERMISSIONS", code, out)
	}
	out = h.must(200, "POST", "/api/v1/messages/batch", aliceTok, `{"messageType":"text","message":"Hi $n$, lunch?","paras":[{"receiver":"bob","$n$":"Bob"}]}`)
	userBatch := out["result"].(map[string]any)["batchID"].(string)
	h.waitBatch(userBatch, aliceTok)
	if got := bobWS.settled(t, 2); len(got) != 2 || got[1].Author != "alice" || got[1].Body != "Hi Bob, lunch?" {
		t.Errorf("bob received %+v, want alice's message second", got)
	}
	if code, _ := h.do("GET", "/api/v1/messages/batch/"+batchID, aliceTok, nil); code != 404 {
		t.Errorf("alice sees the admin's batch: %d", code)
	}

	// Unknown handles: 404 CLIENT_NOT_FOUND naming them.
	code, out = h.do("POST", "/api/v1/messages/batch", "admin", `{"messageType":"text","message":"x","paras":[{"receiver":"ghost"},{"receiver":"alice"},{"receiver":"nobody"}]}`)
	if code != 404 || errorCode(out) != "CLIENT_NOT_FOUND" {
		t.Fatalf("unknown receivers: %d %v", code, out)
	}
	var named []string
	for _, d := range out["error"].(map[string]any)["details"].([]any) {
		named = append(named, d.(map[string]any)["value"].(string))
	}
	if !slices.Equal(named, []string{"ghost", "nobody"}) {
		t.Errorf("CLIENT_NOT_FOUND names %q, want [ghost nobody]", named)
	}

	// A group conversation the sender is not in: that recipient fails with
	// the reason, nothing is stored there, the other recipient is sent.
	group := h.must(201, "POST", "/api/v1/conversations", carolTok, map[string]any{"kind": "group", "title": "carol & bob", "members": []string{"bob"}})["id"].(string)
	out = h.must(200, "POST", "/api/v1/messages/batch", "admin", `{"messageType":"text","message":"Sale!","paras":[{"room":"`+group+`"},{"receiver":"alice"}]}`)
	groupBatch := out["result"].(map[string]any)["batchID"].(string)
	if st := h.waitBatch(groupBatch, "admin"); st["status"] != "completed_with_errors" || st["failed"].(float64) != 1 || st["sent"].(float64) != 1 {
		t.Errorf("status %v", st)
	}
	recips := h.must(200, "GET", "/api/v1/messages/batch/"+groupBatch+"/recipients", "admin", nil)["result"].(map[string]any)["recipients"].([]any)
	r0, r1 := recips[0].(map[string]any), recips[1].(map[string]any)
	if r0["status"] != "failed" || !strings.Contains(r0["error"].(string), `sender "system" is not a member of conversation `+group) || r1["status"] != "sent" {
		t.Errorf("recipients %v", recips)
	}
	if hist := h.must(200, "GET", "/api/v1/conversations/"+group+"/messages", bobTok, nil)["messages"].([]any); len(hist) != 0 {
		t.Errorf("the group holds %v", hist)
	}

	// The chat server's own endpoints keep their own format and rules...
	code, out = h.do("GET", "/api/v1/conversations/"+group+"/messages", aliceTok, nil)
	if code != 403 || hostCode(out) != "not_a_member" {
		t.Errorf("a non-member reading a group: %d %v", code, out)
	}
	if code, out = h.do("GET", "/api/v1/nothing-here", aliceTok, nil); code != 404 || hostCode(out) != "not_found" {
		t.Errorf("unknown endpoint: %d %v", code, out)
	}
	posted := h.must(201, "POST", "/api/v1/conversations/"+group+"/messages", bobTok, map[string]string{"body": "hi carol"})
	if got := bobWS.settled(t, 3); len(got) != 3 || got[2].ID != posted["id"] {
		t.Errorf("bob's own post did not reach his websocket: %+v", got)
	}
	// ...and the batch API its own, below the same prefix.
	if code, out = h.do("POST", "/api/v1/messages/batch", "", seed); code != 401 || out["RC"] != float64(401) {
		t.Errorf("batch API without credentials: %d %v", code, out)
	}
	if code, out = h.do("GET", "/api/v1/messages/batch/"+batchID+"/nope", "admin", nil); code != 404 || out["RC"] != float64(404) {
		t.Errorf("unknown path below the batch API: %d %v", code, out)
	}
	if code, out = h.do("POST", "/api/v1/messages/batch", "Bearer-garbage", seed); code != 401 || errorCode(out) != "UNAUTHORIZED" {
		t.Errorf("a forged session: %d %v", code, out)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, s := range v.([]any) {
		out = append(out, s.(string))
	}
	return out
}

// errorCode is the code of chatbatch's envelope, hostCode the chat server's.
func errorCode(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	c, _ := e["code"].(string)
	if _, ok := out["RC"]; !ok {
		return "(not chatbatch's envelope)"
	}
	return c
}

func hostCode(out map[string]any) string {
	if _, ok := out["RC"]; ok {
		return "(chatbatch's envelope)"
	}
	e, _ := out["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// TestReadRates: the chat server's own read receipts reach chatbatch
// through batchwire's read hook: a receiver reading its conversation is a
// read of its recipient (status read/readRate, recipients readAt and
// read=), a second receipt changes nothing, a message of the chat's own
// is not chatbatch's, and a group member's read counts once for the room.
func TestReadRates(t *testing.T) {
	h := startHost(t)
	aliceTok, _ := h.account("alice")
	h.account("bob")
	carolTok, _ := h.account("carol")
	systemTok, _ := h.account("system")
	group := h.must(201, "POST", "/api/v1/conversations", systemTok,
		map[string]any{"kind": "group", "title": "news", "members": []string{"bob", "carol"}})["id"].(string)

	out := h.must(200, "POST", "/api/v1/messages/batch", "admin", `{"messageType":"text","message":"Hi $name$","sender":"system","paras":[`+
		`{"receiver":"alice","$name$":"Alice"},{"receiver":"bob","$name$":"Bob"},{"room":"`+group+`","$name$":"all"}]}`)
	batchID := out["result"].(map[string]any)["batchID"].(string)
	if st := h.waitBatch(batchID, "admin"); st["sent"].(float64) != 3 || st["read"].(float64) != 0 {
		t.Fatalf("batch status %v, want 3 sent, 0 read", st)
	}

	// Alice's direct conversation with system: the batch's message, then
	// one of her own; she reads up to her own.
	conv := h.must(200, "GET", "/api/v1/conversations", aliceTok, nil)["conversations"].([]any)[0].(map[string]any)["id"].(string)
	own := h.must(201, "POST", "/api/v1/conversations/"+conv+"/messages", aliceTok, map[string]string{"body": "thanks"})["id"].(string)
	for range 2 { // the second receipt moves nothing
		h.must(200, "POST", "/api/v1/conversations/"+conv+"/read", aliceTok, map[string]string{"upTo": own})
	}
	// Carol reads the group: the room's recipient is read. Bob reads
	// nothing.
	hist := h.must(200, "GET", "/api/v1/conversations/"+group+"/messages", carolTok, nil)["messages"].([]any)
	h.must(200, "POST", "/api/v1/conversations/"+group+"/read", carolTok, map[string]string{"upTo": hist[0].(map[string]any)["id"].(string)})

	st := h.must(200, "GET", "/api/v1/messages/batch/"+batchID, "admin", nil)["result"].(map[string]any)
	if st["read"].(float64) != 2 || st["readRate"].(float64) < 0.666 || st["readRate"].(float64) > 0.667 {
		t.Errorf("status read %v, readRate %v; want 2 and 2/3", st["read"], st["readRate"])
	}
	read := h.must(200, "GET", "/api/v1/messages/batch/"+batchID+"/recipients?read=true", "admin", nil)["result"].(map[string]any)["recipients"].([]any)
	var who []string
	for _, r := range read {
		r := r.(map[string]any)
		if r["readAt"] == nil {
			t.Errorf("read=true lists %v without readAt", r)
		}
		receiver, _ := r["receiver"].(string)
		room, _ := r["room"].(string)
		who = append(who, cmpOr(receiver, room))
	}
	if !slices.Equal(who, []string{"alice", group}) {
		t.Errorf("read=true lists %v, want alice and the group", who)
	}
	unread := h.must(200, "GET", "/api/v1/messages/batch/"+batchID+"/recipients?read=false", "admin", nil)["result"].(map[string]any)["recipients"].([]any)
	if len(unread) != 1 || unread[0].(map[string]any)["receiver"] != "bob" {
		t.Errorf("read=false lists %v, want bob", unread)
	}
}
