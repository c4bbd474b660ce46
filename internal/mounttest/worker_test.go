package mounttest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	bt "github.com/chatbatch/chatbatch/internal/batchtest"
	"github.com/chatbatch/chatbatch/internal/seed"
	"github.com/chatbatch/chatbatch/store"
)

// newService is docs/embedding.md's "Embed it": a Service over the
// host's store, fan-out and push, with one admin API key, on Redis.
func newService(st store.Store, hub delivery.Deliverer, pusher delivery.Pusher, apiKey string, redis asynq.RedisConnOpt) (*batch.Service, error) {
	return batch.New(batch.Config{
		Store:     st,     // your store.Store, or memstore / bunstore
		Deliverer: hub,    // your real-time fan-out (delivery.Deliverer)
		Pusher:    pusher, // optional: your push provider (delivery.Pusher)
		Authenticator: batch.NewStaticKeys(map[string]batch.Principal{
			apiKey: {AppID: "my-app", Admin: true},
		}),
		Redis: redis, // asynq.RedisClientOpt{Addr: "127.0.0.1:6379"}
	})
}

// startWorker is docs/embedding.md's "Processing on your own asynq
// server": the host's asynq server runs the batch tasks beside its own.
func startWorker(redis asynq.RedisConnOpt, svc *batch.Service) (*asynq.Server, error) {
	mux := asynq.NewServeMux()
	mux.Handle(batch.TaskPrefix, svc.Processor()) // routes every "chatbatch:" task
	srv := asynq.NewServer(redis, asynq.Config{
		Queues:            map[string]int{batch.DefaultQueue: 1}, // batch.Config.Queue
		TaskCheckInterval: 50 * time.Millisecond,                 // asynq's default is 1 s
	})
	return srv, srv.Start(mux)
}

// newHostData is a chat server's data for the worker tests: memstore
// with the seed's users, a Recorder as fan-out and push, Redis in-process.
func newHostData(t *testing.T) (*memstore.Store, *deliverytest.Recorder, asynq.RedisConnOpt) {
	t.Helper()
	st := memstore.New(nil)
	bt.Must(t, st.AddUsers(t.Context(), "my-app", "system", "user-a", "user-b"))
	return st, deliverytest.NewRecorder(), asynq.RedisClientOpt{Addr: miniredis.RunT(t).Addr()}
}

// sendTemplate posts the seed's template example through mounted (the
// host's router, at the root) and waits for the batch to complete.
func sendTemplate(t *testing.T, mounted http.Handler, key string) bt.BatchStatus {
	t.Helper()
	srv := httptest.NewServer(mounted)
	t.Cleanup(srv.Close)
	id := bt.Accepted(t, call(t, http.MethodPost, srv.URL+"/messages/batch", key, seed.Template)).BatchID
	var st bt.BatchStatus
	bt.WaitUntil(t, func() bool {
		st = decode[bt.BatchStatus](t, call(t, http.MethodGet, srv.URL+"/messages/batch/"+id, key, ""))
		return st.FinishedAt != nil
	})
	return st
}

// TestEmbeddedServiceRuns: the Service of "Embed it", run with Run on
// (in-process) Redis and mounted as chi at the root, sends a batch end to
// end.
func TestEmbeddedServiceRuns(t *testing.T) {
	t.Parallel()
	st, hub, redis := newHostData(t)
	svc, err := newService(st, hub, hub, "the-host-key", redis)
	bt.Must(t, err)
	t.Cleanup(func() { bt.Must(t, svc.Close()) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }() // the asynq worker and the sweeper, until ctx is canceled
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	mounted, err := chiAtRoot(svc)
	bt.Must(t, err)
	if b := sendTemplate(t, mounted, "the-host-key"); b.Status != "completed" || b.Sent != 2 {
		t.Errorf("batch %+v", b)
	}
	if n := len(hub.Messages()); n != 2 {
		t.Errorf("%d messages reached the fan-out, want 2", n)
	}
}

// TestHostsOwnAsynqServer: the Service's tasks run on the host's own
// asynq server (Processor registered at TaskPrefix), and Sweep runs
// beside it.
func TestHostsOwnAsynqServer(t *testing.T) {
	t.Parallel()
	st, hub, redis := newHostData(t)
	svc, err := newService(st, hub, hub, "the-host-key", redis)
	bt.Must(t, err)
	t.Cleanup(func() { bt.Must(t, svc.Close()) })
	srv, err := startWorker(redis, svc)
	bt.Must(t, err)
	t.Cleanup(srv.Shutdown)
	mounted, err := netHTTPAtRoot(svc)
	bt.Must(t, err)
	if b := sendTemplate(t, mounted, "the-host-key"); b.Status != "completed" || b.Sent != 2 {
		t.Errorf("batch %+v", b)
	}
	if n := len(hub.Messages()); n != 2 {
		t.Errorf("%d messages reached the fan-out, want 2", n)
	}
	if n, err := svc.Sweep(t.Context()); err != nil || n != 0 {
		t.Errorf("Sweep after the batch = %d, %v; want nothing to requeue", n, err)
	}
}
