package chatbatch_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
)

// taskList is an Enqueuer that keeps tasks in memory, so this example
// needs no Redis; a real host passes Config.Redis instead.
type taskList []*asynq.Task

func (l *taskList) EnqueueContext(_ context.Context, t *asynq.Task, _ ...asynq.Option) (*asynq.TaskInfo, error) {
	*l = append(*l, t)
	return &asynq.TaskInfo{}, nil
}

// Example mounts the handler, posts a templated batch and prints what the
// host's real-time fan-out receives.
func Example() {
	ctx := context.Background()

	// The host's users and rooms. A real host implements store.Directory
	// over its own tables, or uses adapters/bunstore.
	st := memstore.New(nil)
	if err := st.AddUsers(ctx, "my-app", "system", "user-a", "user-b"); err != nil {
		log.Fatal(err)
	}

	fanout := deliverytest.NewRecorder() // the host's websocket hub, in a real server
	var queue taskList
	svc, err := batch.New(batch.Config{
		Store:         st,
		Deliverer:     fanout,
		Authenticator: batch.NewStaticKeys(map[string]batch.Principal{"secret-key": {AppID: "my-app", Admin: true}}),
		Enqueuer:      &queue,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.Handle("/messages/batch", svc.Handler())
	mux.Handle("/messages/batch/", svc.Handler())
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

	// A worker runs each queued chunk through the Processor; with Redis,
	// svc.Run or the host's own asynq server does this.
	for _, task := range queue {
		if err := svc.Processor().ProcessTask(ctx, task); err != nil {
			log.Fatal(err)
		}
	}
	for _, m := range fanout.Messages() {
		fmt.Printf("%s -> %s: %s\n", m.Sender, m.Receiver, m.Text)
	}
	// Output:
	// POST /messages/batch: 200 OK
	// system -> user-a: Hi Alice,您的訂單 ORD-001 已出貨!
	// system -> user-b: Hi Bob,您的訂單 ORD-002 已出貨!
}
