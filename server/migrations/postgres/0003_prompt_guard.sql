-- The prompt guard (docs/security.md, "Prompt secrecy"). Keep in step with ../sqlite/0003_prompt_guard.sql.
-- `guard`: what the server does when an answer repeats the tool's prompt.
-- `canary`: a random marker the server adds to the prompt the model sees and watches for in
-- answers; never served by any API. Tools that existed before get one here.

ALTER TABLE global_tools ADD COLUMN guard TEXT NOT NULL DEFAULT 'block' CHECK (guard IN ('block', 'log', 'off'));
ALTER TABLE global_tools ADD COLUMN canary TEXT;
UPDATE global_tools SET canary = substr(md5(random()::text || clock_timestamp()::text || slug), 1, 16) WHERE canary IS NULL;
