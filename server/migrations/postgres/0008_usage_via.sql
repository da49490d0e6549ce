-- The door a run came in by: `aniate` (tool runs and chats) or `openai` (/v1/chat/completions).
-- Every earlier run came in by Aniate's own API. Keep in step with ../sqlite/0008_usage_via.sql.

ALTER TABLE usage ADD COLUMN via TEXT NOT NULL DEFAULT 'aniate';
