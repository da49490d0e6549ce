-- Brews (assistants), stored files and plans. Keep in step with ../postgres/0002_brews_files_plans.sql.

CREATE TABLE plans (
    name                TEXT    PRIMARY KEY,
    requests_per_minute INTEGER NOT NULL,
    tokens_per_month    INTEGER NOT NULL
);
INSERT INTO plans (name, requests_per_minute, tokens_per_month) VALUES
    ('free', 20, 500000),
    ('pro', 120, 20000000);

CREATE TABLE assistants (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    slug          TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    description   TEXT    NOT NULL,
    system_prompt TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    visibility    TEXT    NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'global')),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (owner_id, slug)
);
CREATE INDEX assistants_visibility ON assistants (visibility);

CREATE TABLE files (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT    NOT NULL,
    sha256       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX files_owner ON files (owner_id);
CREATE INDEX files_sha256 ON files (sha256);
