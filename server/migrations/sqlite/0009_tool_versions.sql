-- Tool versions (docs/admin.md, "Tool history"), and console sessions (below). Keep in step with ../postgres/0009_tool_versions.sql.
-- One row per version of a tool: the whole state a client or the model could see at that
-- version (the canary is per tool, not per version), who made it, when and why.
-- `version` is the tool's public version, so `GET /tools` and the history count alike.
-- Tools that existed before get their current state as their first recorded version.

CREATE TABLE tool_versions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    slug          TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    description   TEXT    NOT NULL,
    system_prompt TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    requires_file INTEGER NOT NULL CHECK (requires_file IN (0, 1)),
    output        TEXT    NOT NULL CHECK (output IN ('text', 'code', 'findings', 'command')),
    active        INTEGER NOT NULL CHECK (active IN (0, 1)),
    guard         TEXT    NOT NULL CHECK (guard IN ('block', 'log', 'off')),
    author        TEXT    NOT NULL,
    message       TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    UNIQUE (slug, version)
);

INSERT INTO tool_versions (slug, version, name, description, system_prompt, model, requires_file, output, active, guard, author, message, created_at)
SELECT slug, version, name, description, system_prompt, model, requires_file, output, active, guard, 'upgrade', 'the state when version history began', updated_at
FROM global_tools;

-- Console sessions (docs/console.md) are API tokens of kind `session`, so they are stored
-- hashed, expire and are revoked like every token; the kind keeps them out of a user's list
-- of API tokens, and a session is only accepted from its cookie.
ALTER TABLE api_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'api' CHECK (kind IN ('api', 'session'));
