package batchwire_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	"github.com/chatbatch/chatbatch/examples/existingchat/batchwire"
	"github.com/chatbatch/chatbatch/examples/existingchat/chat"
	"github.com/chatbatch/chatbatch/store"
)

// The chat server's hub, as chatbatch's Deliverer, passes chatbatch's
// delivery suite: what the suite delivers is read back from a websocket
// client connected to the hub through the chat server's /api/v1/ws.
func TestDeliverer(t *testing.T) {
	deliverytest.RunDeliverer(t, func(t *testing.T) deliverytest.DelivererHarness { return newHubHarness(t) })
}

type hubHarness struct {
	hub *chat.Hub

	mu        sync.Mutex
	received  []store.Message
	retracted []string
}

var _ deliverytest.RetractHarness = (*hubHarness)(nil)

func newHubHarness(t *testing.T) *hubHarness {
	watcher := chat.Account{ID: 1, Handle: "watcher"}
	// Every room of the suite has the watcher as its member.
	hub := chat.NewHub(func(ctx context.Context, ids []string) (map[string][]int64, error) {
		out := map[string][]int64{}
		for _, id := range ids {
			out[id] = []int64{watcher.ID}
		}
		return out, ctx.Err()
	}, nil)
	sessions := &chat.Sessions{Secret: []byte("test secret")}
	srv := chat.NewServer(nil, &chat.Auth{Sessions: sessions}, hub, nil)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	h := &hubHarness{hub: hub}

	ctx, cancel := context.WithCancel(context.Background())
	conn, _, err := websocket.Dial(ctx, "ws"+ts.URL[len("http"):]+"/api/v1/ws", &websocket.DialOptions{
		Subprotocols: []string{chat.WebSocketProtocol, "bearer." + sessions.Issue(watcher)},
	})
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadLimit(1 << 20)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); conn.CloseNow(); <-done })
	go func() {
		defer close(done)
		for {
			_, b, err := conn.Read(ctx)
			if err != nil {
				return
			}
			var ev chat.Event
			if err := json.Unmarshal(b, &ev); err != nil {
				t.Errorf("undecodable event %s: %v", b, err)
				return
			}
			h.mu.Lock()
			switch ev.Type {
			case "message.created":
				h.received = append(h.received, batchwire.FromChat("app1", ev.Message))
			case "message.retracted":
				h.retracted = append(h.retracted, ev.Message.ExternalID)
			}
			h.mu.Unlock()
		}
	}()
	for deadline := time.Now().Add(5 * time.Second); hub.Connected(watcher.ID) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the websocket never registered with the hub")
		}
	}
	return h
}

func (h *hubHarness) Deliverer() delivery.Deliverer { return batchwire.Deliverer{Hub: h.hub} }

func (h *hubHarness) Received(context.Context) ([]store.Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]store.Message(nil), h.received...), nil
}

func (h *hubHarness) Retracted(context.Context) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.retracted...), nil
}
