-- Read receipts: each member's marker in a conversation, "read up to this
-- message" (by chat_messages.seq, the order messages were stored in).

CREATE TABLE IF NOT EXISTS conversation_reads (
    conversation_id uuid   NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    account_id      bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    last_read_seq   bigint NOT NULL,
    read_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, account_id)
);

-- The messages between two markers of one conversation.
CREATE INDEX IF NOT EXISTS chat_messages_by_seq ON chat_messages (conversation_id, seq);
