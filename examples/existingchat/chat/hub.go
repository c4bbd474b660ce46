package chat

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Event is what the hub sends over a websocket.
type Event struct {
	// Type is "message.created" or "message.retracted".
	Type    string  `json:"type"`
	Message Message `json:"message"`
}

// RoomEvent is an event for every connected member of a conversation.
type RoomEvent struct {
	ConversationID string
	Event          Event
}

// MembersFunc returns the member account IDs of each conversation that
// exists (DB.Members).
type MembersFunc func(ctx context.Context, conversationIDs []string) (map[string][]int64, error)

// Hub keeps the websocket connections of this process and pushes events
// to the connected members of a conversation.
type Hub struct {
	members MembersFunc
	log     *slog.Logger

	mu      sync.Mutex
	clients map[int64]map[*client]struct{}
}

type client struct {
	send   chan []byte
	cancel context.CancelFunc
}

// sendBuffer is how many events a connection may fall behind before it is
// dropped (the client reconnects and reads the history).
const sendBuffer = 256

// NewHub returns a hub that finds conversation members with members.
func NewHub(members MembersFunc, log *slog.Logger) *Hub {
	if log == nil {
		log = slog.Default()
	}
	return &Hub{members: members, log: log, clients: map[int64]map[*client]struct{}{}}
}

// Publish sends each event to the connected members of its conversation.
// It does not wait for the sockets: each connection has a buffer, and a
// connection that falls too far behind is closed. It fails only when the
// members cannot be looked up.
func (h *Hub) Publish(ctx context.Context, evs []RoomEvent) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(evs) == 0 {
		return nil
	}
	ids := make([]string, 0, len(evs))
	seen := map[string]bool{}
	for _, ev := range evs {
		if !seen[ev.ConversationID] {
			seen[ev.ConversationID] = true
			ids = append(ids, ev.ConversationID)
		}
	}
	members, err := h.members(ctx, ids)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range evs {
		b, err := json.Marshal(ev.Event)
		if err != nil {
			return err
		}
		for _, acc := range members[ev.ConversationID] {
			for c := range h.clients[acc] {
				select {
				case c.send <- b:
				default:
					h.log.Warn("chat: websocket client too slow; closing it", "account", acc)
					c.cancel()
					delete(h.clients[acc], c)
				}
			}
		}
	}
	return nil
}

// Connected returns how many websockets account has open here.
func (h *Hub) Connected(account int64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients[account])
}

// serve upgrades the request and streams account's events until the
// client goes away.
func (h *Hub) serve(w http.ResponseWriter, r *http.Request, account Account) {
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{WebSocketProtocol}})
	if err != nil {
		return // Accept answered the request
	}
	defer conn.CloseNow()
	ctx, cancel := context.WithCancel(conn.CloseRead(r.Context())) // clients only listen
	defer cancel()
	c := &client{send: make(chan []byte, sendBuffer), cancel: cancel}
	h.mu.Lock()
	if h.clients[account.ID] == nil {
		h.clients[account.ID] = map[*client]struct{}{}
	}
	h.clients[account.ID][c] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.clients[account.ID], c)
		if len(h.clients[account.ID]) == 0 {
			delete(h.clients, account.ID)
		}
		h.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			conn.Close(websocket.StatusGoingAway, "")
			return
		case b := <-c.send:
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			err := conn.Write(wctx, websocket.MessageText, b)
			wcancel()
			if err != nil {
				return
			}
		}
	}
}
