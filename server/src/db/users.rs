//! The `users` table.

use aniate_proto::api::Role;
use sqlx::Row;

use super::{Db, DbError, DbResult, Generation, now_ms};

/// A user as the server sees it. The password hash stays in this module's callers' hands only
/// long enough to verify a login.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub plan: String,
    /// When an admin disabled the account; its tokens and logins fail until it is enabled.
    pub disabled_at: Option<i64>,
}

impl User {
    /// A row of `SELECT id, email, password_hash, role, plan, disabled_at FROM users`.
    fn from_row(row: &sqlx::any::AnyRow) -> DbResult<User> {
        Ok(User {
            id: row.try_get(0)?,
            email: row.try_get(1)?,
            password_hash: row.try_get(2)?,
            role: parse_role(row.try_get::<&str, _>(3)?)?,
            plan: row.try_get(4)?,
            disabled_at: row.try_get(5)?,
        })
    }
}

pub(super) fn parse_role(role: &str) -> DbResult<Role> {
    match role {
        "user" => Ok(Role::User),
        "admin" => Ok(Role::Admin),
        other => Err(DbError::Corrupt(format!("unknown role `{other}`"))),
    }
}

impl Db {
    /// Inserts a user; [`DbError::Conflict`] when the email is taken.
    pub async fn create_user(&self, email: &str, password_hash: &str, role: Role) -> DbResult<i64> {
        let row = sqlx::query(
            "INSERT INTO users (email, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(email)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(DbError::from_write)?;
        Ok(row.try_get(0)?)
    }

    pub async fn user_by_email(&self, email: &str) -> DbResult<Option<User>> {
        let row = sqlx::query("SELECT id, email, password_hash, role, plan, disabled_at FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(User::from_row).transpose()
    }

    /// Disables (`true`) or enables a user; false when there is no such user. Disabling an
    /// account that is disabled keeps the first time.
    pub async fn set_disabled(&self, email: &str, disabled: bool) -> DbResult<bool> {
        let query = if disabled {
            sqlx::query("UPDATE users SET disabled_at = COALESCE(disabled_at, $1) WHERE email = $2").bind(now_ms())
        } else {
            sqlx::query("UPDATE users SET disabled_at = NULL WHERE email = $1")
        };
        let done = query.bind(email).execute(&self.pool).await?;
        self.invalidate(Generation::Auth).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every user, by email (the console's users page).
    pub async fn all_users(&self) -> DbResult<Vec<User>> {
        let rows = sqlx::query("SELECT id, email, password_hash, role, plan, disabled_at FROM users ORDER BY email")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(User::from_row).collect()
    }

    /// Sets a user's role; false when there is no such user.
    pub async fn set_role(&self, email: &str, role: Role) -> DbResult<bool> {
        let done = sqlx::query("UPDATE users SET role = $1 WHERE email = $2")
            .bind(role.as_str())
            .bind(email)
            .execute(&self.pool)
            .await?;
        self.invalidate(Generation::Auth).await?;
        Ok(done.rows_affected() > 0)
    }
}
