// Package delivery defines how chatbatch hands finished messages back to
// the host: [Deliverer] for the host's real-time fan-out (websocket, SSE,
// a pub/sub bus) and [Pusher] for its push-notification provider.
//
// Both are called by the batch processor once per chunk, with every
// message or notification of the chunk in one call. Delivery is
// at-least-once: after a crash or a retried chunk the same message may be
// delivered again, always with the same [store.Message.ID] and
// [Notification.MessageID], so the host can drop duplicates.
//
// Implementations report failures with errors: a transient failure (the
// service is down, a timeout) as any error, after which the chunk is
// retried later (a chunk whose messages were delivered and whose push
// failed is checkpointed, and its retry only pushes what is left); a
// failure that will never succeed as an error wrapping [ErrPermanent] (see
// [Permanent]), after which the recipients are recorded as failed and not
// retried. A [*PartialError] reports failures of some items only.
//
// # The seams and what chatbatch does without them
//
// The host implements these over its own fan-out and push provider
// (or uses an adapter: redispub, webhook, fcm, ratelimit). What package
// batch does without each, and the conformance suite (package
// deliverytest) that covers it:
//
//	interface   where                         without it                                conformance
//	Deliverer   batch.Config.Deliverer        required; Discard delivers nothing        RunDeliverer
//	                                          (clients then read the store)
//	Pusher      batch.Config.Pusher           "push": true is accepted and no           RunPusher
//	                                          notification is sent
//	Retractor   optional, on the Deliverer    POST /messages/batch/{id}/recall          RunDeliverer/Retract,
//	                                          answers 501                               with a RetractHarness
//
// Deliverer, Pusher and Retractor are covered by semantic versioning: a
// method is never added to them; a new capability comes as a new optional
// interface.
package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/chatbatch/chatbatch/store"
)

// Deliverer hands stored messages to the host's real-time fan-out.
type Deliverer interface {
	// Deliver delivers msgs, which are already stored. It must be safe for
	// concurrent use, must not retry (return the error; the processor
	// retries the chunk), must accept a message it has delivered before
	// (at-least-once; deduplicate on Message.ID if that matters), and must
	// not keep msgs after it returns. An empty msgs is a no-op. It should
	// return promptly with an error wrapping ctx.Err() once ctx is done.
	Deliver(ctx context.Context, msgs []store.Message) error
}

// Retractor is implemented by Deliverers that can tell clients that
// delivered messages were taken back (a recall: POST
// /messages/batch/{batchID}/recall). Without it a recall answers 501.
type Retractor interface {
	// Retract tells the clients that msgs are recalled: they should
	// remove them. Each message carries what routes it as its delivery
	// did — ID, AppID, RoomID, Sender, Receiver (one-on-one messages),
	// BatchID, Index — but not its text, extra or fields. The contract is
	// Deliver's: safe for concurrent use, no retries, at-least-once
	// (a retraction may come twice, or for a message a client never got),
	// msgs not kept, empty is a no-op.
	Retract(ctx context.Context, msgs []store.Message) error
}

// Pusher sends push notifications through the host's provider.
type Pusher interface {
	// Push sends one notification per element of ns. The contract is the
	// one of Deliverer.Deliver: safe for concurrent use, no retries,
	// at-least-once with stable MessageIDs, ns not kept, empty is a no-op.
	Push(ctx context.Context, ns []Notification) error
}

// Notification is one push notification for one user.
type Notification struct {
	// AppID is the application of the message.
	AppID string `json:"appID"`
	// UserID is the user to notify.
	UserID string `json:"userID"`
	// MessageID is the message the notification is about; stable across
	// retries, so it can serve as a collapse or deduplication key.
	MessageID string `json:"messageID"`
	// RoomID is the room the message was posted in.
	RoomID string `json:"roomID"`
	// Sender is the user the message is from.
	Sender string `json:"sender"`
	// Type is the message type, such as "text".
	Type string `json:"type"`
	// Text is the rendered message.
	Text string `json:"text"`
	// Badge reports whether the notification should carry the user's total
	// unread count. It is false when the request set skipTotalBadge, so a
	// pusher can skip that (often expensive) count.
	Badge bool `json:"badge"`
}

// ErrPermanent marks a failure that retrying will not fix, such as a
// rejected payload or a room that no longer exists. Recipients that fail
// with it are recorded as failed and not retried.
var ErrPermanent = errors.New("delivery: permanent failure")

// ErrUnregistered marks a push token or device that no longer exists: the
// provider said so and the host should prune it. It is permanent.
var ErrUnregistered = fmt.Errorf("delivery: unregistered: %w", ErrPermanent)

// Permanent wraps err so that errors.Is(result, ErrPermanent) is true while
// errors.Is and errors.As still see err. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() []error { return []error{e.err, ErrPermanent} }

// WithRetryAfter marks a transient err with how long the other side asked
// to wait before a retry (an HTTP Retry-After); RetryAfter reads it back.
// batch.RetryDelay, which Run uses, waits at least that long.
func WithRetryAfter(err error, d time.Duration) error {
	if err == nil || d <= 0 {
		return err
	}
	return &retryAfterError{err: err, d: d}
}

// RetryAfter returns the longest wait a failure in err's chain asked for,
// or 0.
func RetryAfter(err error) time.Duration {
	var d time.Duration
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if r, ok := e.(*retryAfterError); ok {
			d = max(d, r.d)
		}
		if pe, ok := e.(*PartialError); ok {
			for _, f := range pe.Failed {
				walk(f)
			}
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, w := range u.Unwrap() {
				walk(w)
			}
		}
	}
	walk(err)
	return d
}

type retryAfterError struct {
	err error
	d   time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// IsPermanent reports whether err wraps ErrPermanent.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// PartialError reports that some items of a Deliver or Push call failed
// and the others succeeded. Failed maps an index into the slice passed to
// the call to its error. A caller treats indexes whose error is permanent
// as failed recipients and retries the call if any error is not.
type PartialError struct {
	Failed map[int]error
}

// Error lists the failed indexes and the first few errors.
func (e *PartialError) Error() string {
	idx := slices.Sorted(maps.Keys(e.Failed))
	var b strings.Builder
	fmt.Fprintf(&b, "delivery: %d items failed", len(idx))
	for i, k := range idx {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(idx)-3)
			break
		}
		fmt.Fprintf(&b, "; [%d]: %v", k, e.Failed[k])
	}
	return b.String()
}

// Permanent reports whether every failed item failed permanently, so the
// call need not be retried.
func (e *PartialError) Permanent() bool {
	for _, err := range e.Failed {
		if !IsPermanent(err) {
			return false
		}
	}
	return true
}

// ItemErrors spreads the error of a Deliver or Push call of n items over
// those items: nil for every item on success, the PartialError's entries
// for a *PartialError, and err for every item otherwise.
func ItemErrors(err error, n int) []error {
	out := make([]error, n)
	if err == nil {
		return out
	}
	var pe *PartialError
	if errors.As(err, &pe) {
		for i, e := range pe.Failed {
			if i >= 0 && i < n {
				out[i] = e
			}
		}
		return out
	}
	for i := range out {
		out[i] = err
	}
	return out
}

// Discard is a Deliverer and Pusher that drops everything: for hosts whose
// clients fetch messages from the store and need no fan-out.
type Discard struct{}

// Deliver implements Deliverer.
func (Discard) Deliver(ctx context.Context, _ []store.Message) error { return ctx.Err() }

// Push implements Pusher.
func (Discard) Push(ctx context.Context, _ []Notification) error { return ctx.Err() }

// Retract implements Retractor.
func (Discard) Retract(ctx context.Context, _ []store.Message) error { return ctx.Err() }

// DelivererFunc adapts a function to Deliverer.
type DelivererFunc func(ctx context.Context, msgs []store.Message) error

// Deliver calls f.
func (f DelivererFunc) Deliver(ctx context.Context, msgs []store.Message) error { return f(ctx, msgs) }

// PusherFunc adapts a function to Pusher.
type PusherFunc func(ctx context.Context, ns []Notification) error

// Push calls f.
func (f PusherFunc) Push(ctx context.Context, ns []Notification) error { return f(ctx, ns) }

// MessageJSON is a store.Message as the delivery adapters put it on the
// wire (adapters/redispub, adapters/webhook): the same JSON everywhere.
// Extra and Fields are the stored JSON, byte-exact; CreatedAt is RFC 3339
// with nanoseconds, UTC.
type MessageJSON struct {
	AppID       string                     `json:"appID"`
	ID          string                     `json:"id"`
	Room        string                     `json:"room"`
	Sender      string                     `json:"sender"`
	Receiver    string                     `json:"receiver,omitempty"` // one-on-one messages only
	Message     string                     `json:"message"`            // the rendered text
	MessageType string                     `json:"messageType"`
	Extra       json.RawMessage            `json:"extra,omitempty"`
	Fields      map[string]json.RawMessage `json:"fields,omitempty"`
	BatchID     string                     `json:"batchID,omitempty"`
	Index       int                        `json:"index"`
	CreatedAt   time.Time                  `json:"createdAt"`
}

// NewMessageJSON is m on the wire.
func NewMessageJSON(m store.Message) MessageJSON {
	return MessageJSON{
		AppID: m.AppID, ID: m.ID, Room: m.RoomID, Sender: m.Sender, Receiver: m.Receiver, Message: m.Text,
		MessageType: m.Type, Extra: m.Extra, Fields: m.Fields, BatchID: m.BatchID, Index: m.Index, CreatedAt: m.CreatedAt.UTC(),
	}
}

// StoreMessage is NewMessageJSON backwards.
func (j MessageJSON) StoreMessage() store.Message {
	return store.Message{
		AppID: j.AppID, ID: j.ID, RoomID: j.Room, Sender: j.Sender, Receiver: j.Receiver, Text: j.Message,
		Type: j.MessageType, Extra: j.Extra, Fields: j.Fields, BatchID: j.BatchID, Index: j.Index, CreatedAt: j.CreatedAt,
	}
}
