package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatbatch/chatbatch/adapters/redispub"
)

// The live path: the worker's Deliverer (adapters/redispub) publishes each
// message on the app's Redis channel with the users who should see it;
// every API process subscribes and writes it to those users' open event
// streams. So the worker and the browsers need not share a process.

// eventsPattern is the redispub channel pattern of the live path.
const eventsPattern = "chatbatchd:{app}:messages"

func eventsChannel(app string) string { return strings.ReplaceAll(eventsPattern, "{app}", app) }

// hub keeps the open event streams of this process, by user.
type hub struct {
	mu      sync.Mutex
	streams map[string]map[chan []byte]struct{}
	closed  chan struct{}
	once    sync.Once
}

func newHub() *hub {
	return &hub{streams: map[string]map[chan []byte]struct{}{}, closed: make(chan struct{})}
}

func (h *hub) add(user string) chan []byte {
	c := make(chan []byte, 256)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams[user] == nil {
		h.streams[user] = map[chan []byte]struct{}{}
	}
	h.streams[user][c] = struct{}{}
	return c
}

func (h *hub) remove(user string, c chan []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.streams[user], c)
	if len(h.streams[user]) == 0 {
		delete(h.streams, user)
	}
}

// dispatch sends data to every stream of users. A stream that cannot keep
// up loses the event rather than blocking the others; the page reloads
// the room from GET /rooms/{roomID}/messages when it reconnects.
func (h *hub) dispatch(users []string, data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, u := range users {
		for c := range h.streams[u] {
			select {
			case c <- data:
			default:
			}
		}
	}
}

func (h *hub) close() { h.once.Do(func() { close(h.closed) }) }

// subscribe forwards the Redis channel to the hub until ctx is done,
// resubscribing after an error.
func (h *hub) subscribe(ctx context.Context, rdb redis.UniversalClient, channel string, log *slog.Logger) {
	for ctx.Err() == nil {
		sub := rdb.Subscribe(ctx, channel)
		if _, err := sub.Receive(ctx); err != nil {
			_ = sub.Close()
			if ctx.Err() == nil {
				log.Warn("events: subscribe failed; retrying", "err", err)
				time.Sleep(time.Second)
			}
			continue
		}
		ch := sub.Channel()
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case m, ok := <-ch:
				if !ok {
					break loop
				}
				var ev redispub.Event
				if err := json.Unmarshal([]byte(m.Payload), &ev); err != nil {
					continue
				}
				// The stream carries whole SSE frames: a message, or the
				// retraction of one by a recall.
				name := "message"
				if ev.Type == redispub.TypeRetraction {
					name = "retraction"
				}
				data, _ := json.Marshal(ev.Message)
				h.dispatch(ev.Users, []byte("event: "+name+"\ndata: "+string(data)+"\n\n"))
			}
		}
		_ = sub.Close()
	}
}

// events streams the messages of one user as Server-Sent Events.
func (s *server) events(w http.ResponseWriter, r *http.Request, _ string) {
	user := r.URL.Query().Get("user")
	if user == "" {
		writeErr(w, http.StatusBadRequest, "MISSING_PARAMETER", "user is required: GET /events?user=USER_ID")
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeErr(w, http.StatusInternalServerError, "INTERNAL_ERROR", "streaming is not supported")
		return
	}
	if !s.checkID(w, "user", user) {
		return
	}
	// The stream outlives -write-timeout: each write gets a deadline of
	// its own instead, so a client that stops reading is still cut off.
	rc := http.NewResponseController(w)
	extend := func() { _ = rc.SetWriteDeadline(time.Now().Add(s.o.writeTimeout)) }
	extend()
	c := s.hub.add(user)
	defer s.hub.remove(user, c)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	fmt.Fprintf(w, "event: ready\ndata: {\"user\":%q}\n\n", user)
	flusher.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.hub.closed:
			return
		case <-ping.C:
			extend()
			fmt.Fprint(w, ": ping\n\n")
		case frame := <-c:
			extend()
			_, _ = w.Write(frame)
		}
		flusher.Flush()
	}
}
