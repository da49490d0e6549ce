-- Aniate server schema, SQLite dialect. Keep in step with ../postgres/0001_init.sql:
-- the same tables, columns and meaning; only the dialect differs.
-- Times are Unix epoch milliseconds; flags are 0/1 integers (portable through sqlx::Any).

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    plan          TEXT    NOT NULL DEFAULT 'free',
    created_at    INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   TEXT    NOT NULL UNIQUE,
    name         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE global_tools (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    slug          TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    description   TEXT    NOT NULL,
    system_prompt TEXT    NOT NULL,
    model         TEXT    NOT NULL DEFAULT 'llama-3.1-8b-instant',
    requires_file INTEGER NOT NULL DEFAULT 0 CHECK (requires_file IN (0, 1)),
    output        TEXT    NOT NULL DEFAULT 'text' CHECK (output IN ('text', 'code', 'findings', 'command')),
    active        INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    version       INTEGER NOT NULL DEFAULT 1,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE usage (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           INTEGER REFERENCES users (id) ON DELETE SET NULL,
    tool              TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms        INTEGER NOT NULL,
    ttft_ms           INTEGER,
    status            TEXT    NOT NULL,
    request_id        TEXT    NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE INDEX usage_user_created ON usage (user_id, created_at);
CREATE INDEX usage_created ON usage (created_at);

-- One-time facts about this database, e.g. when the seed tools were inserted.
CREATE TABLE server_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
