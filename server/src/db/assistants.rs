//! The `assistants` table: users' brews.

use aniate_proto::api::{AssistantPatch, Visibility};
use sqlx::{Row, any::AnyRow};

use super::{Db, DbError, DbResult, now_ms};

/// A brew as stored, prompt included.
///
/// **Architecture Invariant:** not `Serialize`; the HTTP layer decides what a caller sees.
#[derive(Debug, Clone)]
pub struct StoredAssistant {
    pub id: i64,
    pub owner_id: i64,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub system_prompt: String,
    pub model: String,
    /// Tried in order when `model`'s provider fails before the first token.
    pub fallbacks: Vec<String>,
    pub visibility: Visibility,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new brew, after validation.
#[derive(Debug, Clone)]
pub struct NewAssistant {
    pub owner_id: i64,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub system_prompt: String,
    pub model: String,
    pub fallbacks: Vec<String>,
    pub visibility: Visibility,
}

const COLUMNS: &str =
    "id, owner_id, slug, name, description, system_prompt, model, visibility, created_at, updated_at, fallbacks";

fn parse_visibility(value: &str) -> DbResult<Visibility> {
    match value {
        "private" => Ok(Visibility::Private),
        "global" => Ok(Visibility::Global),
        other => Err(DbError::Corrupt(format!("unknown visibility `{other}`"))),
    }
}

impl StoredAssistant {
    fn from_row(row: &AnyRow) -> DbResult<StoredAssistant> {
        Ok(StoredAssistant {
            id: row.try_get("id")?,
            owner_id: row.try_get("owner_id")?,
            slug: row.try_get("slug")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            system_prompt: row.try_get("system_prompt")?,
            model: row.try_get("model")?,
            fallbacks: super::parse_model_list(&row.try_get::<String, _>("fallbacks")?)?,
            visibility: parse_visibility(row.try_get::<&str, _>("visibility")?)?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl Db {
    /// [`DbError::Conflict`] when the owner already has a brew with this slug.
    pub async fn create_assistant(&self, new: &NewAssistant) -> DbResult<StoredAssistant> {
        let now = now_ms();
        let sql = format!(
            "INSERT INTO assistants (owner_id, slug, name, description, system_prompt, model, visibility, created_at, updated_at, fallbacks) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(new.owner_id)
            .bind(&new.slug)
            .bind(&new.name)
            .bind(&new.description)
            .bind(&new.system_prompt)
            .bind(&new.model)
            .bind(new.visibility.as_str())
            .bind(now)
            .bind(super::model_list_json(&new.fallbacks))
            .fetch_one(&self.pool)
            .await
            .map_err(DbError::from_write)?;
        StoredAssistant::from_row(&row)
    }

    /// The brews `user_id` may see: their own and every global one.
    pub async fn visible_assistants(&self, user_id: i64) -> DbResult<Vec<StoredAssistant>> {
        let sql =
            format!("SELECT {COLUMNS} FROM assistants WHERE owner_id = $1 OR visibility = 'global' ORDER BY slug, id");
        let rows = sqlx::query(&sql).bind(user_id).fetch_all(&self.pool).await?;
        rows.iter().map(StoredAssistant::from_row).collect()
    }

    /// A brew `user_id` may see, by id or slug (their own first, then global ones).
    pub async fn visible_assistant(&self, user_id: i64, id_or_slug: &str) -> DbResult<Option<StoredAssistant>> {
        let sql = match id_or_slug.parse::<i64>() {
            Ok(_) => {
                format!("SELECT {COLUMNS} FROM assistants WHERE id = $2 AND (owner_id = $1 OR visibility = 'global')")
            }
            Err(_) => format!(
                "SELECT {COLUMNS} FROM assistants WHERE slug = $2 AND (owner_id = $1 OR visibility = 'global') \
                 ORDER BY CASE WHEN owner_id = $1 THEN 0 ELSE 1 END, id LIMIT 1"
            ),
        };
        let query = sqlx::query(&sql).bind(user_id);
        let query = match id_or_slug.parse::<i64>() {
            Ok(id) => query.bind(id),
            Err(_) => query.bind(id_or_slug),
        };
        let row = query.fetch_optional(&self.pool).await?;
        row.as_ref().map(StoredAssistant::from_row).transpose()
    }

    pub async fn update_assistant(&self, id: i64, patch: &AssistantPatch) -> DbResult<StoredAssistant> {
        let sql = format!(
            "UPDATE assistants SET name = COALESCE($2, name), description = COALESCE($3, description), \
             system_prompt = COALESCE($4, system_prompt), model = COALESCE($5, model), \
             visibility = COALESCE($6, visibility), fallbacks = COALESCE($8, fallbacks), updated_at = $7 \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(patch.name.as_deref())
            .bind(patch.description.as_deref())
            .bind(patch.system_prompt.as_deref())
            .bind(patch.model.as_deref())
            .bind(patch.visibility.map(Visibility::as_str))
            .bind(now_ms())
            .bind(patch.fallbacks.as_deref().map(super::model_list_json))
            .fetch_one(&self.pool)
            .await?;
        StoredAssistant::from_row(&row)
    }

    pub async fn delete_assistant(&self, id: i64) -> DbResult<()> {
        sqlx::query("DELETE FROM assistants WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }
}
