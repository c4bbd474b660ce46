package store

import (
	"context"
	"encoding/json"
	"time"
)

// Messages stores the messages a batch produces.
type Messages interface {
	// SaveMessages stores msgs in app. It is idempotent on Message.ID: a
	// message whose ID already exists in app is left unchanged and is not an
	// error, so a re-run chunk stores nothing twice. Either all new messages
	// are stored or, on error, the caller may call again with the same
	// slice. Every msgs[i].AppID equals app.
	SaveMessages(ctx context.Context, app string, msgs []Message) error
}

// Message is one message produced by a batch for one recipient.
type Message struct {
	// ID is deterministic (batch ID and recipient index), so a re-run
	// produces the same ID and hosts can deduplicate deliveries.
	ID string
	// AppID is the application the message belongs to.
	AppID string
	// RoomID is the room the message is posted in.
	RoomID string
	// Receiver is the recipient user for one-on-one sends; "" for room sends.
	Receiver string
	// Sender is the user ID the message is sent as.
	Sender string
	// Type is the request's messageType, such as "text".
	Type string
	// Text is the rendered message.
	Text string
	// Extra is the rendered extra JSON object, or nil when the request had none.
	Extra json.RawMessage
	// Fields holds the request's allow-listed top-level fields as raw JSON, or nil.
	Fields map[string]json.RawMessage
	// BatchID is the batch the message was produced by.
	BatchID string
	// Index is the recipient's position in the request's paras.
	Index int
	// CreatedAt is when the message was produced (UTC).
	CreatedAt time.Time
}

// MessageReader is implemented by Messages stores that can read stored
// messages back by ID. GET /messages/batch?batchID= (IMKit's older query
// for the messages of a batch) needs it; without it that query answers
// 501.
type MessageReader interface {
	// GetMessages returns the messages of app whose IDs are among ids, as
	// SaveMessages stored them, in any order. IDs that are not stored are
	// left out; that is not an error.
	GetMessages(ctx context.Context, app string, ids []string) ([]Message, error)
}

// MessageDeleter is implemented by Messages stores that can delete stored
// messages: what a recall does to the messages it takes back. Without it
// POST /messages/batch/{batchID}/recall answers 501.
type MessageDeleter interface {
	// DeleteMessages deletes the messages of app whose IDs are among ids.
	// IDs that are not stored are ignored, so a repeated call succeeds.
	DeleteMessages(ctx context.Context, app string, ids []string) error
}
