package chat

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bus carries the hub's events between the chat server's processes: with
// one set (Hub.UseBus), Hub.Publish sends each call's events on the bus
// instead of to its own clients, and every process that serves
// websockets feeds what the bus brings to Hub.Receive — its own
// publications included. A process that only publishes (a worker) needs
// no subscription.
type Bus interface {
	// Publish sends payload to every subscribed process.
	Publish(ctx context.Context, payload []byte) error
}

// RedisBus is a Bus on one Redis pub/sub channel: every process receives
// every event and delivers those for the accounts connected to it. Redis
// pub/sub delivers to the subscribers connected at that moment, at most
// once; see Subscribe for what a process does when its subscription
// breaks.
type RedisBus struct {
	rdb     redis.UniversalClient
	channel string
}

// NewRedisBus returns a bus on channel of rdb, which the caller owns.
func NewRedisBus(rdb redis.UniversalClient, channel string) *RedisBus {
	return &RedisBus{rdb: rdb, channel: channel}
}

// Publish implements Bus.
func (b *RedisBus) Publish(ctx context.Context, payload []byte) error {
	if err := b.rdb.Publish(ctx, b.channel, payload).Err(); err != nil {
		return fmt.Errorf("chat: publish on the bus: %w", err)
	}
	return nil
}

// Subscribe subscribes to the channel and returns once Redis has
// confirmed the subscription (so that nothing published after it returns
// is missed); until ctx ends it then feeds every payload to h.Receive.
// When the subscription breaks (Redis restarted, a network fault), the
// events published meanwhile are lost to this process: once subscribed
// again it closes every websocket of h (Hub.DropAll), and the clients
// reconnect and read what they missed from the history. The returned
// channel is closed when the loop has ended.
func (b *RedisBus) Subscribe(ctx context.Context, h *Hub) (<-chan struct{}, error) {
	ps := b.rdb.Subscribe(ctx, b.channel)
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		ps.Close()
		return nil, fmt.Errorf("chat: subscribe to the bus %q: %w", b.channel, err)
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { ps.Close() }) // Receive does not watch ctx
	go func() {
		defer close(done)
		defer func() {
			if stop() { // the loop ended before ctx: close here
				ps.Close()
			}
		}()
		broken := false
		for {
			msg, err := ps.Receive(ctx)
			if ctx.Err() != nil {
				return
			}
			switch m := msg.(type) {
			case *redis.Message:
				h.Receive(ctx, []byte(m.Payload))
			case *redis.Subscription:
				if broken { // subscribed again after a break
					broken = false
					h.log.Warn("chat: the bus was interrupted; closing every websocket so that clients read what they missed")
					h.DropAll()
				}
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				if !broken {
					h.log.Warn("chat: bus subscription broken; reconnecting", "err", err)
				}
				broken = true
				select { // go-redis reconnects on the next Receive
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
	}()
	return done, nil
}
