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
	// Type is "message.created" or "message.retracted"; or "ready", the
	// first event of every connection, sent once the hub has registered
	// it: every event published after "ready" reaches the connection, so a
	// client that reads the history after it misses nothing.
	Type    string  `json:"type"`
	Message Message `json:"message,omitzero"`
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
// to the connected members of a conversation: directly, or through a Bus
// to the hubs of every process (UseBus).
//
// A hub sends an event with a message ID at most once per connection
// within DedupeWindow (and the last DedupeEntries such events): a
// publisher that delivers at least once — a chatbatch chunk re-run after
// its worker died between delivering and recording it — sends the same
// message, with the same ID, again, and the hub drops the copy. Clients
// still key messages by ID: a copy that comes later than that, or to a
// process that restarted meanwhile, is the same message.
type Hub struct {
	members MembersFunc
	log     *slog.Logger
	bus     Bus

	mu      sync.Mutex
	clients map[int64]map[*client]struct{}
	sent    recentKeys
}

type client struct {
	send   chan []byte
	cancel context.CancelFunc
}

var readyEvent, _ = json.Marshal(Event{Type: "ready"})

// sendBuffer is how many events a connection may fall behind before it is
// dropped (the client reconnects and reads the history).
const sendBuffer = 256

// The bounds of the hub's memory of the events it sent (see Hub).
const (
	DedupeWindow  = 15 * time.Minute
	DedupeEntries = 100_000
)

// NewHub returns a hub that finds conversation members with members.
func NewHub(members MembersFunc, log *slog.Logger) *Hub {
	if log == nil {
		log = slog.Default()
	}
	return &Hub{members: members, log: log, clients: map[int64]map[*client]struct{}{},
		sent: recentKeys{window: DedupeWindow, max: DedupeEntries, at: map[string]time.Time{}}}
}

// UseBus makes Publish send events on b instead of to this hub's own
// clients; what b brings back must be fed to Receive (RedisBus.Subscribe
// does). Call it before the hub is used.
func (h *Hub) UseBus(b Bus) { h.bus = b }

// BusEvent is one event as it travels on the bus: the accounts it is for
// (the conversation's members, looked up once by the publisher) and the
// event's JSON as the websocket sends it.
type BusEvent struct {
	Accounts []int64 `json:"accounts"`
	// Key identifies the event for the hub's duplicate suppression: its
	// type and message ID ("" for none).
	Key   string          `json:"key,omitempty"`
	Event json.RawMessage `json:"event"`
}

// BusMessage is the payload of one Publish on the bus.
type BusMessage struct {
	Events []BusEvent `json:"events"`
}

// Publish sends each event to the connected members of its conversation
// — on every process, with a bus. It does not wait for the sockets: each
// connection has a buffer, and a connection that falls too far behind is
// closed. It fails only when the members cannot be looked up or the bus
// refuses the events.
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
	msg := BusMessage{Events: make([]BusEvent, len(evs))}
	for i, ev := range evs {
		b, err := json.Marshal(ev.Event)
		if err != nil {
			return err
		}
		var key string
		if ev.Event.Message.ID != "" {
			key = ev.Event.Type + " " + ev.Event.Message.ID
		}
		msg.Events[i] = BusEvent{Accounts: members[ev.ConversationID], Key: key, Event: b}
	}
	if h.bus == nil {
		h.deliver(msg.Events)
		return nil
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	return h.bus.Publish(ctx, b)
}

// Receive delivers a payload of the bus (a BusMessage) to this hub's
// clients.
func (h *Hub) Receive(ctx context.Context, payload []byte) {
	var msg BusMessage
	if err := json.Unmarshal(payload, &msg); err != nil {
		h.log.WarnContext(ctx, "chat: undecodable event on the bus", "err", err)
		return
	}
	h.deliver(msg.Events)
}

func (h *Hub) deliver(evs []BusEvent) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range evs {
		if ev.Key != "" && !h.sent.add(ev.Key, now) {
			continue // sent already: a publisher's retry
		}
		for _, acc := range ev.Accounts {
			for c := range h.clients[acc] {
				select {
				case c.send <- ev.Event:
				default:
					h.log.Warn("chat: websocket client too slow; closing it", "account", acc)
					c.cancel()
					delete(h.clients[acc], c)
				}
			}
		}
	}
}

// DropAll closes every websocket of this hub (it stays usable): the
// clients reconnect — to this process or another — and read what they
// missed from the history. For a process shutting down, and for a bus
// that lost events.
func (h *Hub) DropAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for acc, cs := range h.clients {
		for c := range cs {
			c.cancel()
		}
		delete(h.clients, acc)
	}
}

// recentKeys remembers keys for a window, at most max of them.
type recentKeys struct {
	window time.Duration
	max    int
	at     map[string]time.Time
	order  []string // oldest first, from head
	head   int
}

// add records key and reports whether it was new.
func (r *recentKeys) add(key string, now time.Time) bool {
	for r.head < len(r.order) && now.Sub(r.at[r.order[r.head]]) >= r.window {
		r.forgetOldest()
	}
	if _, ok := r.at[key]; ok {
		return false
	}
	for len(r.at) >= r.max {
		r.forgetOldest()
	}
	if r.head > 1024 && r.head > len(r.order)/2 {
		r.order = append(r.order[:0:0], r.order[r.head:]...)
		r.head = 0
	}
	r.at[key] = now
	r.order = append(r.order, key)
	return true
}

func (r *recentKeys) forgetOldest() {
	delete(r.at, r.order[r.head])
	r.order[r.head] = ""
	r.head++
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
	c.send <- readyEvent // first, before any event published once it is registered
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
