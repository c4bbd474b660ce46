package leakcheck

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"go.uber.org/goleak"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	"github.com/chatbatch/chatbatch/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestServiceStopsEverything starts a Service (New, Run), sends a batch
// through its handler until it completes, cancels Run and closes the
// Service: no goroutine of the Service, asynq or go-redis may be left.
func TestServiceStopsEverything(t *testing.T) {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		t.Fatal(err)
	}
	defer mr.Close()
	st := memstore.New(nil)
	ctx := context.Background()
	if err := st.AddUsers(ctx, "app", "system", "user-a"); err != nil {
		t.Fatal(err)
	}
	rec := deliverytest.NewRecorder()
	svc, err := batch.New(batch.Config{
		Store: st, Deliverer: rec,
		Authenticator: batch.NewStaticKeys(map[string]batch.Principal{"key": {AppID: "app", Admin: true}}),
		Redis:         asynq.RedisClientOpt{Addr: mr.Addr()},
		ServerConfig:  asynq.Config{ShutdownTimeout: time.Second},
		Lease:         300 * time.Millisecond,
		SweepInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()

	srv := httptest.NewServer(svc.Handler())
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/messages/batch", strings.NewReader(`{"message":"hi","messageType":"text","paras":[{"receiver":"user-a"}]}`))
	req.Header.Set("IM-API-KEY", "key")
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("POST: %v %v", res, err)
	}
	res.Body.Close()
	deadline := time.Now().Add(30 * time.Second)
	for len(rec.Messages()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the batch was not delivered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	room := store.DirectRoomID("system", "user-a")
	if msgs, _ := st.RoomMessages(ctx, "app", room, 0); len(msgs) != 1 {
		t.Fatalf("%d messages stored, want 1", len(msgs))
	}
	srv.Close()
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := svc.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
