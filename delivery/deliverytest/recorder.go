package deliverytest

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

var (
	_ delivery.Deliverer = (*Recorder)(nil)
	_ delivery.Pusher    = (*Recorder)(nil)
	_ delivery.Retractor = (*Recorder)(nil)
)

// Recorder is a Deliverer and Pusher that keeps everything it is given, in
// order, for tests and examples. Hooks script failures. It is safe for
// concurrent use; the zero value is ready to use.
type Recorder struct {
	// DeliverHook, when set, runs at the start of every Deliver call. If it
	// returns an error the call fails with it: nothing is recorded for a
	// plain error, and every item not named in it for a *PartialError.
	DeliverHook func(ctx context.Context, msgs []store.Message) error
	// PushHook is DeliverHook for Push.
	PushHook func(ctx context.Context, ns []delivery.Notification) error
	// RetractHook is DeliverHook for Retract.
	RetractHook func(ctx context.Context, msgs []store.Message) error

	mu            sync.Mutex
	cond          *sync.Cond
	messages      []store.Message
	notifications []delivery.Notification
	retracted     []store.Message
	deliverCalls  int
	pushCalls     int
	retractCalls  int
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{} }

// Deliver implements delivery.Deliverer.
func (r *Recorder) Deliver(ctx context.Context, msgs []store.Message) error {
	return record(r, ctx, msgs, r.DeliverHook, &r.deliverCalls, &r.messages, copyMessage)
}

// Push implements delivery.Pusher.
func (r *Recorder) Push(ctx context.Context, ns []delivery.Notification) error {
	return record(r, ctx, ns, r.PushHook, &r.pushCalls, &r.notifications, func(n delivery.Notification) delivery.Notification { return n })
}

// Retract implements delivery.Retractor.
func (r *Recorder) Retract(ctx context.Context, msgs []store.Message) error {
	return record(r, ctx, msgs, r.RetractHook, &r.retractCalls, &r.retracted, copyMessage)
}

// Retracted returns copies of the retracted messages in order, duplicates
// included.
func (r *Recorder) Retracted() []store.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]store.Message, len(r.retracted))
	for i, m := range r.retracted {
		out[i] = copyMessage(m)
	}
	return out
}

func record[T any](r *Recorder, ctx context.Context, items []T, hook func(context.Context, []T) error, calls *int, into *[]T, clone func(T) T) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	*calls++
	r.mu.Unlock()
	var err error
	var failed map[int]error
	if hook != nil {
		if err = hook(ctx, items); err != nil {
			var pe *delivery.PartialError
			if !errors.As(err, &pe) {
				return err
			}
			failed = pe.Failed
		}
	}
	r.mu.Lock()
	for i, it := range items {
		if _, bad := failed[i]; !bad {
			*into = append(*into, clone(it))
		}
	}
	if r.cond != nil {
		r.cond.Broadcast()
	}
	r.mu.Unlock()
	return err
}

// Messages returns copies of the delivered messages in delivery order,
// duplicates included.
func (r *Recorder) Messages() []store.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]store.Message, len(r.messages))
	for i, m := range r.messages {
		out[i] = copyMessage(m)
	}
	return out
}

// Notifications returns the pushed notifications in order, duplicates included.
func (r *Recorder) Notifications() []delivery.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.notifications)
}

// DeliverCalls returns how many times Deliver was called.
func (r *Recorder) DeliverCalls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deliverCalls
}

// PushCalls returns how many times Push was called.
func (r *Recorder) PushCalls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pushCalls
}

// WaitMessages blocks until at least n messages have been delivered or ctx
// is done, and returns the delivered messages.
func (r *Recorder) WaitMessages(ctx context.Context, n int) ([]store.Message, error) {
	r.mu.Lock()
	if r.cond == nil {
		r.cond = sync.NewCond(&r.mu)
	}
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	for len(r.messages) < n && ctx.Err() == nil {
		r.cond.Wait()
	}
	r.mu.Unlock()
	msgs := r.Messages()
	if len(msgs) < n {
		return msgs, ctx.Err()
	}
	return msgs, nil
}

func copyMessage(m store.Message) store.Message {
	m.Extra = slices.Clone(m.Extra)
	m.Fields = maps.Clone(m.Fields)
	return m
}
