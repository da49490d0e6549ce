-- Accounts an admin can disable. Keep in step with ../postgres/0004_accounts.sql.
-- A disabled account keeps its tokens, which all fail with 403 `account_disabled` until it is
-- enabled again. (Tokens expire by `COALESCE(last_used_at, created_at)` and the server's
-- ANIATE_TOKEN_TTL_DAYS, so expiry needs no column.)

ALTER TABLE users ADD COLUMN disabled_at INTEGER;
