package batchwire

import (
	"context"
	"fmt"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/examples/existingchat/chat"
	"github.com/chatbatch/chatbatch/store"
)

// Deliverer is chatbatch's delivery.Deliverer (and delivery.Retractor)
// on the chat server's websocket hub: a batch message reaches the
// connected members of its conversation as the chat server's own
// "message.created" event, the same one a user's post makes; a recall
// sends "message.retracted".
//
// With Store set, a message whose sender is not a member of its
// conversation (SaveMessages did not store it: only members write in a
// conversation) is not delivered, and its recipient fails permanently
// with the reason.
type Deliverer struct {
	Hub   *chat.Hub
	Store *Store
}

var (
	_ delivery.Deliverer = Deliverer{}
	_ delivery.Retractor = Deliverer{}
)

// Deliver implements delivery.Deliverer.
func (d Deliverer) Deliver(ctx context.Context, msgs []store.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var refused map[int]bool
	if d.Store != nil && len(msgs) > 0 {
		var err error
		if refused, err = d.Store.NonMembers(ctx, msgs); err != nil {
			return err
		}
	}
	evs := make([]chat.RoomEvent, 0, len(msgs))
	failed := map[int]error{}
	for i, m := range msgs {
		if refused[i] {
			failed[i] = delivery.Permanent(fmt.Errorf("sender %q is not a member of conversation %s; the chat server stored nothing", m.Sender, m.RoomID))
			continue
		}
		evs = append(evs, chat.RoomEvent{ConversationID: m.RoomID, Event: chat.Event{Type: "message.created", Message: ChatMessage(m)}})
	}
	if err := d.Hub.Publish(ctx, evs); err != nil {
		return err
	}
	if len(failed) > 0 {
		return &delivery.PartialError{Failed: failed}
	}
	return nil
}

// Retract implements delivery.Retractor.
func (d Deliverer) Retract(ctx context.Context, msgs []store.Message) error {
	evs := make([]chat.RoomEvent, len(msgs))
	for i, m := range msgs {
		evs[i] = chat.RoomEvent{ConversationID: m.RoomID, Event: chat.Event{Type: "message.retracted", Message: chat.Message{
			ID: MessageUUID(m.ID), ConversationID: m.RoomID, Author: m.Sender, ExternalID: m.ID,
		}}}
	}
	return d.Hub.Publish(ctx, evs)
}
