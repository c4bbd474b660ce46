package redispub_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/chatbatch/chatbatch/adapters/redispub"
	"github.com/chatbatch/chatbatch/store"
)

// A hub process subscribes to its rooms' channels; the chatbatch worker
// publishes each message as it is delivered.
func Example() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	sub := rdb.Subscribe(ctx, "chatbatch:app1:room:room-7")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		panic(err)
	}

	d, err := redispub.New(rdb, nil) // channel "chatbatch:{app}:room:{room}"
	if err != nil {
		panic(err)
	}
	// In a host this is batch.Config{Deliverer: d}.
	err = d.Deliver(ctx, []store.Message{{
		ID: "batch-20260410-abc-0", AppID: "app1", RoomID: "room-7", Sender: "system", Type: "text",
		Text: "Hi Alice", BatchID: "batch-20260410-abc", CreatedAt: time.Date(2026, 4, 10, 9, 0, 0, 0, time.UTC),
	}})
	if err != nil {
		panic(err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println(msg.Channel)
	fmt.Println(msg.Payload)
	// Output:
	// chatbatch:app1:room:room-7
	// {"type":"message","message":{"appID":"app1","id":"batch-20260410-abc-0","room":"room-7","sender":"system","message":"Hi Alice","messageType":"text","batchID":"batch-20260410-abc","index":0,"createdAt":"2026-04-10T09:00:00Z"}}
}
