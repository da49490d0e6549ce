//! The `global_tools` table: every tool, with its system prompt; and `tool_versions`, every
//! version every tool has had since version history began.

use aniate_proto::{
    api::{ToolUpsert, ToolVersion, ToolVersionInfo, UpsertOutcome},
    tool::{GuardMode, OutputKind, ToolMeta},
};
use sqlx::{Row, any::AnyRow};

use super::{Db, DbError, DbResult, Generation, now_ms, rfc3339};

/// The default model of a tool that names none.
pub const DEFAULT_MODEL: &str = "llama-3.1-8b-instant";

/// A tool as stored, prompt included.
///
/// **Architecture Invariant:** this type is not `Serialize`. What leaves the server is
/// [`ToolMeta`], made by [`StoredTool::meta`], which has no prompt field.
#[derive(Debug, Clone)]
pub struct StoredTool {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub system_prompt: String,
    pub model: String,
    /// Tried in order when `model`'s provider fails before the first token.
    pub fallbacks: Vec<String>,
    pub requires_file: bool,
    pub output: OutputKind,
    pub active: bool,
    pub version: i64,
    pub updated_at: i64,
    /// What the prompt guard does for this tool.
    pub guard: GuardMode,
    /// The random marker added to the prompt the model sees (None only for a row a migration
    /// could not give one).
    pub canary: Option<String>,
}

impl StoredTool {
    pub fn meta(&self) -> ToolMeta {
        ToolMeta {
            slug: self.slug.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            model: self.model.clone(),
            requires_file: self.requires_file,
            output: self.output,
            version: self.version,
            updated_at: rfc3339(self.updated_at),
        }
    }

    /// What admins see of a tool (`GET /admin/tools`, `admin tools list --json`): the metadata,
    /// whether it is active and its guard; still no prompt and no canary.
    pub fn admin_view(&self) -> aniate_proto::api::AdminTool {
        aniate_proto::api::AdminTool {
            tool: self.meta(),
            active: self.active,
            guard: self.guard,
            fallbacks: self.fallbacks.clone(),
        }
    }

    fn from_row(row: &AnyRow) -> DbResult<StoredTool> {
        let output: String = row.try_get("output")?;
        Ok(StoredTool {
            slug: row.try_get("slug")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            system_prompt: row.try_get("system_prompt")?,
            model: row.try_get("model")?,
            fallbacks: super::parse_model_list(&row.try_get::<String, _>("fallbacks")?)?,
            requires_file: row.try_get::<i64, _>("requires_file")? != 0,
            output: output.parse().map_err(DbError::Corrupt)?,
            active: row.try_get::<i64, _>("active")? != 0,
            version: row.try_get("version")?,
            updated_at: row.try_get("updated_at")?,
            guard: row.try_get::<String, _>("guard")?.parse().map_err(DbError::Corrupt)?,
            canary: row.try_get("canary")?,
        })
    }
}

const TOOL_COLUMNS: &str = "slug, name, description, system_prompt, model, requires_file, output, active, version, updated_at, guard, canary, fallbacks";

/// One recorded version of a tool, prompt included; like [`StoredTool`], not `Serialize`:
/// [`StoredToolVersion::info`] drops the prompt, and only the admin-only
/// `GET /admin/tools/{slug}/versions/{n}` serves [`StoredToolVersion::with_prompt`].
#[derive(Debug, Clone)]
pub struct StoredToolVersion {
    pub slug: String,
    pub version: i64,
    pub name: String,
    pub description: String,
    pub system_prompt: String,
    pub model: String,
    pub requires_file: bool,
    pub output: OutputKind,
    pub active: bool,
    pub guard: GuardMode,
    /// `None` for a version recorded before versions kept their fallbacks (migration 0011).
    pub fallbacks: Option<Vec<String>>,
    pub author: String,
    pub message: String,
    pub created_at: i64,
}

impl StoredToolVersion {
    pub fn info(&self) -> ToolVersionInfo {
        ToolVersionInfo {
            version: self.version,
            name: self.name.clone(),
            description: self.description.clone(),
            model: self.model.clone(),
            requires_file: self.requires_file,
            output: self.output,
            active: self.active,
            guard: self.guard,
            fallbacks: self.fallbacks.clone(),
            author: self.author.clone(),
            message: self.message.clone(),
            created_at: rfc3339(self.created_at),
        }
    }

    /// The version with its prompt: for admins only.
    pub fn with_prompt(&self) -> ToolVersion {
        ToolVersion { info: self.info(), system_prompt: self.system_prompt.clone() }
    }

    fn from_row(row: &AnyRow) -> DbResult<StoredToolVersion> {
        let output: String = row.try_get("output")?;
        Ok(StoredToolVersion {
            slug: row.try_get("slug")?,
            version: row.try_get("version")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            system_prompt: row.try_get("system_prompt")?,
            model: row.try_get("model")?,
            requires_file: row.try_get::<i64, _>("requires_file")? != 0,
            output: output.parse().map_err(DbError::Corrupt)?,
            active: row.try_get::<i64, _>("active")? != 0,
            guard: row.try_get::<String, _>("guard")?.parse().map_err(DbError::Corrupt)?,
            fallbacks: row
                .try_get::<Option<String>, _>("fallbacks")?
                .as_deref()
                .map(super::parse_model_list)
                .transpose()?,
            author: row.try_get("author")?,
            message: row.try_get("message")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

const VERSION_COLUMNS: &str = "slug, version, name, description, system_prompt, model, requires_file, output, active, guard, fallbacks, author, message, created_at";

/// Keeps the tool's current state as its version row, inside the transaction that changed it,
/// so a version is never lost and never recorded for a change that did not commit.
async fn record_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    slug: &str,
    author: &str,
    message: &str,
    now: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO tool_versions (slug, version, name, description, system_prompt, model, requires_file, output, active, guard, fallbacks, author, message, created_at) \
         SELECT slug, version, name, description, system_prompt, model, requires_file, output, active, guard, fallbacks, $2, $3, $4 \
         FROM global_tools WHERE slug = $1",
    )
    .bind(slug)
    .bind(author)
    .bind(message)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A new tool's canary: 16 random hex digits, the shape the migration gives older tools.
fn new_canary() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

impl Db {
    /// Active tools, by slug.
    pub async fn active_tools(&self) -> DbResult<Vec<StoredTool>> {
        let sql = format!("SELECT {TOOL_COLUMNS} FROM global_tools WHERE active = 1 ORDER BY slug");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(StoredTool::from_row).collect()
    }

    /// Every tool, active or not, by slug (admin listing).
    pub async fn all_tools(&self) -> DbResult<Vec<StoredTool>> {
        let sql = format!("SELECT {TOOL_COLUMNS} FROM global_tools ORDER BY slug");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(StoredTool::from_row).collect()
    }

    /// One tool by slug, if it exists and is active: from the cache (see `cache`), else one
    /// query. Every tool run asks.
    pub async fn active_tool(&self, slug: &str) -> DbResult<Option<StoredTool>> {
        let caching = self.caching();
        if caching && let Some(tool) = self.caches.tools.get(slug) {
            return Ok(Some(tool));
        }
        let epoch = self.caches.tools.epoch();
        let sql = format!("SELECT {TOOL_COLUMNS} FROM global_tools WHERE slug = $1 AND active = 1");
        let row = sqlx::query(&sql).bind(slug).fetch_optional(&self.pool).await?;
        let tool = row.as_ref().map(StoredTool::from_row).transpose()?;
        if caching && let Some(tool) = &tool {
            self.caches.tools.insert(epoch, slug.to_owned(), tool.clone());
        }
        Ok(tool)
    }

    /// Creates or updates a tool in one statement, so replicas pushing at once cannot lose an
    /// update. The version goes up by one on every real change and stays when nothing changed.
    /// Every new version is kept in `tool_versions`, in the same transaction, with its `author`
    /// and the tool's `message`.
    pub async fn upsert_tool(&self, tool: &ToolUpsert, author: &str) -> DbResult<(StoredTool, UpsertOutcome)> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "INSERT INTO global_tools (slug, name, description, system_prompt, model, requires_file, output, active, version, created_at, updated_at, guard, canary, fallbacks) \
             VALUES ($1, $2, $3, $4, COALESCE($5, '{DEFAULT_MODEL}'), COALESCE($6, 0), COALESCE($7, 'text'), COALESCE($8, 1), 1, $9, $9, COALESCE($10, 'block'), $11, COALESCE($12, '[]')) \
             ON CONFLICT (slug) DO UPDATE SET \
                name = excluded.name, description = excluded.description, system_prompt = excluded.system_prompt, \
                model = COALESCE($5, global_tools.model), \
                requires_file = COALESCE($6, global_tools.requires_file), \
                output = COALESCE($7, global_tools.output), \
                active = COALESCE($8, global_tools.active), \
                guard = COALESCE($10, global_tools.guard), \
                fallbacks = COALESCE($12, global_tools.fallbacks), \
                version = global_tools.version + 1, updated_at = $9 \
             WHERE global_tools.name <> excluded.name OR global_tools.description <> excluded.description \
                OR global_tools.system_prompt <> excluded.system_prompt \
                OR global_tools.model <> COALESCE($5, global_tools.model) \
                OR global_tools.requires_file <> COALESCE($6, global_tools.requires_file) \
                OR global_tools.output <> COALESCE($7, global_tools.output) \
                OR global_tools.active <> COALESCE($8, global_tools.active) \
                OR global_tools.guard <> COALESCE($10, global_tools.guard) \
                OR global_tools.fallbacks <> COALESCE($12, global_tools.fallbacks) \
             RETURNING {TOOL_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&tool.slug)
            .bind(&tool.name)
            .bind(&tool.description)
            .bind(&tool.system_prompt)
            .bind(tool.model.as_deref())
            .bind(tool.requires_file.map(i64::from))
            .bind(tool.output.map(OutputKind::as_str))
            .bind(tool.active.map(i64::from))
            .bind(now)
            .bind(tool.guard.map(GuardMode::as_str))
            .bind(new_canary())
            .bind(tool.fallbacks.as_deref().map(super::model_list_json))
            .fetch_optional(&mut *tx)
            .await?;
        let result = match row {
            Some(row) => {
                let stored = StoredTool::from_row(&row)?;
                record_version(&mut tx, &stored.slug, author, tool.message.as_deref().unwrap_or(""), now).await?;
                // Versions only go up, so version 1 means this statement inserted the row.
                let outcome = if stored.version == 1 { UpsertOutcome::Created } else { UpsertOutcome::Updated };
                (stored, outcome)
            }
            None => {
                let sql = format!("SELECT {TOOL_COLUMNS} FROM global_tools WHERE slug = $1");
                let row = sqlx::query(&sql).bind(&tool.slug).fetch_one(&mut *tx).await?;
                (StoredTool::from_row(&row)?, UpsertOutcome::Unchanged)
            }
        };
        tx.commit().await?;
        if result.1 != UpsertOutcome::Unchanged {
            self.invalidate(Generation::Tools).await?;
        }
        Ok(result)
    }

    /// Makes a new version of `slug` equal to its version `version` (prompt, model, fallbacks,
    /// description, output, guard, active), through [`Db::upsert_tool`]. `None` when the tool or that version
    /// does not exist; `Unchanged` when the tool already is in that state.
    pub async fn rollback_tool(
        &self,
        slug: &str,
        version: i64,
        author: &str,
        message: Option<&str>,
    ) -> DbResult<Option<(StoredTool, UpsertOutcome)>> {
        let Some(old) = self.tool_version(slug, version).await? else { return Ok(None) };
        let message = match message {
            Some(message) if !message.is_empty() => message.to_owned(),
            _ => format!("rollback to version {version}"),
        };
        let upsert = ToolUpsert {
            slug: old.slug,
            name: old.name,
            description: old.description,
            system_prompt: old.system_prompt,
            model: Some(old.model),
            requires_file: Some(old.requires_file),
            output: Some(old.output),
            active: Some(old.active),
            guard: Some(old.guard),
            message: Some(message),
            // A version from before versions kept fallbacks (None) keeps the current list.
            fallbacks: old.fallbacks,
        };
        self.upsert_tool(&upsert, author).await.map(Some)
    }

    /// Every recorded version of a tool, newest first; empty when there is no such tool.
    pub async fn tool_versions(&self, slug: &str) -> DbResult<Vec<StoredToolVersion>> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM tool_versions WHERE slug = $1 ORDER BY version DESC");
        let rows = sqlx::query(&sql).bind(slug).fetch_all(&self.pool).await?;
        rows.iter().map(StoredToolVersion::from_row).collect()
    }

    /// One version of a tool, prompt included.
    pub async fn tool_version(&self, slug: &str, version: i64) -> DbResult<Option<StoredToolVersion>> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM tool_versions WHERE slug = $1 AND version = $2");
        let row = sqlx::query(&sql).bind(slug).bind(version).fetch_optional(&self.pool).await?;
        row.as_ref().map(StoredToolVersion::from_row).transpose()
    }

    /// Any tool by slug, active or not.
    pub async fn tool(&self, slug: &str) -> DbResult<Option<StoredTool>> {
        let sql = format!("SELECT {TOOL_COLUMNS} FROM global_tools WHERE slug = $1");
        let row = sqlx::query(&sql).bind(slug).fetch_optional(&self.pool).await?;
        row.as_ref().map(StoredTool::from_row).transpose()
    }

    /// Deactivates a tool (bumping its version, so clients see the change, and keeping the
    /// version); false when there is no such tool. Deactivating an inactive tool changes nothing.
    pub async fn deactivate_tool(&self, slug: &str, author: &str, message: Option<&str>) -> DbResult<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE global_tools SET active = 0, version = version + 1, updated_at = $1 WHERE slug = $2 AND active = 1",
        )
        .bind(now)
        .bind(slug)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            record_version(&mut tx, slug, author, message.unwrap_or("deactivated"), now).await?;
        }
        let exists: Option<(i64,)> = sqlx::query_as("SELECT version FROM global_tools WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        if changed > 0 {
            self.invalidate(Generation::Tools).await?;
        }
        Ok(exists.is_some())
    }

    /// Inserts the seed tools the first time this database is opened, and never again: an
    /// admin who deletes or edits a seed tool keeps their change.
    pub(super) async fn seed_tools_once(&self) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        let first = sqlx::query(
            "INSERT INTO server_meta (key, value) VALUES ('seeded_at', $1) ON CONFLICT (key) DO NOTHING RETURNING key",
        )
        .bind(now_ms().to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if first.is_some() {
            let now = now_ms();
            for seed in crate::tooldef::seed_tools() {
                sqlx::query(
                    "INSERT INTO global_tools (slug, name, description, system_prompt, model, requires_file, output, active, version, created_at, updated_at, guard, canary, fallbacks) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 1, $8, $8, $9, $10, $11) ON CONFLICT (slug) DO NOTHING",
                )
                .bind(&seed.slug)
                .bind(&seed.name)
                .bind(&seed.description)
                .bind(&seed.system_prompt)
                .bind(seed.model.as_deref().unwrap_or(DEFAULT_MODEL))
                .bind(i64::from(seed.requires_file.unwrap_or(false)))
                .bind(seed.output.unwrap_or(OutputKind::Text).as_str())
                .bind(now)
                .bind(seed.guard.unwrap_or_default().as_str())
                .bind(new_canary())
                .bind(super::model_list_json(seed.fallbacks.as_deref().unwrap_or_default()))
                .execute(&mut *tx)
                .await?;
                record_version(&mut tx, &seed.slug, "seed", "", now).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
