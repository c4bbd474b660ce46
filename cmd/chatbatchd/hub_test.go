package main

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	"github.com/chatbatch/chatbatch/store"
)

// publisherHarness is chatbatchd's Deliverer (PUBLISH of each message on
// the app's channel) with a subscriber on that channel as the host side.
type publisherHarness struct {
	p   *publisher
	mu  sync.Mutex
	got []store.Message
	err error
}

func (h *publisherHarness) Deliverer() delivery.Deliverer { return h.p }

func (h *publisherHarness) Received(context.Context) ([]store.Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]store.Message(nil), h.got...), h.err
}

// TestPublisherConformance runs deliverytest against the publisher, on
// an in-process Redis and, with CHATBATCH_TEST_REDIS, on a real one.
// (The other delivery seam of chatbatchd, logPusher, writes log lines
// that on purpose carry no message text, so it cannot be byte-exact.)
func TestPublisherConformance(t *testing.T) {
	addrs := map[string]func(t *testing.T) string{
		"miniredis": func(t *testing.T) string { return miniredis.RunT(t).Addr() },
	}
	if a := os.Getenv("CHATBATCH_TEST_REDIS"); a != "" {
		addrs["redis"] = func(*testing.T) string { return a }
	}
	for name, addr := range addrs {
		t.Run(name, func(t *testing.T) {
			deliverytest.RunDeliverer(t, func(t *testing.T) deliverytest.DelivererHarness {
				rdb := redis.NewClient(&redis.Options{Addr: addr(t)})
				t.Cleanup(func() { rdb.Close() })
				channel := eventsChannel(unique("app"))
				h := &publisherHarness{p: &publisher{rdb: rdb, dir: memstore.New(nil), channel: channel}}
				sub := rdb.Subscribe(context.Background(), channel)
				if _, err := sub.Receive(context.Background()); err != nil { // the subscription is live
					t.Fatal(err)
				}
				t.Cleanup(func() { sub.Close() })
				go func() {
					for msg := range sub.Channel() {
						var ev event
						err := json.Unmarshal([]byte(msg.Payload), &ev)
						h.mu.Lock()
						if err != nil && h.err == nil {
							h.err = err
						}
						h.got = append(h.got, ev.Message.message())
						h.mu.Unlock()
					}
				}()
				return h
			})
		})
	}
}
