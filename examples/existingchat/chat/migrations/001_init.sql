-- The chat server's own schema. It predates chatbatch and knows nothing
-- about it; the only column added for batch sends is chat_messages.external_id.

CREATE TABLE IF NOT EXISTS accounts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handle     text COLLATE "C" NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A direct conversation is named by its two members: direct_key is
-- '<smaller account id>:<larger account id>' (one id for a note to self).
CREATE TABLE IF NOT EXISTS conversations (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind       text NOT NULL CHECK (kind IN ('direct', 'group')),
    title      text NOT NULL DEFAULT '',
    direct_key text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'direct') = (direct_key IS NOT NULL))
);

CREATE TABLE IF NOT EXISTS conversation_members (
    conversation_id uuid   NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    account_id      bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, account_id)
);
CREATE INDEX IF NOT EXISTS conversation_members_by_account ON conversation_members (account_id);

CREATE TABLE IF NOT EXISTS chat_messages (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    conversation_id uuid   NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    author_id       bigint NOT NULL REFERENCES accounts (id),
    body            text   NOT NULL,
    payload         jsonb,
    -- Set by integrations that bring their own message IDs (chatbatch's
    -- "<batchID>-<para index>"): saving the same external_id twice is a no-op.
    external_id     text COLLATE "C" UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS chat_messages_history ON chat_messages (conversation_id, created_at DESC, seq DESC);
