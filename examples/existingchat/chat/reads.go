package chat

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
)

// Read receipts. A member marks a conversation read up to a message
// (POST /api/v1/conversations/{id}/read {"upTo": "<message id>"}); the
// server keeps one marker per member and conversation and never moves it
// back. The messages a marker newly passes — those of the other members,
// in the order they were stored — go to the read hooks, which is where
// integrations learn who read what (package batchwire reports them to
// chatbatch as reads of its messages).

// ReadReceipt is one marker's move: Messages are the messages of other
// authors that Reader has newly read, oldest first.
type ReadReceipt struct {
	ConversationID string
	Reader         Account
	Messages       []ReadMessage
	At             time.Time
}

// ReadMessage is a message passed by a read marker.
type ReadMessage struct {
	ID         string
	ExternalID string // "" unless an integration stored the message
}

// OnRead adds fn to the hooks a stored read receipt runs, in the request
// that made it, after its transaction committed. A hook handles its own
// errors: the receipt is stored whatever a hook does.
func (s *Server) OnRead(fn func(context.Context, ReadReceipt)) {
	s.readHooks = append(s.readHooks, fn)
}

// MarkRead moves reader's marker in conv up to message upTo and returns
// the messages of other authors it newly passed, oldest first (none if
// the marker was there or further already). ErrNotFound: upTo is not a
// message of conv.
func (db *DB) MarkRead(ctx context.Context, conv string, reader int64, upTo string) ([]ReadMessage, time.Time, error) {
	if _, ok := ParseConversationID(upTo); !ok {
		return nil, time.Time{}, ErrNotFound // message IDs are UUIDs too
	}
	var out []ReadMessage
	var at time.Time
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		var target int64
		err := tx.QueryRow(ctx, `SELECT seq FROM chat_messages WHERE id = $1 AND conversation_id = $2`, upTo, conv).Scan(&target)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		// The marker row, locked: concurrent receipts of one member queue
		// here, so each message is passed by exactly one of them.
		var last int64
		err = tx.QueryRow(ctx, `INSERT INTO conversation_reads (conversation_id, account_id, last_read_seq) VALUES ($1, $2, 0)
			ON CONFLICT (conversation_id, account_id) DO UPDATE SET last_read_seq = conversation_reads.last_read_seq
			RETURNING last_read_seq, now()`, conv, reader).Scan(&last, &at)
		if err != nil || target <= last {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE conversation_reads SET last_read_seq = $3, read_at = now()
			WHERE conversation_id = $1 AND account_id = $2`, conv, reader, target); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT id::text, coalesce(external_id, '') FROM chat_messages
			WHERE conversation_id = $1 AND seq > $2 AND seq <= $3 AND author_id <> $4 ORDER BY seq`, conv, last, target, reader)
		if err != nil {
			return err
		}
		var m ReadMessage
		_, err = pgx.ForEachRow(rows, []any{&m.ID, &m.ExternalID}, func() error {
			out = append(out, m)
			return nil
		})
		return err
	})
	return out, at.UTC(), err
}

func (s *Server) markRead(w http.ResponseWriter, r *http.Request) {
	conv, me, ok := s.member(w, r)
	if !ok {
		return
	}
	var in struct {
		UpTo string `json:"upTo"`
	}
	if !decode(w, r, &in) {
		return
	}
	msgs, at, err := s.DB.MarkRead(r.Context(), conv, me.Account.ID, in.UpTo)
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "no_such_message", "upTo is not a message of this conversation")
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	if len(msgs) > 0 {
		rr := ReadReceipt{ConversationID: conv, Reader: me.Account, Messages: msgs, At: at}
		for _, hook := range s.readHooks {
			hook(r.Context(), rr)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"conversationId": conv, "upTo": in.UpTo, "newlyRead": len(msgs)})
}
