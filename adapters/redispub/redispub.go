// Package redispub is a delivery.Deliverer that PUBLISHes every message on
// Redis: for hosts whose real-time processes (websocket or SSE hubs, in
// any language) subscribe to Redis channels, so that the chatbatch worker
// and the processes holding the users' connections need not be one.
//
// Each message is one PUBLISH of an [Event] in JSON (and a recall's
// retraction one of TypeRetraction, on the same channel), all of a call's
// PUBLISHes in one pipeline. The channel comes from a pattern
// (Options.Channel): per app, per room, or per user. Delivery is at least
// once (a retried chunk publishes again, with the same message IDs) and, as
// Redis pub/sub is, only to subscribers listening at that moment.
package redispub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/chatbatch/chatbatch/delivery"
	"github.com/chatbatch/chatbatch/store"
)

var _ delivery.Retractor = (*Deliverer)(nil)

// DefaultChannel is the channel pattern when Options.Channel is empty.
const DefaultChannel = "chatbatch:{app}:room:{room}"

// The types of an Event.
const (
	// TypeMessage is a delivered message.
	TypeMessage = "message"
	// TypeRetraction is a message taken back by a recall: clients remove
	// it. Its Message carries the routing fields and the ID, no text.
	TypeRetraction = "retraction"
)

// Event is the JSON of one PUBLISH.
type Event struct {
	// Type is TypeMessage or TypeRetraction.
	Type string `json:"type"`
	// Users are the users who should see the message: the room's members
	// (with Options.Members), or for a per-user channel the one user the
	// channel is for. Empty without Options.Members.
	Users []string `json:"users,omitempty"`
	// Message is the message as stored.
	Message delivery.MessageJSON `json:"message"`
}

// RoomMembers looks up the members of rooms; store.Directory has it.
type RoomMembers interface {
	RoomMembers(ctx context.Context, app string, roomIDs []string) (map[string][]string, error)
}

// Options configure a Deliverer.
type Options struct {
	// Channel is the channel pattern: {app}, {room} and {user} are replaced
	// by the message's app ID, room ID and a user ID. With {user} the
	// message is published once per user who should see it: the room's
	// members but the sender (Members is then required). Without
	// placeholders every message goes to one channel. Defaults to
	// DefaultChannel.
	Channel string
	// Members, when set, fills Event.Users with each room's members (one
	// look-up per call, for all rooms of the call). Required with {user}.
	Members RoomMembers
}

// Deliverer publishes messages on Redis. It is safe for concurrent use.
type Deliverer struct {
	rdb     redis.UniversalClient
	pattern string
	perUser bool
	members RoomMembers
}

// New returns a Deliverer on rdb, which the caller owns (and closes).
func New(rdb redis.UniversalClient, opts *Options) (*Deliverer, error) {
	if rdb == nil {
		return nil, errors.New("redispub: New: rdb is nil")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Channel == "" {
		o.Channel = DefaultChannel
	}
	rest := strings.NewReplacer("{app}", "", "{room}", "", "{user}", "").Replace(o.Channel)
	if strings.ContainsAny(rest, "{}") {
		return nil, fmt.Errorf("redispub: New: Options.Channel %q has a placeholder other than {app}, {room} and {user}", o.Channel)
	}
	d := &Deliverer{rdb: rdb, pattern: o.Channel, perUser: strings.Contains(o.Channel, "{user}"), members: o.Members}
	if d.perUser && d.members == nil {
		return nil, fmt.Errorf("redispub: New: Options.Channel %q has {user}, which needs Options.Members", o.Channel)
	}
	return d, nil
}

func (d *Deliverer) channel(m store.Message, user string) string {
	return strings.NewReplacer("{app}", m.AppID, "{room}", m.RoomID, "{user}", user).Replace(d.pattern)
}

// Deliver implements delivery.Deliverer: one PUBLISH per message (per user
// with a {user} channel), in one pipeline. A failure of the call (Redis
// unreachable) is transient; nothing is permanent.
func (d *Deliverer) Deliver(ctx context.Context, msgs []store.Message) error {
	return d.publish(ctx, TypeMessage, msgs)
}

// Retract implements delivery.Retractor: an Event of TypeRetraction on the
// channels the messages were delivered on, as Deliver does.
func (d *Deliverer) Retract(ctx context.Context, msgs []store.Message) error {
	return d.publish(ctx, TypeRetraction, msgs)
}

func (d *Deliverer) publish(ctx context.Context, typ string, msgs []store.Message) error {
	if len(msgs) == 0 {
		return ctx.Err()
	}
	var members map[string][]string
	if d.members != nil {
		var rooms []string
		seen := make(map[string]bool, len(msgs))
		for _, m := range msgs {
			if !seen[m.RoomID] {
				seen[m.RoomID] = true
				rooms = append(rooms, m.RoomID)
			}
		}
		var err error
		if members, err = d.members.RoomMembers(ctx, msgs[0].AppID, rooms); err != nil {
			return fmt.Errorf("redispub: room members: %w", err)
		}
	}
	pipe := d.rdb.Pipeline()
	for _, m := range msgs {
		users := members[m.RoomID]
		if !d.perUser {
			b, err := json.Marshal(Event{Type: typ, Users: users, Message: delivery.NewMessageJSON(m)})
			if err != nil {
				return fmt.Errorf("redispub: message %s: %w", m.ID, err)
			}
			pipe.Publish(ctx, d.channel(m, ""), b)
			continue
		}
		if m.Receiver != "" && !slices.Contains(users, m.Receiver) {
			users = append(slices.Clip(users), m.Receiver)
		}
		for _, u := range users {
			if u == m.Sender && m.Receiver != m.Sender {
				continue
			}
			b, err := json.Marshal(Event{Type: typ, Users: []string{u}, Message: delivery.NewMessageJSON(m)})
			if err != nil {
				return fmt.Errorf("redispub: message %s: %w", m.ID, err)
			}
			pipe.Publish(ctx, d.channel(m, u), b)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redispub: publish: %w", err)
	}
	return nil
}
