package memstore_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/chatbatch/chatbatch/adapters/memstore"
	"github.com/chatbatch/chatbatch/batch"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	"github.com/chatbatch/chatbatch/store"
)

// memstore holds users, rooms, messages and batches in memory: the store
// of tests and demos. A batch is accepted over HTTP and its chunk is
// processed; the store then holds the message in the one-on-one room.
func Example() {
	ctx := context.Background()
	st := memstore.New(nil)
	_ = st.AddUsers(ctx, "app1", "system", "user-a")
	_ = st.AddRoom(ctx, "app1", "room-001", "system", "user-a")

	var tasks []string
	svc, err := batch.New(batch.Config{
		Store:         st,
		Deliverer:     deliverytest.NewRecorder(),
		Authenticator: batch.NewStaticKeys(map[string]batch.Principal{"key": {AppID: "app1", Admin: true}}),
		Enqueuer:      enqueuerFunc(func(id string) { tasks = append(tasks, id) }),
	})
	if err != nil {
		panic(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/messages/batch",
		strings.NewReader(`{"messageType":"text","message":"Hi $name$","paras":[{"receiver":"user-a","$name$":"Ann"}]}`))
	req.Header.Set("IM-API-KEY", "key")
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, req)
	fmt.Println(rec.Code, len(tasks), "task")

	// A worker would run the task; here the chunk is processed directly.
	batchID := strings.SplitN(tasks[0], ":", 2)[0]
	if err := svc.ProcessChunk(ctx, store.ChunkRef{AppID: "app1", BatchID: batchID}); err != nil {
		panic(err)
	}
	msgs, _ := st.RoomMessages(ctx, "app1", store.DirectRoomID("system", "user-a"), 10)
	fmt.Println(msgs[0].Text)
	// Output:
	// 200 1 task
	// Hi Ann
}

// enqueuerFunc records task IDs instead of queueing on Redis.
type enqueuerFunc func(id string)

func (f enqueuerFunc) EnqueueContext(_ context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	for _, o := range opts {
		if o.Type() == asynq.TaskIDOpt {
			f(o.Value().(string))
		}
	}
	return &asynq.TaskInfo{}, nil
}
