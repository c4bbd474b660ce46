// Package deliverytest holds the conformance suites for implementations of
// delivery.Deliverer and delivery.Pusher, and [Recorder], a fake of both
// for tests.
//
// Every Deliverer and Pusher should pass [RunDeliverer] or [RunPusher]
// before it is used in production. The suite drives the implementation
// through a harness that also observes the host side (what a websocket
// hub, a bus or a push provider received), so it can check that payloads
// arrive byte-exact and that failures are reported, not hidden behind
// retries.
package deliverytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

// DelivererHarness is one Deliverer under test together with the host
// side it delivers to.
type DelivererHarness interface {
	// Deliverer returns the implementation under test.
	Deliverer() delivery.Deliverer
	// Received returns every message the host side has received so far,
	// in order of arrival, duplicates included.
	Received(ctx context.Context) ([]store.Message, error)
}

// PusherHarness is one Pusher under test together with the provider side
// it pushes to.
type PusherHarness interface {
	// Pusher returns the implementation under test.
	Pusher() delivery.Pusher
	// Received returns every notification the provider side has received
	// so far, in order of arrival, duplicates included.
	Received(ctx context.Context) ([]delivery.Notification, error)
}

// RetractHarness is implemented by DelivererHarnesses whose Deliverer is
// also a delivery.Retractor, so the suite can check retractions.
type RetractHarness interface {
	// Retracted returns the IDs of every retraction the host side has
	// received so far, in order of arrival, duplicates included.
	Retracted(ctx context.Context) ([]string, error)
}

// Faults is implemented by harnesses that can make the host side fail, so
// the suite can check how failures are reported.
type Faults interface {
	// FailNext makes the next call the host side receives fail: in a way
	// that must be reported as permanent when permanent is true (a 4xx, a
	// rejected payload), and as transient otherwise (a 5xx, a timeout).
	FailNext(permanent bool)
	// Calls returns how many calls the host side has received; a call the
	// implementation retried counts more than once.
	Calls() int
}

// harness is the item-type-independent view of both harnesses.
type harness[T any] struct {
	send     func(ctx context.Context, items []T) error
	received func(ctx context.Context) ([]T, error)
	faults   Faults
	sample   func(i int) T
	same     func(a, b T) bool
	id       func(T) string
}

// RunDeliverer runs the Deliverer cases against harnesses made by
// newHarness, one fresh harness per case.
func RunDeliverer(t *testing.T, newHarness func(t *testing.T) DelivererHarness) {
	run(t, func(t *testing.T) harness[store.Message] {
		h := newHarness(t)
		f, _ := h.(Faults)
		d := h.Deliverer()
		return harness[store.Message]{
			send: d.Deliver, received: h.Received, faults: f,
			sample: sampleMessage, same: sameMessage, id: func(m store.Message) string { return m.ID },
		}
	})
	runRetract(t, newHarness)
}

// runRetract checks a Deliverer that is a delivery.Retractor: a
// retraction reaches the host side, repeats and retractions of messages
// never delivered succeed, and an empty call is a no-op.
func runRetract(t *testing.T, newHarness func(t *testing.T) DelivererHarness) {
	h := newHarness(t)
	r, ok := h.Deliverer().(delivery.Retractor)
	if !ok {
		return
	}
	rh, ok := h.(RetractHarness)
	if !ok {
		t.Run("Retract", func(t *testing.T) {
			t.Skipf("the Deliverer is a delivery.Retractor but the harness has no Retracted method (deliverytest.RetractHarness)")
		})
		return
	}
	t.Run("Retract", func(t *testing.T) {
		ctx := t.Context()
		msgs := []store.Message{sampleMessage(100), sampleMessage(101)}
		if err := h.Deliverer().Deliver(ctx, msgs); err != nil {
			t.Fatalf("Deliver: %v", err)
		}
		gone := make([]store.Message, len(msgs))
		for i, m := range msgs {
			gone[i] = store.Message{ID: m.ID, AppID: m.AppID, RoomID: m.RoomID, Sender: m.Sender, Receiver: m.Receiver, BatchID: m.BatchID, Index: m.Index}
		}
		if err := r.Retract(ctx, nil); err != nil {
			t.Errorf("Retract(nil): %v", err)
		}
		for attempt := range 2 {
			if err := r.Retract(ctx, gone); err != nil {
				t.Fatalf("Retract, attempt %d: %v", attempt+1, err)
			}
		}
		never := sampleMessage(102)
		if err := r.Retract(ctx, []store.Message{{ID: never.ID, AppID: never.AppID, RoomID: never.RoomID, Sender: never.Sender}}); err != nil {
			t.Errorf("retracting a message never delivered: %v", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		var got []string
		for len(got) < 5 && time.Now().Before(deadline) {
			var err error
			if got, err = rh.Retracted(ctx); err != nil {
				t.Fatalf("Retracted: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for _, id := range []string{msgs[0].ID, msgs[1].ID, never.ID} {
			if !slices.Contains(got, id) {
				t.Errorf("the retraction of %s never arrived; got %v", id, got)
			}
		}
	})
}

// RunPusher runs the Pusher cases against harnesses made by newHarness,
// one fresh harness per case.
func RunPusher(t *testing.T, newHarness func(t *testing.T) PusherHarness) {
	run(t, func(t *testing.T) harness[delivery.Notification] {
		h := newHarness(t)
		f, _ := h.(Faults)
		p := h.Pusher()
		return harness[delivery.Notification]{
			send: p.Push, received: h.Received, faults: f,
			sample: sampleNotification, same: func(a, b delivery.Notification) bool { return a == b },
			id: func(n delivery.Notification) string { return n.MessageID + "/" + n.UserID },
		}
	})
}

func run[T any](t *testing.T, newHarness func(t *testing.T) harness[T]) {
	cases := []struct {
		name string
		fn   func(t *testing.T, h harness[T])
	}{
		{"ByteExact", testByteExact[T]},
		{"Empty", testEmpty[T]},
		{"Redelivery", testRedelivery[T]},
		{"Concurrent", testConcurrent[T]},
		{"CallerKeepsSlice", testCallerKeepsSlice[T]},
		{"ContextCanceled", testContextCanceled[T]},
		{"TransientFailure", testFailure[T](false)},
		{"PermanentFailure", testFailure[T](true)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, newHarness(t))
		})
	}
}

func items[T any](h harness[T], from, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = h.sample(from + i)
	}
	return out
}

func received[T any](t *testing.T, h harness[T]) []T {
	t.Helper()
	got, err := h.received(t.Context())
	if err != nil {
		t.Fatalf("reading what the host side received: %v", err)
	}
	return got
}

// waitReceived polls until the host side has at least n items; delivery
// to some hosts (a bus, a socket) is asynchronous.
func waitReceived[T any](t *testing.T, h harness[T], n int) []T {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := received(t, h)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testByteExact[T any](t *testing.T, h harness[T]) {
	want := items(h, 0, 3)
	if err := h.send(t.Context(), want); err != nil {
		t.Fatalf("call failed: %v", err)
	}
	got := waitReceived(t, h, len(want))
	if len(got) != len(want) {
		t.Fatalf("host side received %d items, want %d", len(got), len(want))
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			if h.same(g, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("item %s did not arrive byte-exact; received %+v", h.id(w), got)
		}
	}
}

func testEmpty[T any](t *testing.T, h harness[T]) {
	if err := h.send(t.Context(), nil); err != nil {
		t.Errorf("call with no items: %v", err)
	}
	if err := h.send(t.Context(), []T{}); err != nil {
		t.Errorf("call with an empty slice: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if got := received(t, h); len(got) != 0 {
		t.Errorf("empty calls delivered %d items", len(got))
	}
}

func testRedelivery[T any](t *testing.T, h harness[T]) {
	batch := items(h, 10, 2)
	for attempt := range 2 {
		if err := h.send(t.Context(), batch); err != nil {
			t.Fatalf("attempt %d: delivering the same items again must succeed (at-least-once): %v", attempt+1, err)
		}
	}
	got := waitReceived(t, h, 2)
	for _, w := range batch {
		if !slices.ContainsFunc(got, func(g T) bool { return h.id(g) == h.id(w) }) {
			t.Errorf("item %s never arrived", h.id(w))
		}
	}
}

func testConcurrent[T any](t *testing.T, h harness[T]) {
	const callers, per = 8, 5
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for c := range callers {
		wg.Go(func() { errs[c] = h.send(t.Context(), items(h, 100+c*per, per)) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent call: %v", err)
		}
	}
	got := waitReceived(t, h, callers*per)
	ids := map[string]bool{}
	for _, g := range got {
		ids[h.id(g)] = true
	}
	if len(ids) != callers*per {
		t.Errorf("%d concurrent callers sent %d distinct items; %d arrived", callers, callers*per, len(ids))
	}
}

func testCallerKeepsSlice[T any](t *testing.T, h harness[T]) {
	batch := items(h, 200, 2)
	want := slices.Clone(batch)
	if err := h.send(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	// The caller reuses its slice once the call returns.
	batch[0], batch[1] = h.sample(900), h.sample(901)
	waitReceived(t, h, 2)
	time.Sleep(50 * time.Millisecond) // let any late, wrongly shared write land
	got := received(t, h)
	if len(got) != 2 {
		t.Fatalf("host side received %d items, want 2", len(got))
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g T) bool { return h.same(g, w) }) {
			t.Errorf("after the caller reused its slice, item %s is not on the host side as sent; received %+v", h.id(w), got)
		}
	}
}

func testContextCanceled[T any](t *testing.T, h harness[T]) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	start := time.Now()
	err := h.send(ctx, items(h, 300, 1))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("call with a canceled context returned %v, want an error wrapping context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("call with a canceled context took %v", d)
	}
}

func testFailure[T any](permanent bool) func(t *testing.T, h harness[T]) {
	return func(t *testing.T, h harness[T]) {
		if h.faults == nil {
			t.Skip("the harness does not implement deliverytest.Faults")
		}
		before := h.faults.Calls()
		h.faults.FailNext(permanent)
		err := h.send(t.Context(), items(h, 400, 2))
		switch {
		case err == nil:
			t.Fatal("a failure on the host side was not reported")
		case permanent && !delivery.IsPermanent(err):
			t.Errorf("a permanent failure was reported as %v, which does not wrap delivery.ErrPermanent", err)
		case !permanent && delivery.IsPermanent(err):
			t.Errorf("a transient failure was reported as permanent (%v); the chunk would never be retried", err)
		}
		if calls := h.faults.Calls() - before; calls != 1 {
			t.Errorf("the host side saw %d calls for one failed call; implementations must not retry (the processor does)", calls)
		}
	}
}

// sampleMessage returns message i of a set whose text and extra exercise
// encodings: multi-byte UTF-8, emoji, quotes, backslashes, newlines.
func sampleMessage(i int) store.Message {
	return store.Message{
		ID: fmt.Sprintf("batch-20260410-abc123-%d", i), AppID: "app1", RoomID: fmt.Sprintf("room-%d", i%4),
		Receiver: fmt.Sprintf("user-%d", i), Sender: "system", Type: "text",
		Text:    fmt.Sprintf("Hi 用戶 %d,您的訂單 ORD-%03d 已出貨! 🚀 \"q\" \\ \n end", i, i),
		Extra:   json.RawMessage(fmt.Sprintf(`{"order":"ORD-%03d","tags":["新品","🎁"],"n":%d}`, i, i)),
		Fields:  map[string]json.RawMessage{"mentions": json.RawMessage(`["user-a"]`)},
		BatchID: "batch-20260410-abc123", Index: i,
		CreatedAt: time.Date(2026, 4, 10, 9, 30, 0, 123456789, time.UTC).Add(time.Duration(i) * time.Second),
	}
}

func sameMessage(a, b store.Message) bool {
	if !bytes.Equal(a.Extra, b.Extra) || !a.CreatedAt.Equal(b.CreatedAt) || len(a.Fields) != len(b.Fields) {
		return false
	}
	for k, v := range b.Fields {
		if !bytes.Equal(a.Fields[k], v) {
			return false
		}
	}
	a.Extra, b.Extra, a.Fields, b.Fields, a.CreatedAt, b.CreatedAt = nil, nil, nil, nil, time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

func sampleNotification(i int) delivery.Notification {
	return delivery.Notification{
		AppID: "app1", UserID: fmt.Sprintf("user-%d", i), MessageID: fmt.Sprintf("batch-20260410-abc123-%d", i),
		RoomID: fmt.Sprintf("room-%d", i%4), Sender: "system", Type: "text",
		Text: fmt.Sprintf("系統公告 %d 🚀 \"q\" \\", i), Badge: i%2 == 0,
	}
}
