package batch_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
)

// ExampleService_Mount mounts the API on a net/http ServeMux beside the
// host's own routes. Every answer, errors included, is the API's envelope.
func ExampleService_Mount() {
	svc, err := batch.New(batch.Config{
		Store:         memstore.New(nil),
		Deliverer:     delivery.Discard{},
		Authenticator: batch.NewStaticKeys(map[string]batch.Principal{"k": {AppID: "my-app"}}),
		Redis:         asynq.RedisClientOpt{Addr: "127.0.0.1:6379"}, // connects lazily; unused here
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	mux := http.NewServeMux()
	svc.Mount(mux) // POST /messages/batch, GET|DELETE /messages/batch/{batchID}, …
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

	for _, req := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "/messages/batch/batch-20260410-nope", nil),
		httptest.NewRequest(http.MethodPut, "/messages/batch", strings.NewReader("{}")),
	} {
		req.Header.Set("IM-API-KEY", "k")
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		fmt.Print(w.Code, " ", w.Body.String())
	}
	// Output:
	// 404 {"RC":404,"RM":"Not Found","error":{"code":"BATCH_NOT_FOUND","message":"batch \"batch-20260410-nope\" does not exist","details":[]}}
	// 405 {"RC":405,"RM":"Method Not Allowed","error":{"code":"METHOD_NOT_ALLOWED","message":"method PUT is not allowed here; use GET, HEAD, POST","details":[]}}
}

// ExampleService_Processor registers the chunk processor on a host's own
// asynq server instead of calling Run.
func ExampleService_Processor() {
	redis := asynq.RedisClientOpt{Addr: "127.0.0.1:6379"}
	svc, err := batch.New(batch.Config{
		Store:         memstore.New(nil),
		Deliverer:     delivery.Discard{},
		Authenticator: batch.NewStaticKeys(map[string]batch.Principal{"k": {AppID: "my-app"}}),
		Redis:         redis,
		Queue:         "chatbatch",
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := asynq.NewServeMux()
	mux.Handle(batch.TaskPrefix, svc.Processor()) // every "chatbatch:" task
	srv := asynq.NewServer(redis, asynq.Config{Queues: map[string]int{"chatbatch": 1, "default": 1}})
	if err := srv.Start(mux); err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()
	// Sweep now and then so that chunks whose task was lost are queued again.
	if _, err := svc.Sweep(context.Background()); err != nil {
		log.Print(err)
	}
}
