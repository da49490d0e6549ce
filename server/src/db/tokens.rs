//! The `api_tokens` table. Only hashes of tokens are stored.

use aniate_proto::api::Role;
use sqlx::Row;

use super::{Db, DbResult, Generation, now_ms, users::parse_role};

/// The owner of an unrevoked token. Whether it has expired, or its account is disabled, is the
/// caller's to judge from the times here.
#[derive(Debug, Clone)]
pub struct TokenUser {
    pub token_id: i64,
    pub user_id: i64,
    pub email: String,
    pub role: Role,
    pub plan: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub disabled_at: Option<i64>,
}

impl Db {
    pub async fn create_token(&self, user_id: i64, token_hash: &str, name: &str) -> DbResult<i64> {
        let row = sqlx::query(
            "INSERT INTO api_tokens (user_id, token_hash, name, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(user_id)
        .bind(token_hash)
        .bind(name)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(super::DbError::from_write)?;
        Ok(row.try_get(0)?)
    }

    /// Finds the user of an unrevoked token by the token's hash, as every authenticated request
    /// does: from the cache (see `cache`), else one query on the unique index of `token_hash`.
    pub async fn token_user(&self, token_hash: &str) -> DbResult<Option<TokenUser>> {
        let caching = self.caching();
        if caching && let Some(found) = self.caches.tokens.get(token_hash) {
            return Ok(Some(found));
        }
        let epoch = self.caches.tokens.epoch();
        let found = self.token_user_uncached(token_hash).await?;
        // A disabled account's token is not cached: enabling it must work at once.
        if caching && let Some(found) = found.as_ref().filter(|found| found.disabled_at.is_none()) {
            self.caches.tokens.insert(epoch, token_hash.to_owned(), found.clone());
        }
        Ok(found)
    }

    async fn token_user_uncached(&self, token_hash: &str) -> DbResult<Option<TokenUser>> {
        let row = sqlx::query(
            "SELECT t.id, u.id, u.email, u.role, u.plan, t.created_at, t.last_used_at, u.disabled_at \
             FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(TokenUser {
                token_id: row.try_get(0)?,
                user_id: row.try_get(1)?,
                email: row.try_get(2)?,
                role: parse_role(row.try_get::<&str, _>(3)?)?,
                plan: row.try_get(4)?,
                created_at: row.try_get(5)?,
                last_used_at: row.try_get(6)?,
                disabled_at: row.try_get(7)?,
            })
        })
        .transpose()
    }

    /// Records that a token was used now (in the database and the cache, so the cached copy
    /// does not ask for the same write on every request).
    pub async fn touch_token(&self, token_id: i64, token_hash: &str) -> DbResult<()> {
        let now = now_ms();
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        self.caches.tokens.update(token_hash, |found| found.last_used_at = Some(now));
        Ok(())
    }

    /// Revokes every unrevoked token of `user_id`; returns how many.
    pub async fn revoke_user_tokens(&self, user_id: i64) -> DbResult<u64> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        self.invalidate(Generation::Auth).await?;
        Ok(done.rows_affected())
    }

    pub async fn revoke_token(&self, token_id: i64) -> DbResult<()> {
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        self.invalidate(Generation::Auth).await
    }
}
