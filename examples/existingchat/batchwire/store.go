package batchwire

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbatch/chatbatch/examples/existingchat/chat"
	"github.com/chatbatch/chatbatch/store"
)

// Store is chatbatch's store.Directory and store.Messages over the chat
// server's own tables:
//
//   - a user is an account, its ID the account's handle;
//   - a room is a conversation, its ID the conversation's UUID;
//   - the one-on-one room of two users is their direct conversation, found
//     or created by the chat server's rule (conversations.direct_key);
//   - a message is a chat_messages row: body is the text, author the
//     sender, external_id the chatbatch message ID ("<batchID>-<index>",
//     which makes saving idempotent), id a UUID derived from it
//     (MessageUUID), payload the rest (payloadJSON).
//
// The chat server serves one application: app must be Store's app, and
// every other app has no users, rooms or messages.
type Store struct {
	db  *chat.DB
	app string
}

// NewStore returns the Store of app on the chat server's database.
func NewStore(db *chat.DB, app string) *Store { return &Store{db: db, app: app} }

var (
	_ store.Directory          = (*Store)(nil)
	_ store.DirectRoomResolver = (*Store)(nil)
	_ store.Messages           = (*Store)(nil)
	_ store.MessageReader      = (*Store)(nil)
	_ store.MessageDeleter     = (*Store)(nil)
)

func (s *Store) other(app string) bool { return app != s.app }

// MissingUsers implements store.Directory.
func (s *Store) MissingUsers(ctx context.Context, app string, ids []string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	found := map[string]int64{}
	if !s.other(app) {
		var err error
		if found, err = s.db.AccountsByHandle(ctx, ids); err != nil {
			return nil, fmt.Errorf("batchwire: look up accounts: %w", err)
		}
	}
	return absent(ids, func(id string) bool { _, ok := found[id]; return ok }), nil
}

// absent returns the ids for which has is false, each once, in order.
func absent(ids []string, has func(string) bool) []string {
	out := []string{}
	seen := map[string]bool{}
	for _, id := range ids {
		if !has(id) && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func conversationIDs(ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if c, ok := chat.ParseConversationID(id); ok {
			out = append(out, c)
		}
	}
	return out
}

// MissingRooms implements store.Directory.
func (s *Store) MissingRooms(ctx context.Context, app string, ids []string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	found := map[string]bool{}
	if valid := conversationIDs(ids); len(valid) > 0 && !s.other(app) {
		rows, err := s.db.Pool.Query(ctx, `SELECT id::text FROM conversations WHERE id = ANY($1::uuid[])`, valid)
		if err != nil {
			return nil, fmt.Errorf("batchwire: look up conversations: %w", err)
		}
		var id string
		if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { found[id] = true; return nil }); err != nil {
			return nil, fmt.Errorf("batchwire: look up conversations: %w", err)
		}
	}
	return absent(ids, func(id string) bool { return found[id] }), nil
}

// RoomMembers implements store.Directory.
func (s *Store) RoomMembers(ctx context.Context, app string, ids []string) (map[string][]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	valid := conversationIDs(ids)
	if len(valid) == 0 || s.other(app) {
		return out, nil
	}
	rows, err := s.db.Pool.Query(ctx, `
		SELECT c.id::text, a.handle FROM conversations c
		LEFT JOIN conversation_members m ON m.conversation_id = c.id
		LEFT JOIN accounts a ON a.id = m.account_id
		WHERE c.id = ANY($1::uuid[])`, valid)
	if err != nil {
		return nil, fmt.Errorf("batchwire: conversation members: %w", err)
	}
	var id string
	var handle *string
	_, err = pgx.ForEachRow(rows, []any{&id, &handle}, func() error {
		if handle == nil {
			out[id] = []string{}
		} else {
			out[id] = append(out[id], *handle)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("batchwire: conversation members: %w", err)
	}
	return out, nil
}

// DirectRoom implements store.Directory with the chat server's own
// DirectConversation.
func (s *Store) DirectRoom(ctx context.Context, app, a, b string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if s.other(app) {
		return "", fmt.Errorf("batchwire: no accounts in app %q: %w", app, store.ErrNotFound)
	}
	ids, err := s.db.AccountsByHandle(ctx, []string{a, b})
	if err != nil {
		return "", fmt.Errorf("batchwire: look up accounts: %w", err)
	}
	ia, okA := ids[a]
	ib, okB := ids[b]
	if !okA || !okB {
		return "", fmt.Errorf("batchwire: direct conversation of %q and %q: %w", a, b, store.ErrNotFound)
	}
	conv, err := s.db.DirectConversation(ctx, ia, ib)
	if errors.Is(err, chat.ErrNotFound) { // an account was deleted meanwhile
		return "", fmt.Errorf("batchwire: direct conversation of %q and %q: %w", a, b, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("batchwire: direct conversation: %w", err)
	}
	return conv, nil
}

// DirectRooms implements store.DirectRoomResolver: one look-up of the
// accounts, one of the existing direct conversations, and, for the pairs
// that have none, one statement that creates them with their members
// (the chat server's direct_key rule, as DirectConversation applies it).
func (s *Store) DirectRooms(ctx context.Context, app, a string, bs []string) ([]store.DirectRoomResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]store.DirectRoomResult, len(bs))
	notFound := func(i int) {
		out[i] = store.DirectRoomResult{Err: fmt.Errorf("batchwire: direct conversation of %q and %q: %w", a, bs[i], store.ErrNotFound)}
	}
	if len(bs) == 0 {
		return out, nil
	}
	var ids map[string]int64
	if !s.other(app) {
		var err error
		if ids, err = s.db.AccountsByHandle(ctx, append([]string{a}, bs...)); err != nil {
			return nil, fmt.Errorf("batchwire: look up accounts: %w", err)
		}
	}
	ia, ok := ids[a]
	keyOf := make([]string, len(bs))
	type pair struct{ lo, hi int64 }
	pairs := map[string]pair{}
	for i, b := range bs {
		ib, okB := ids[b]
		if !ok || !okB {
			notFound(i)
			continue
		}
		k := chat.DirectKey(ia, ib)
		keyOf[i] = k
		pairs[k] = pair{min(ia, ib), max(ia, ib)}
	}
	if len(pairs) == 0 {
		return out, nil
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range pairs {
			if !yield(k) {
				return
			}
		}
	})
	rooms, err := s.directConversations(ctx, keys)
	if err != nil {
		return nil, err
	}
	var create []string
	for _, k := range keys {
		if _, ok := rooms[k]; !ok {
			create = append(create, k)
		}
	}
	if len(create) > 0 {
		los, his := make([]int64, len(create)), make([]int64, len(create))
		for i, k := range create {
			los[i], his[i] = pairs[k].lo, pairs[k].hi
		}
		// Sorted keys: concurrent callers take the unique index's locks in
		// one order. Members are inserted by the same statement, so nobody
		// sees a conversation without them.
		_, err := s.db.Pool.Exec(ctx, `
			WITH k AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS k(key, lo, hi)),
			conv AS (
				INSERT INTO conversations (kind, direct_key)
				SELECT 'direct', key FROM k ORDER BY key
				ON CONFLICT (direct_key) DO NOTHING
				RETURNING id, direct_key
			)
			INSERT INTO conversation_members (conversation_id, account_id)
			SELECT DISTINCT conv.id, m FROM conv JOIN k ON k.key = conv.direct_key, unnest(ARRAY[k.lo, k.hi]) AS m`,
			create, los, his)
		if err != nil {
			return nil, fmt.Errorf("batchwire: create direct conversations: %w", err)
		}
		made, err := s.directConversations(ctx, create)
		if err != nil {
			return nil, err
		}
		for k, id := range made {
			rooms[k] = id
		}
	}
	for i := range bs {
		if out[i].Err != nil {
			continue
		}
		if id, ok := rooms[keyOf[i]]; ok {
			out[i].Room = id
		} else { // an account was deleted between the look-ups
			notFound(i)
		}
	}
	return out, nil
}

func (s *Store) directConversations(ctx context.Context, keys []string) (map[string]string, error) {
	rows, err := s.db.Pool.Query(ctx, `SELECT direct_key, id::text FROM conversations WHERE direct_key = ANY($1::text[])`, keys)
	if err != nil {
		return nil, fmt.Errorf("batchwire: look up direct conversations: %w", err)
	}
	out := make(map[string]string, len(keys))
	var k, id string
	if _, err := pgx.ForEachRow(rows, []any{&k, &id}, func() error { out[k] = id; return nil }); err != nil {
		return nil, fmt.Errorf("batchwire: look up direct conversations: %w", err)
	}
	return out, nil
}

// messageNamespace derives chat_messages.id from a chatbatch message ID.
var messageNamespace = uuid.MustParse("3b0c4d5e-8f6a-4c1b-9d2e-7a8b9c0d1e2f")

// MessageUUID is the chat_messages.id of the chatbatch message id: the
// history and the websocket show the same ID for a message.
func MessageUUID(id string) string { return uuid.NewSHA1(messageNamespace, []byte(id)).String() }

// payload is what a chatbatch message keeps in chat_messages.payload.
// Extra and Fields are kept as the JSON text chatbatch rendered (jsonb
// would reorder their keys), so they come back byte for byte.
type payload struct {
	Source      string            `json:"source"` // "chatbatch"
	MessageType string            `json:"messageType"`
	Receiver    string            `json:"receiver,omitempty"`
	BatchID     string            `json:"batchId,omitempty"`
	Index       int               `json:"index"`
	Extra       *string           `json:"extra,omitempty"`
	Fields      map[string]string `json:"fields,omitempty"`
}

func payloadJSON(m store.Message) []byte {
	p := payload{Source: "chatbatch", MessageType: m.Type, Receiver: m.Receiver, BatchID: m.BatchID, Index: m.Index}
	if m.Extra != nil {
		e := string(m.Extra)
		p.Extra = &e
	}
	if len(m.Fields) > 0 {
		p.Fields = make(map[string]string, len(m.Fields))
		for k, v := range m.Fields {
			p.Fields[k] = string(v)
		}
	}
	b, _ := json.Marshal(p)
	return b
}

// ChatMessage is m as the chat server shows it.
func ChatMessage(m store.Message) chat.Message {
	return chat.Message{
		ID: MessageUUID(m.ID), ConversationID: m.RoomID, Author: m.Sender, Body: m.Text,
		Payload: payloadJSON(m), ExternalID: m.ID, CreatedAt: m.CreatedAt.UTC(),
	}
}

// FromChat is ChatMessage backwards: a chatbatch message of app. A
// message the chat server's users posted comes back with Type "text".
func FromChat(app string, m chat.Message) store.Message {
	out := store.Message{
		ID: cmp.Or(m.ExternalID, m.ID), AppID: app, RoomID: m.ConversationID, Sender: m.Author,
		Type: "text", Text: m.Body, CreatedAt: m.CreatedAt.UTC(),
	}
	var p payload
	if len(m.Payload) > 0 && json.Unmarshal(m.Payload, &p) == nil && p.Source == "chatbatch" {
		out.Type, out.Receiver, out.BatchID, out.Index = p.MessageType, p.Receiver, p.BatchID, p.Index
		if p.Extra != nil {
			out.Extra = json.RawMessage(*p.Extra)
		}
		if len(p.Fields) > 0 {
			out.Fields = make(map[string]json.RawMessage, len(p.Fields))
			for k, v := range p.Fields {
				out.Fields[k] = json.RawMessage(v)
			}
		}
	}
	return out
}

// SaveMessages implements store.Messages: one INSERT of every message,
// ON CONFLICT DO NOTHING on the IDs derived from the chatbatch IDs.
func (s *Store) SaveMessages(ctx context.Context, app string, msgs []store.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	if s.other(app) {
		return fmt.Errorf("batchwire: the chat server holds app %q only, not %q", s.app, app)
	}
	n := len(msgs)
	ids, convs, authors, bodies, payloads, exts := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	ats := make([]time.Time, n)
	for i, m := range msgs {
		conv, ok := chat.ParseConversationID(m.RoomID)
		if !ok {
			return fmt.Errorf("batchwire: message %s: room %q is not a conversation ID", m.ID, m.RoomID)
		}
		ids[i], convs[i], authors[i], bodies[i] = MessageUUID(m.ID), conv, m.Sender, m.Text
		payloads[i], exts[i], ats[i] = string(payloadJSON(m)), m.ID, m.CreatedAt.UTC()
	}
	// The chat server's rule for every post holds here too: only a member
	// of a conversation writes in it. A message whose sender is not (or no
	// longer) a member is not stored, and Deliverer fails its recipient.
	_, err := s.db.Pool.Exec(ctx, `
		INSERT INTO chat_messages (id, conversation_id, author_id, body, payload, external_id, created_at)
		SELECT v.id, v.conv, a.id, v.body, v.payload::jsonb, v.ext, v.at
		FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
		     WITH ORDINALITY AS v(id, conv, author, body, payload, ext, at, ord)
		JOIN accounts a ON a.handle = v.author
		WHERE EXISTS (SELECT 1 FROM conversation_members m WHERE m.conversation_id = v.conv AND m.account_id = a.id)
		ORDER BY v.ord
		ON CONFLICT DO NOTHING`, ids, convs, authors, bodies, payloads, exts, ats)
	if err != nil {
		return fmt.Errorf("batchwire: save messages: %w", err)
	}
	return nil
}

// NonMembers returns the indexes of msgs whose sender is not a member of
// the message's conversation: SaveMessages did not store them.
func (s *Store) NonMembers(ctx context.Context, msgs []store.Message) (map[int]bool, error) {
	convs, senders := make([]string, len(msgs)), make([]string, len(msgs))
	for i, m := range msgs {
		convs[i], senders[i] = m.RoomID, m.Sender
		if c, ok := chat.ParseConversationID(m.RoomID); ok {
			convs[i] = c
		} else {
			convs[i] = "00000000-0000-0000-0000-000000000000"
		}
	}
	rows, err := s.db.Pool.Query(ctx, `
		SELECT v.ord FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS v(conv, sender, ord)
		WHERE NOT EXISTS (SELECT 1 FROM conversation_members m JOIN accounts a ON a.id = m.account_id
		                  WHERE m.conversation_id = v.conv AND a.handle = v.sender)`, convs, senders)
	if err != nil {
		return nil, fmt.Errorf("batchwire: check senders' membership: %w", err)
	}
	out := map[int]bool{}
	var ord int
	_, err = pgx.ForEachRow(rows, []any{&ord}, func() error { out[ord-1] = true; return nil })
	if err != nil {
		return nil, fmt.Errorf("batchwire: check senders' membership: %w", err)
	}
	return out, nil
}

func storable(ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if utf8.ValidString(id) && !strings.ContainsRune(id, 0) {
			out = append(out, id)
		}
	}
	return out
}

// GetMessages implements store.MessageReader.
func (s *Store) GetMessages(ctx context.Context, app string, ids []string) ([]store.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ids = storable(ids)
	if len(ids) == 0 || s.other(app) {
		return []store.Message{}, nil
	}
	rows, err := s.db.Pool.Query(ctx, `
		SELECT m.id::text, m.conversation_id::text, a.handle, m.body, m.payload::text, m.external_id, m.created_at
		FROM chat_messages m JOIN accounts a ON a.id = m.author_id
		WHERE m.external_id = ANY($1::text[])`, ids)
	if err != nil {
		return nil, fmt.Errorf("batchwire: read messages: %w", err)
	}
	cms, err := chat.ScanMessages(rows)
	if err != nil {
		return nil, fmt.Errorf("batchwire: read messages: %w", err)
	}
	out := make([]store.Message, len(cms))
	for i, m := range cms {
		out[i] = FromChat(s.app, m)
	}
	return out, nil
}

// DeleteMessages implements store.MessageDeleter (recalls).
func (s *Store) DeleteMessages(ctx context.Context, app string, ids []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ids = storable(ids)
	if len(ids) == 0 || s.other(app) {
		return nil
	}
	if _, err := s.db.Pool.Exec(ctx, `DELETE FROM chat_messages WHERE external_id = ANY($1::text[])`, ids); err != nil {
		return fmt.Errorf("batchwire: delete messages: %w", err)
	}
	return nil
}
