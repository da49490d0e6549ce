//! The `files` table: metadata of users' stored files, and the `blobs` table: how many rows name
//! each stored content (the bytes live on disk, by account and hash).
//!
//! A blob is named by (blob owner, SHA-256): the blob owner is the file's owner, or 0 for the
//! blobs every account shared before migration 0005 (`shared_blob` = 1). Uploads and deletes
//! change a blob's reference count and the file row in one transaction ([`BlobTx`]), and the
//! count's row lock is held while the caller writes or removes the bytes, so a delete can never
//! remove the content of a row an upload of the same content is adding.

use sqlx::{Any, Row, Transaction, any::AnyRow};

use super::{Db, DbResult, now_ms};

#[derive(Debug, Clone)]
pub struct StoredFile {
    pub id: i64,
    pub owner_id: i64,
    pub name: String,
    pub size: i64,
    pub content_type: String,
    pub sha256: String,
    pub created_at: i64,
    /// Whether the row names a blob from before migration 0005, shared by every account.
    pub shared_blob: bool,
}

impl StoredFile {
    /// The owner of the blob this row names: 0 for a shared blob from before migration 0005.
    pub fn blob_owner_id(&self) -> i64 {
        if self.shared_blob { 0 } else { self.owner_id }
    }

    fn from_row(row: &AnyRow) -> DbResult<StoredFile> {
        Ok(StoredFile {
            id: row.try_get("id")?,
            owner_id: row.try_get("owner_id")?,
            name: row.try_get("name")?,
            size: row.try_get("size")?,
            content_type: row.try_get("content_type")?,
            sha256: row.try_get("sha256")?,
            created_at: row.try_get("created_at")?,
            shared_blob: row.try_get::<i64, _>("shared_blob")? != 0,
        })
    }
}

const COLUMNS: &str = "id, owner_id, name, size, content_type, sha256, created_at, shared_blob";

/// A transaction holding the lock on one blob's reference count: write or remove the blob's
/// bytes while it is open, then [`BlobTx::commit`]. Dropped without a commit, nothing changes.
pub struct BlobTx {
    tx: Transaction<'static, Any>,
}

impl BlobTx {
    /// Adds the file row that names the blob this transaction counted.
    pub async fn insert_file(
        &mut self,
        owner_id: i64,
        name: &str,
        size: i64,
        content_type: &str,
        sha256: &str,
    ) -> DbResult<StoredFile> {
        let sql = format!(
            "INSERT INTO files (owner_id, name, size, content_type, sha256, created_at, shared_blob) VALUES ($1, $2, $3, $4, $5, $6, 0) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(owner_id)
            .bind(name)
            .bind(size)
            .bind(content_type)
            .bind(sha256)
            .bind(now_ms())
            .fetch_one(&mut *self.tx)
            .await?;
        StoredFile::from_row(&row)
    }

    pub async fn commit(self) -> DbResult<()> {
        Ok(self.tx.commit().await?)
    }
}

impl Db {
    /// Starts an upload of `sha256` by `owner_id`: counts one more reference to the account's
    /// blob of that content, and returns the transaction (holding the count's lock) and the new
    /// count (1: no row of this account named the content before).
    pub async fn reference_blob(&self, owner_id: i64, sha256: &str) -> DbResult<(BlobTx, i64)> {
        let mut tx = self.pool.begin().await?;
        let (refs,): (i64,) = sqlx::query_as(
            "INSERT INTO blobs (owner_id, sha256, refs) VALUES ($1, $2, 1) \
             ON CONFLICT (owner_id, sha256) DO UPDATE SET refs = blobs.refs + 1 RETURNING refs",
        )
        .bind(owner_id)
        .bind(sha256)
        .fetch_one(&mut *tx)
        .await?;
        Ok((BlobTx { tx }, refs))
    }

    /// Starts the delete of `file`: removes its row and counts one reference less to its blob
    /// (forgetting the blob at 0). Returns `None` when the row is already gone, else the
    /// transaction (holding the count's lock) and how many rows still name the blob: at 0 the
    /// caller removes the bytes before committing.
    pub async fn delete_file(&self, file: &StoredFile) -> DbResult<Option<(BlobTx, i64)>> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM files WHERE id = $1 AND owner_id = $2")
            .bind(file.id)
            .bind(file.owner_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(None);
        }
        let remaining: Option<(i64,)> =
            sqlx::query_as("UPDATE blobs SET refs = refs - 1 WHERE owner_id = $1 AND sha256 = $2 RETURNING refs")
                .bind(file.blob_owner_id())
                .bind(&file.sha256)
                .fetch_optional(&mut *tx)
                .await?;
        // No count at all would be a blob no row counted; nothing else names it either.
        let remaining = remaining.map_or(0, |(refs,)| refs.max(0));
        if remaining == 0 {
            sqlx::query("DELETE FROM blobs WHERE owner_id = $1 AND sha256 = $2")
                .bind(file.blob_owner_id())
                .bind(&file.sha256)
                .execute(&mut *tx)
                .await?;
        }
        Ok(Some((BlobTx { tx }, remaining)))
    }

    /// What `owner_id` stores: total bytes and number of files (for the storage quota).
    pub async fn stored_by(&self, owner_id: i64) -> DbResult<(u64, u64)> {
        let (bytes, files): (i64, i64) =
            sqlx::query_as("SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT), COUNT(*) FROM files WHERE owner_id = $1")
                .bind(owner_id)
                .fetch_one(&self.pool)
                .await?;
        Ok((bytes.max(0) as u64, files.max(0) as u64))
    }

    pub async fn files_of(&self, owner_id: i64) -> DbResult<Vec<StoredFile>> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE owner_id = $1 ORDER BY id");
        let rows = sqlx::query(&sql).bind(owner_id).fetch_all(&self.pool).await?;
        rows.iter().map(StoredFile::from_row).collect()
    }

    /// A file of `owner_id`; another user's file is `None`, like a missing one.
    pub async fn file_of(&self, owner_id: i64, id: i64) -> DbResult<Option<StoredFile>> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE id = $1 AND owner_id = $2");
        let row = sqlx::query(&sql).bind(id).bind(owner_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(StoredFile::from_row).transpose()
    }
}
