-- Per-plan storage quota: total stored bytes and number of stored files. Keep in step with ../postgres/0006_storage_quota.sql.

ALTER TABLE plans ADD COLUMN max_stored_bytes INTEGER NOT NULL DEFAULT 104857600;
ALTER TABLE plans ADD COLUMN max_stored_files INTEGER NOT NULL DEFAULT 1000;
UPDATE plans SET max_stored_bytes = 1073741824, max_stored_files = 10000 WHERE name = 'pro';
