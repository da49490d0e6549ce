-- The run path without a scan of the usage table. Keep in step with ../postgres/0007_hot_path.sql.

-- Each user's settled tokens per month (runs counted in the month their reservation was made).
-- A quota check reads this row and the user's runs in flight instead of summing the month's
-- usage rows. A month's row is made, from the usage rows, by the month's first reservation.
CREATE TABLE usage_months (
    user_id     INTEGER NOT NULL,
    month_start INTEGER NOT NULL,
    tokens      INTEGER NOT NULL,
    PRIMARY KEY (user_id, month_start)
);

-- Runs in flight, which hold their reservation until settled. With `created_at` in it, SQLite
-- picks it over usage_user_created, which would read every run of the user's last hour.
CREATE INDEX usage_running ON usage (user_id, created_at) WHERE status = 'running';

-- Bumped by every change that a server's in-memory caches depend on (`auth`: tokens, users'
-- roles, plans and accounts; `tools`: the tool registry); every server polls them and drops
-- its cache when one moves.
CREATE TABLE cache_generations (
    name       TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
);
INSERT INTO cache_generations (name, generation) VALUES ('auth', 0), ('tools', 0);
