-- Named providers: who answered a run and what it cost, fallbacks per tool and brew, and
-- plans that limit models and monthly cost. Keep in step with ../sqlite/0010_providers_cost.sql.
-- Rows from before the catalogue were answered by the one provider, `default`, at no known
-- price: they are marked unpriced (priced = 0) rather than given a cost nobody computed.

ALTER TABLE usage ADD COLUMN provider TEXT NOT NULL DEFAULT 'default';
ALTER TABLE usage ADD COLUMN cost_micro_usd BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN priced BIGINT NOT NULL DEFAULT 0;

-- A JSON array of model references (`provider/model`), tried in order before the first token.
ALTER TABLE global_tools ADD COLUMN fallbacks TEXT NOT NULL DEFAULT '[]';
ALTER TABLE assistants ADD COLUMN fallbacks TEXT NOT NULL DEFAULT '[]';

-- A JSON array of glob patterns the plan's brews may name as models; NULL allows any.
ALTER TABLE plans ADD COLUMN allowed_models TEXT;
-- The most a user of the plan may spend in a month, in micro-dollars; NULL is no limit.
ALTER TABLE plans ADD COLUMN cost_micro_usd_per_month BIGINT;
-- The month's settled cost next to its settled tokens (0007's counter), so that a cost limit is
-- checked as cheaply and as exactly as the token quota.
ALTER TABLE usage_months ADD COLUMN cost_micro_usd BIGINT NOT NULL DEFAULT 0;
