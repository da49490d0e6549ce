-- Stored files' content is deduplicated only within one account. Keep in step with ../postgres/0005_private_blobs.sql.
-- A blob is named by (account, SHA-256); `refs` counts the files rows that name it, and an
-- upload or delete changes the count and the row in one transaction, so the content of a row
-- is never removed under it.
-- Blobs stored before this migration were shared by every account that uploaded the same
-- content; their rows keep naming them (`shared_blob` = 1, blob owner 0, the old path on
-- disk) until deleted, and every new upload gets a blob of its own account.

CREATE TABLE blobs (
    owner_id INTEGER NOT NULL,
    sha256   TEXT   NOT NULL,
    refs     INTEGER NOT NULL,
    PRIMARY KEY (owner_id, sha256)
);

ALTER TABLE files ADD COLUMN shared_blob INTEGER NOT NULL DEFAULT 0;
UPDATE files SET shared_blob = 1;
INSERT INTO blobs (owner_id, sha256, refs) SELECT 0, sha256, COUNT(*) FROM files GROUP BY sha256;
