package chat_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/chatbatch/chatbatch/examples/existingchat/chat"
	"github.com/chatbatch/chatbatch/examples/existingchat/internal/pgtest"
)

// TestRedisBusBreak: a hub on the Redis bus delivers what is published
// (its own publications included, once); when its subscription's
// connection is killed, it closes its websockets once subscribed again
// (the events published meanwhile are lost to it), and delivers again to
// the clients that reconnect.
func TestRedisBusBreak(t *testing.T) {
	addr := os.Getenv("CHATBATCH_TEST_REDIS")
	if addr == "" {
		pgtest.Skip(t, "set CHATBATCH_TEST_REDIS=host:port to run the bus test on Redis")
	}
	var b [5]byte
	rand.Read(b[:])
	name := "existingchat-bustest-" + hex.EncodeToString(b[:])
	// A client of its own, named, so that the test kills only its own
	// subscription on a Redis other tests share.
	rdb := redis.NewClient(&redis.Options{Addr: addr, ClientName: name})
	t.Cleanup(func() { rdb.Close() })
	watcher := chat.Account{ID: 7, Handle: "watcher"}
	hub := chat.NewHub(func(ctx context.Context, ids []string) (map[string][]int64, error) {
		out := map[string][]int64{}
		for _, id := range ids {
			out[id] = []int64{watcher.ID}
		}
		return out, nil
	}, nil)
	hub.UseBus(chat.NewRedisBus(rdb, name))
	ctx, cancel := context.WithCancel(context.Background())
	done, err := chat.NewRedisBus(rdb, name).Subscribe(ctx, hub)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })
	sessions := &chat.Sessions{Secret: []byte("bus test secret")}
	ts := httptest.NewServer(chat.NewServer(nil, &chat.Auth{Sessions: sessions}, hub, nil))
	t.Cleanup(ts.Close)

	// connect returns a channel of the connection's events, closed when
	// the connection is, after its ready event.
	connect := func() <-chan chat.Event {
		t.Helper()
		conn, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(ts.URL, "http")+"/api/v1/ws", &websocket.DialOptions{
			Subprotocols: []string{chat.WebSocketProtocol, "bearer." + sessions.Issue(watcher)},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.CloseNow() })
		evs := make(chan chat.Event, 16)
		go func() {
			defer close(evs)
			for {
				_, b, err := conn.Read(context.Background())
				if err != nil {
					return
				}
				var ev chat.Event
				if json.Unmarshal(b, &ev) == nil {
					evs <- ev
				}
			}
		}()
		if ev := <-evs; ev.Type != "ready" {
			t.Fatalf("first event %+v, want ready", ev)
		}
		return evs
	}
	publish := func(id string) {
		t.Helper()
		if err := hub.Publish(t.Context(), []chat.RoomEvent{{ConversationID: "c1", Event: chat.Event{Type: "message.created", Message: chat.Message{ID: id, Body: id}}}}); err != nil {
			t.Fatal(err)
		}
	}
	next := func(evs <-chan chat.Event) (chat.Event, bool) {
		select {
		case ev, ok := <-evs:
			return ev, ok
		case <-time.After(10 * time.Second):
			t.Fatal("no event for 10 s")
			return chat.Event{}, false
		}
	}

	evs := connect()
	publish("m1")
	publish("m1") // a publisher's retry: dropped
	publish("m2")
	for _, want := range []string{"m1", "m2"} {
		if ev, ok := next(evs); !ok || ev.Message.ID != want {
			t.Fatalf("got %+v (open %v), want %s", ev, ok, want)
		}
	}

	// Kill the subscription's connection (only ours: by its name).
	list, err := rdb.ClientList(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " name="+name+" ") && strings.Contains(line, "sub=1") {
			id, _, _ := strings.Cut(strings.TrimPrefix(line, "id="), " ")
			if err := rdb.Do(t.Context(), "CLIENT", "KILL", "ID", id).Err(); err != nil {
				t.Fatal(err)
			}
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d subscriptions named %s, want 1:\n%s", killed, name, list)
	}
	// The hub closes the websocket once it has subscribed again.
	for {
		if _, ok := next(evs); !ok {
			break
		}
	}
	evs = connect()
	publish("m3")
	if ev, ok := next(evs); !ok || ev.Message.ID != "m3" {
		t.Fatalf("after the reconnect got %+v (open %v), want m3", ev, ok)
	}
}
