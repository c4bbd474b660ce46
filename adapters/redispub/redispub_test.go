package redispub_test

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/adapters/redispub"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	"github.com/chatbatch/chatbatch/store"
)

// redisAddrs are the Redis servers to test on: an in-process one, and a
// real one when CHATBATCH_TEST_REDIS is set.
func redisAddrs(t *testing.T) map[string]func(t *testing.T) string {
	addrs := map[string]func(t *testing.T) string{
		"miniredis": func(t *testing.T) string { return miniredis.RunT(t).Addr() },
	}
	if a := os.Getenv("CHATBATCH_TEST_REDIS"); a != "" {
		addrs["redis"] = func(*testing.T) string { return strings.TrimPrefix(a, "redis://") }
	} else {
		t.Log("set CHATBATCH_TEST_REDIS=127.0.0.1:6379 to run these tests on a real Redis too")
	}
	return addrs
}

// listener collects the events published on channels matching pattern.
type listener struct {
	mu     sync.Mutex
	events []redispub.Event
	chans  []string
	err    error
}

func listen(t *testing.T, rdb *redis.Client, pattern string) *listener {
	t.Helper()
	l := &listener{}
	sub := rdb.PSubscribe(context.Background(), pattern)
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	go func() {
		for msg := range sub.Channel() {
			var ev redispub.Event
			err := json.Unmarshal([]byte(msg.Payload), &ev)
			l.mu.Lock()
			if err != nil && l.err == nil {
				l.err = err
			}
			l.events = append(l.events, ev)
			l.chans = append(l.chans, msg.Channel)
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *listener) snapshot() ([]redispub.Event, []string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events), slices.Clone(l.chans), l.err
}

type harness struct {
	d *redispub.Deliverer
	l *listener
}

func (h *harness) Deliverer() delivery.Deliverer { return h.d }

func (h *harness) Received(context.Context) ([]store.Message, error) {
	evs, _, err := h.l.snapshot()
	var out []store.Message
	for _, ev := range evs {
		if ev.Type == redispub.TypeMessage {
			out = append(out, ev.Message.StoreMessage())
		}
	}
	return out, err
}

func (h *harness) Retracted(context.Context) ([]string, error) {
	evs, _, err := h.l.snapshot()
	var out []string
	for _, ev := range evs {
		if ev.Type == redispub.TypeRetraction {
			out = append(out, ev.Message.ID)
		}
	}
	return out, err
}

func newClient(t *testing.T, addr string) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func TestConformance(t *testing.T) {
	for name, addr := range redisAddrs(t) {
		t.Run(name, func(t *testing.T) {
			deliverytest.RunDeliverer(t, func(t *testing.T) deliverytest.DelivererHarness {
				rdb := newClient(t, addr(t))
				prefix := "t" + strings.ReplaceAll(t.Name(), "/", "_") + time.Now().Format("150405.000000000")
				d, err := redispub.New(rdb, &redispub.Options{Channel: prefix + ":{app}:room:{room}"})
				if err != nil {
					t.Fatal(err)
				}
				return &harness{d: d, l: listen(t, rdb, prefix+":*")}
			})
		})
	}
}

// TestChannels: a room channel carries the members, a per-user channel
// gets one PUBLISH per user who should see the message (not the sender).
func TestChannels(t *testing.T) {
	for name, addr := range redisAddrs(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			rdb := newClient(t, addr(t))
			dir := memstore.New(nil)
			if err := dir.AddRoom(ctx, "app1", "room-1", "system", "user-a", "user-b"); err != nil {
				t.Fatal(err)
			}
			prefix := "c" + time.Now().Format("150405.000000000")
			msgs := []store.Message{
				{ID: "b-0", AppID: "app1", RoomID: "room-1", Sender: "system", Type: "text", Text: "to the room", CreatedAt: time.Now().UTC()},
				{ID: "b-1", AppID: "app1", RoomID: "dm-1", Receiver: "user-c", Sender: "system", Type: "text", Text: "to user-c", CreatedAt: time.Now().UTC()},
			}

			rooms := listen(t, rdb, prefix+":room:*")
			d, err := redispub.New(rdb, &redispub.Options{Channel: prefix + ":room:{room}", Members: dir})
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Deliver(ctx, msgs); err != nil {
				t.Fatal(err)
			}
			users := listen(t, rdb, prefix+":user:*")
			d, err = redispub.New(rdb, &redispub.Options{Channel: prefix + ":user:{user}", Members: dir})
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Deliver(ctx, msgs); err != nil {
				t.Fatal(err)
			}

			wait := func(l *listener, n int) ([]redispub.Event, []string) {
				deadline := time.Now().Add(10 * time.Second)
				for {
					evs, chans, err := l.snapshot()
					if err != nil {
						t.Fatal(err)
					}
					if len(evs) >= n || time.Now().After(deadline) {
						return evs, chans
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			evs, chans := wait(rooms, 2)
			if len(evs) != 2 || chans[0] != prefix+":room:room-1" || chans[1] != prefix+":room:dm-1" ||
				!slices.Equal(sorted(evs[0].Users), []string{"system", "user-a", "user-b"}) || len(evs[1].Users) != 0 {
				t.Errorf("room channels: %v %+v", chans, evs)
			}
			wait(users, 3)
			time.Sleep(50 * time.Millisecond) // and no more than 3
			evs, chans, _ = users.snapshot()
			got := map[string]string{}
			for i, ev := range evs {
				got[chans[i]] = ev.Message.ID
			}
			want := map[string]string{prefix + ":user:user-a": "b-0", prefix + ":user:user-b": "b-0", prefix + ":user:user-c": "b-1"}
			if len(got) != len(want) || len(evs) != 3 {
				t.Errorf("per-user channels got %v (%d events), want %v", got, len(evs), want)
			}
			for c, id := range want {
				if got[c] != id {
					t.Errorf("channel %s got %q, want %q", c, got[c], id)
				}
			}
		})
	}
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func TestNewRefuses(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	for _, c := range []struct {
		opts *redispub.Options
		want string
	}{
		{&redispub.Options{Channel: "x:{room}:{id}"}, "placeholder"},
		{&redispub.Options{Channel: "x:{user}"}, "needs Options.Members"},
	} {
		if _, err := redispub.New(rdb, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error saying %q", c.opts, err, c.want)
		}
	}
	if _, err := redispub.New(nil, nil); err == nil {
		t.Error("New(nil) succeeded")
	}
	d, err := redispub.New(rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.Deliver(ctx, []store.Message{{ID: "m", AppID: "a", RoomID: "r"}}); err == nil || delivery.IsPermanent(err) {
		t.Errorf("Deliver to an unreachable Redis = %v, want a transient error", err)
	}
}

// TestRetract: a recall's retraction goes out as an Event of
// TypeRetraction on the channels its message was delivered on.
func TestRetract(t *testing.T) {
	for name, addr := range redisAddrs(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			rdb := newClient(t, addr(t))
			dir := memstore.New(nil)
			if err := dir.AddRoom(ctx, "app1", "room-1", "system", "user-a"); err != nil {
				t.Fatal(err)
			}
			prefix := "r" + time.Now().Format("150405.000000000")
			l := listen(t, rdb, prefix+":user:*")
			d, err := redispub.New(rdb, &redispub.Options{Channel: prefix + ":user:{user}", Members: dir})
			if err != nil {
				t.Fatal(err)
			}
			msgs := []store.Message{
				{ID: "b-0", AppID: "app1", RoomID: "room-1", Sender: "system", Type: "text", Text: "hi", CreatedAt: time.Now().UTC()},
				{ID: "b-1", AppID: "app1", RoomID: "dm-1", Receiver: "user-c", Sender: "system", Type: "text", Text: "hi", CreatedAt: time.Now().UTC()},
			}
			if err := d.Deliver(ctx, msgs); err != nil {
				t.Fatal(err)
			}
			retract := []store.Message{{ID: "b-0", AppID: "app1", RoomID: "room-1", Sender: "system", BatchID: "b"}, {ID: "b-1", AppID: "app1", RoomID: "dm-1", Receiver: "user-c", Sender: "system", BatchID: "b", Index: 1}}
			if err := d.Retract(ctx, retract); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			var evs []redispub.Event
			var chans []string
			for len(evs) < 4 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				evs, chans, err = l.snapshot()
				if err != nil {
					t.Fatal(err)
				}
			}
			got := map[string]int{}
			for i, ev := range evs {
				got[ev.Type+" "+ev.Message.ID+" "+strings.TrimPrefix(chans[i], prefix)]++
				if ev.Type == redispub.TypeRetraction && ev.Message.Message != "" {
					t.Errorf("a retraction carries the text %q", ev.Message.Message)
				}
			}
			want := map[string]int{"message b-0 :user:user-a": 1, "message b-1 :user:user-c": 1, "retraction b-0 :user:user-a": 1, "retraction b-1 :user:user-c": 1}
			if len(got) != len(want) {
				t.Errorf("events %v, want %v", got, want)
			}
			for k, n := range want {
				if got[k] != n {
					t.Errorf("event %q seen %d times, want %d (all: %v)", k, got[k], n, got)
				}
			}
		})
	}
}
