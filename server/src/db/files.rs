//! The `files` table: metadata of users' stored files (the bytes live on disk, by hash).

use sqlx::{Row, any::AnyRow};

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
}

const COLUMNS: &str = "id, owner_id, name, size, content_type, sha256, created_at";

impl StoredFile {
    fn from_row(row: &AnyRow) -> DbResult<StoredFile> {
        Ok(StoredFile {
            id: row.try_get("id")?,
            owner_id: row.try_get("owner_id")?,
            name: row.try_get("name")?,
            size: row.try_get("size")?,
            content_type: row.try_get("content_type")?,
            sha256: row.try_get("sha256")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl Db {
    pub async fn create_file(
        &self,
        owner_id: i64,
        name: &str,
        size: i64,
        content_type: &str,
        sha256: &str,
    ) -> DbResult<StoredFile> {
        let sql = format!(
            "INSERT INTO files (owner_id, name, size, content_type, sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(owner_id)
            .bind(name)
            .bind(size)
            .bind(content_type)
            .bind(sha256)
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await?;
        StoredFile::from_row(&row)
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

    /// How many rows name this content.
    pub async fn files_with_content(&self, sha256: &str) -> DbResult<i64> {
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM files WHERE sha256 = $1").bind(sha256).fetch_one(&self.pool).await?;
        Ok(count)
    }

    /// Deletes the row; returns how many rows still name the same content.
    pub async fn delete_file(&self, file: &StoredFile) -> DbResult<i64> {
        sqlx::query("DELETE FROM files WHERE id = $1").bind(file.id).execute(&self.pool).await?;
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM files WHERE sha256 = $1")
            .bind(&file.sha256)
            .fetch_one(&self.pool)
            .await?;
        Ok(count)
    }
}
