package chatbatch_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
)

// Example embeds chatbatch the way a chat server does: the service on the
// host's storage, fan-out and queue, its handler on the host's mux, its
// worker beside it. It posts a templated batch and prints what the host's
// real-time fan-out receives. The block between the marks is the README's
// "Embed it".
func Example() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	// The queue's Redis; here an in-process one.
	redis, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer redis.Close()
	redisAddr := redis.Addr()

	// The host's users and rooms. A real host implements store.Directory
	// and store.Messages over its own tables, or uses adapters/bunstore.
	st := memstore.New(nil)
	if err := st.AddUsers(ctx, "my-app", "system", "user-a", "user-b"); err != nil {
		log.Fatal(err)
	}
	fanout := deliverytest.NewRecorder() // the host's websocket hub, in a real server

	// README "Embed it" begins.
	svc, err := batch.New(batch.Config{
		Store:     st,     // users, rooms, messages and the batch bookkeeping
		Deliverer: fanout, // your real-time fan-out: a delivery.Deliverer
		Authenticator: batch.NewStaticKeys(map[string]batch.Principal{
			"secret-key": {AppID: "my-app", Admin: true},
		}),
		Redis: asynq.RedisClientOpt{Addr: redisAddr}, // the queue
	})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	go svc.Run(ctx) // the worker: processes the queued chunks, sweeps for lost ones

	mux := http.NewServeMux()
	svc.Mount(mux) // POST /messages/batch, GET /messages/batch/{batchID}, …
	// README "Embed it" ends.

	server := httptest.NewServer(mux)
	defer server.Close()
	req, _ := http.NewRequest(http.MethodPost, server.URL+"/messages/batch", strings.NewReader(`{
		"message": "Hi $name$,您的訂單 $orderId$ 已出貨!",
		"messageType": "text",
		"sender": "system",
		"paras": [
			{"receiver": "user-a", "$name$": "Alice", "$orderId$": "ORD-001"},
			{"receiver": "user-b", "$name$": "Bob", "$orderId$": "ORD-002"}
		]
	}`))
	req.Header.Set("IM-API-KEY", "secret-key")
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	res.Body.Close()
	fmt.Println("POST /messages/batch:", res.Status)

	// The worker sends the batch asynchronously.
	for deadline := time.Now().Add(10 * time.Second); len(fanout.Messages()) < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	for _, m := range fanout.Messages() {
		fmt.Printf("%s -> %s: %s\n", m.Sender, m.Receiver, m.Text)
	}
	// Output:
	// POST /messages/batch: 200 OK
	// system -> user-a: Hi Alice,您的訂單 ORD-001 已出貨!
	// system -> user-b: Hi Bob,您的訂單 ORD-002 已出貨!
}
