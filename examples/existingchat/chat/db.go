// Package chat is a small chat backend: accounts, direct and group
// conversations, messages, its own sessions and admin key, a chi router
// and a websocket hub. It was written before chatbatch and does not
// import it; package batchwire embeds chatbatch into it.
package chat

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Errors of the data layer.
var (
	ErrNotFound    = errors.New("chat: not found")
	ErrHandleTaken = errors.New("chat: handle taken")
	ErrNotMember   = errors.New("chat: not a member")
)

// DB is the chat server's PostgreSQL database.
type DB struct {
	Pool *pgxpool.Pool
}

// Open connects to PostgreSQL. search_path, when set, is the schema the
// tables live in (tests use one schema each).
func Open(ctx context.Context, dsn, searchPath string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("chat: parse database URL: %w", err)
	}
	if searchPath != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = searchPath
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("chat: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("chat: ping: %w", err)
	}
	return &DB{Pool: pool}, nil
}

// Close closes the pool.
func (db *DB) Close() { db.Pool.Close() }

// Migrate applies the embedded migrations the database has not had yet,
// in order, under an advisory lock (several instances may start at once).
func (db *DB) Migrate(ctx context.Context) error {
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext(current_schema() || '.chat_migrations'))`); err != nil {
		return fmt.Errorf("chat: migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext(current_schema() || '.chat_migrations'))`)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("chat: migrations table: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("chat: migration %s: no version number", name)
		}
		var done bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, version).Scan(&done); err != nil {
			return err
		}
		if done {
			continue
		}
		sql, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, version)
			return err
		})
		if err != nil {
			return fmt.Errorf("chat: migration %s: %w", base, err)
		}
	}
	return nil
}

// Account is a user of the chat server.
type Account struct {
	ID     int64  `json:"id"`
	Handle string `json:"handle"`
}

// Conversation is a direct (two people, or a note to self) or group chat.
type Conversation struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Title     string    `json:"title,omitempty"`
	Members   []string  `json:"members"`
	CreatedAt time.Time `json:"createdAt"`
}

// Message is one message of a conversation, as the history endpoint and
// the websocket show it.
type Message struct {
	ID             string          `json:"id"`
	ConversationID string          `json:"conversationId"`
	Author         string          `json:"author"`
	Body           string          `json:"body"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	ExternalID     string          `json:"externalId,omitempty"`
	CreatedAt      time.Time       `json:"createdAt"`
}

// ValidHandle reports whether s can be a handle: non-empty UTF-8 text
// without NUL, at most 255 bytes. (PostgreSQL text holds nothing else,
// so a look-up of anything else finds nothing.)
func ValidHandle(s string) bool {
	return s != "" && len(s) <= 255 && !strings.ContainsRune(s, 0) && utf8.ValidString(s)
}

// ParseConversationID returns the canonical form of a conversation ID,
// or false if s is not one.
func ParseConversationID(s string) (string, bool) {
	u, err := uuid.Parse(s)
	if err != nil || u.String() != s {
		return "", false // IDs compare exactly: only the canonical form names a conversation
	}
	return s, true
}

// DirectKey is the chat server's name for the direct conversation of two
// accounts: their IDs, smaller first.
func DirectKey(a, b int64) string {
	if b < a {
		a, b = b, a
	}
	if a == b {
		return strconv.FormatInt(a, 10)
	}
	return strconv.FormatInt(a, 10) + ":" + strconv.FormatInt(b, 10)
}

// CreateAccount creates an account.
func (db *DB) CreateAccount(ctx context.Context, handle string) (Account, error) {
	a := Account{Handle: handle}
	err := db.Pool.QueryRow(ctx, `INSERT INTO accounts (handle) VALUES ($1) RETURNING id`, handle).Scan(&a.ID)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return Account{}, ErrHandleTaken
	}
	return a, err
}

// AccountByHandle looks an account up.
func (db *DB) AccountByHandle(ctx context.Context, handle string) (Account, error) {
	if !ValidHandle(handle) {
		return Account{}, ErrNotFound
	}
	a := Account{Handle: handle}
	err := db.Pool.QueryRow(ctx, `SELECT id FROM accounts WHERE handle = $1`, handle).Scan(&a.ID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Account{}, ErrNotFound
	}
	return a, err
}

// AccountsByHandle returns the accounts among handles that exist.
func (db *DB) AccountsByHandle(ctx context.Context, handles []string) (map[string]int64, error) {
	valid := make([]string, 0, len(handles))
	for _, h := range handles {
		if ValidHandle(h) {
			valid = append(valid, h)
		}
	}
	out := make(map[string]int64, len(valid))
	if len(valid) == 0 {
		return out, ctx.Err()
	}
	rows, err := db.Pool.Query(ctx, `SELECT handle, id FROM accounts WHERE handle = ANY($1::text[])`, valid)
	if err != nil {
		return nil, err
	}
	var h string
	var id int64
	_, err = pgx.ForEachRow(rows, []any{&h, &id}, func() error { out[h] = id; return nil })
	return out, err
}

// DirectConversation finds or creates the direct conversation of two
// accounts (a == b: a note to self). Concurrent calls create one.
func (db *DB) DirectConversation(ctx context.Context, a, b int64) (string, error) {
	key := DirectKey(a, b)
	var id string
	// One statement: the conversation and its members appear together.
	err := db.Pool.QueryRow(ctx, `
		WITH conv AS (
			INSERT INTO conversations (kind, direct_key) VALUES ('direct', $1)
			ON CONFLICT (direct_key) DO NOTHING
			RETURNING id
		), mem AS (
			INSERT INTO conversation_members (conversation_id, account_id)
			SELECT conv.id, m FROM conv, unnest(ARRAY[$2::bigint, $3::bigint]) AS m GROUP BY conv.id, m
		)
		SELECT id::text FROM conv`, key, a, b).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		err = db.Pool.QueryRow(ctx, `SELECT id::text FROM conversations WHERE direct_key = $1`, key).Scan(&id)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" { // an account does not exist
		return "", ErrNotFound
	}
	return id, err
}

// CreateGroup creates a group conversation with the given members.
func (db *DB) CreateGroup(ctx context.Context, title string, members []int64) (string, error) {
	var id string
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO conversations (kind, title) VALUES ('group', $1) RETURNING id::text`, title).Scan(&id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO conversation_members (conversation_id, account_id)
			SELECT $1, m FROM unnest($2::bigint[]) AS m ON CONFLICT DO NOTHING`, id, members)
		return err
	})
	return id, err
}

// Members returns the member account IDs of each conversation of ids
// that exists.
func (db *DB) Members(ctx context.Context, ids []string) (map[string][]int64, error) {
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if c, ok := ParseConversationID(id); ok {
			valid = append(valid, c)
		}
	}
	out := map[string][]int64{}
	if len(valid) == 0 {
		return out, ctx.Err()
	}
	rows, err := db.Pool.Query(ctx, `SELECT conversation_id::text, account_id FROM conversation_members WHERE conversation_id = ANY($1::uuid[])`, valid)
	if err != nil {
		return nil, err
	}
	var c string
	var a int64
	_, err = pgx.ForEachRow(rows, []any{&c, &a}, func() error { out[c] = append(out[c], a); return nil })
	return out, err
}

// IsMember reports whether account is a member of conversation conv; ErrNotFound if
// conv does not exist.
func (db *DB) IsMember(ctx context.Context, conv string, account int64) (bool, error) {
	conv, ok := ParseConversationID(conv)
	if !ok {
		return false, ErrNotFound
	}
	var exists, member bool
	err := db.Pool.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM conversations WHERE id = $1),
		EXISTS (SELECT 1 FROM conversation_members WHERE conversation_id = $1 AND account_id = $2)`, conv, account).Scan(&exists, &member)
	if err == nil && !exists {
		return false, ErrNotFound
	}
	return member, err
}

// Conversations lists account's conversations, newest first.
func (db *DB) Conversations(ctx context.Context, account int64) ([]Conversation, error) {
	rows, err := db.Pool.Query(ctx, `
		SELECT c.id::text, c.kind, c.title, c.created_at,
		       ARRAY(SELECT a.handle FROM conversation_members m2 JOIN accounts a ON a.id = m2.account_id
		             WHERE m2.conversation_id = c.id ORDER BY a.handle)
		FROM conversations c JOIN conversation_members m ON m.conversation_id = c.id
		WHERE m.account_id = $1 ORDER BY c.created_at DESC, c.id`, account)
	if err != nil {
		return nil, err
	}
	out := []Conversation{}
	var c Conversation
	_, err = pgx.ForEachRow(rows, []any{&c.ID, &c.Kind, &c.Title, &c.CreatedAt, &c.Members}, func() error {
		c.CreatedAt = c.CreatedAt.UTC()
		out = append(out, c)
		return nil
	})
	return out, err
}

// PostMessage stores a message by author in conv.
func (db *DB) PostMessage(ctx context.Context, conv string, author Account, body string, payload []byte) (Message, error) {
	m := Message{ConversationID: conv, Author: author.Handle, Body: body, Payload: payload}
	var p any
	if payload != nil {
		p = string(payload)
	}
	err := db.Pool.QueryRow(ctx, `INSERT INTO chat_messages (conversation_id, author_id, body, payload)
		VALUES ($1, $2, $3, $4::jsonb) RETURNING id::text, created_at`, conv, author.ID, body, p).Scan(&m.ID, &m.CreatedAt)
	m.CreatedAt = m.CreatedAt.UTC()
	return m, err
}

// History returns up to limit messages of conv, newest first (the later
// save first among equal times).
func (db *DB) History(ctx context.Context, conv string, limit int) ([]Message, error) {
	conv, ok := ParseConversationID(conv)
	if !ok {
		return nil, ErrNotFound
	}
	q := `SELECT m.id::text, m.conversation_id::text, a.handle, m.body, m.payload::text, coalesce(m.external_id, ''), m.created_at
		FROM chat_messages m JOIN accounts a ON a.id = m.author_id
		WHERE m.conversation_id = $1 ORDER BY m.created_at DESC, m.seq DESC`
	args := []any{conv}
	if limit > 0 {
		q += ` LIMIT $2`
		args = append(args, limit)
	}
	rows, err := db.Pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return ScanMessages(rows)
}

// ScanMessages reads rows of (id, conversation, author handle, body,
// payload text, external id, created at).
func ScanMessages(rows pgx.Rows) ([]Message, error) {
	out := []Message{}
	var m Message
	var payload *string
	_, err := pgx.ForEachRow(rows, []any{&m.ID, &m.ConversationID, &m.Author, &m.Body, &payload, &m.ExternalID, &m.CreatedAt}, func() error {
		m.Payload = nil
		if payload != nil {
			m.Payload = []byte(*payload)
		}
		m.CreatedAt = m.CreatedAt.UTC()
		out = append(out, m)
		return nil
	})
	return out, err
}
