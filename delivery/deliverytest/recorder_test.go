package deliverytest_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/delivery/deliverytest"
	"github.com/chatbatch/chatbatch/store"
)

// recorderHarness runs the suites against Recorder, which proves the
// suites themselves. Faults are scripted through the hooks.
type recorderHarness struct {
	r *deliverytest.Recorder

	mu       sync.Mutex
	failNext *bool
	calls    int
}

func newRecorderHarness(t *testing.T) *recorderHarness {
	h := &recorderHarness{r: deliverytest.NewRecorder()}
	h.r.DeliverHook = func(context.Context, []store.Message) error { return h.hook() }
	h.r.PushHook = func(context.Context, []delivery.Notification) error { return h.hook() }
	return h
}

func (h *recorderHarness) hook() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.failNext == nil {
		return nil
	}
	permanent := *h.failNext
	h.failNext = nil
	if permanent {
		return delivery.Permanent(errors.New("rejected"))
	}
	return errors.New("service unavailable")
}

func (h *recorderHarness) FailNext(permanent bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failNext = &permanent
}

func (h *recorderHarness) Calls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

func (h *recorderHarness) Deliverer() delivery.Deliverer { return h.r }
func (h *recorderHarness) Pusher() delivery.Pusher       { return h.r }

type deliveredView struct{ *recorderHarness }

func (v deliveredView) Received(context.Context) ([]store.Message, error) {
	return v.r.Messages(), nil
}

func (v deliveredView) Retracted(context.Context) ([]string, error) {
	var ids []string
	for _, m := range v.r.Retracted() {
		ids = append(ids, m.ID)
	}
	return ids, nil
}

type pushedView struct{ *recorderHarness }

func (v pushedView) Received(context.Context) ([]delivery.Notification, error) {
	return v.r.Notifications(), nil
}

func TestRecorderConformance(t *testing.T) {
	t.Run("Deliverer", func(t *testing.T) {
		deliverytest.RunDeliverer(t, func(t *testing.T) deliverytest.DelivererHarness {
			return deliveredView{newRecorderHarness(t)}
		})
	})
	t.Run("Pusher", func(t *testing.T) {
		deliverytest.RunPusher(t, func(t *testing.T) deliverytest.PusherHarness {
			return pushedView{newRecorderHarness(t)}
		})
	})
}

func TestRecorderPartialFailure(t *testing.T) {
	r := deliverytest.NewRecorder()
	r.DeliverHook = func(_ context.Context, msgs []store.Message) error {
		return &delivery.PartialError{Failed: map[int]error{1: delivery.Permanent(errors.New("room gone"))}}
	}
	msgs := []store.Message{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	err := r.Deliver(t.Context(), msgs)
	var pe *delivery.PartialError
	if !errors.As(err, &pe) || !pe.Permanent() {
		t.Fatalf("Deliver = %v, want the hook's permanent PartialError", err)
	}
	got := r.Messages()
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "c" {
		t.Errorf("recorded %+v, want a and c only", got)
	}
	errs := delivery.ItemErrors(err, 3)
	if errs[0] != nil || errs[1] == nil || errs[2] != nil {
		t.Errorf("ItemErrors = %v, want only index 1 failed", errs)
	}
}

func TestRecorderWaitMessages(t *testing.T) {
	r := deliverytest.NewRecorder()
	go func() {
		time.Sleep(20 * time.Millisecond)
		_ = r.Deliver(context.Background(), []store.Message{{ID: "x"}, {ID: "y"}})
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	got, err := r.WaitMessages(ctx, 2)
	if err != nil || len(got) != 2 {
		t.Fatalf("WaitMessages = %d messages, %v", len(got), err)
	}
	short, cancel2 := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel2()
	if _, err := r.WaitMessages(short, 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitMessages past its deadline = %v, want DeadlineExceeded", err)
	}
}
