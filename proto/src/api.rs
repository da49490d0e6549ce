//! HTTP request and response bodies.
//!
//! A body a client sends is `Serialize + Deserialize` so that clients can build it and the
//! server can read it. Where a body carries a system prompt ([`ToolUpsert`]), it only ever goes
//! from an admin to the server; the one way back is [`ToolVersion`], served to admins only.

use serde::{Deserialize, Serialize};

use crate::tool::OutputKind;

/// `POST /tool/{slug}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunToolRequest {
    /// The file or text the tool works on. May be empty for tools that do not require a file.
    #[serde(default)]
    pub content: String,
    /// What the user wants, in their words (`ant fix -i "..."`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// The file's name, as a hint for the model (never read by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The language, as a hint for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// A file stored with `POST /files` to use as `content` (and, unless given, `filename`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<i64>,
}

/// `POST /auth/signup` and `POST /auth/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Credentials {
    pub email: String,
    /// At signup: at least 10 characters (and at most 1024 bytes), not only whitespace, and not
    /// easy to guess.
    #[cfg_attr(feature = "openapi", schema(min_length = 8))]
    pub password: String,
}

/// The answer to signup and login: an opaque API token, shown once and stored hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    pub token: String,
}

/// A user's role. Roles live in the server's database; nothing is hard-coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// `GET /me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    pub email: String,
    pub role: Role,
    pub plan: String,
}

/// `POST /admin/tools`: create or update a tool. Missing optional fields keep their current
/// value on update and take their default on create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolUpsert {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z0-9][a-z0-9-]{0,31}$"))]
    pub slug: String,
    /// One line, not blank.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 80))]
    pub name: String,
    /// One line, not blank.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 300))]
    pub description: String,
    /// Not blank; at most 64 KiB.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub system_prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_file: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// What the prompt guard does when an answer repeats this prompt; `block` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<crate::tool::GuardMode>,
    /// Models (`provider/model`) tried in order when `model`'s provider fails before the first
    /// token; absent keeps the stored list, `[]` clears it (then the catalogue's apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<Vec<String>>,
    /// One line on why, kept with the version this push makes (`ant-server admin tools push --message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub message: Option<String>,
}

/// A line of `GET /admin/tools/{slug}/versions`: one version of a tool, without its prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolVersionInfo {
    pub version: i64,
    pub name: String,
    pub description: String,
    pub model: String,
    pub requires_file: bool,
    pub output: OutputKind,
    pub active: bool,
    pub guard: crate::tool::GuardMode,
    /// The models tried when `model`'s provider fails before the first token; absent for a
    /// version recorded before versions kept them (a rollback to it keeps the current list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<Vec<String>>,
    /// Who made this version: an admin's email, `admin-cli`, `seed`, or `upgrade` for the state
    /// a tool had when version history began.
    pub author: String,
    /// Why, in one line; empty when nobody said.
    pub message: String,
    /// When, RFC 3339.
    pub created_at: String,
}

/// `GET /admin/tools/{slug}/versions/{n}`: one version with its prompt, for admins only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolVersion {
    #[serde(flatten)]
    pub info: ToolVersionInfo,
    pub system_prompt: String,
}

/// `POST /admin/tools/{slug}/rollback`: make a new version equal to an older one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RollbackRequest {
    /// The version to go back to.
    pub version: i64,
    /// Why; `rollback to version N` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub message: Option<String>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` or `not_ready`.
    pub status: String,
    pub version: String,
    /// Whether the database answered a trivial query just now.
    pub database: bool,
}

/// A line of `GET /admin/tools`: a tool's public metadata and whether it is active (never its
/// prompt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminTool {
    #[serde(flatten)]
    pub tool: crate::tool::ToolMeta,
    /// Inactive tools are not in `GET /tools` and cannot be run.
    pub active: bool,
    /// The tool's prompt guard.
    pub guard: crate::tool::GuardMode,
    /// The tool's fallback models, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
}

/// What `POST /admin/tools` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum UpsertOutcome {
    Created,
    Updated,
    /// The pushed tool equals the stored one; its version was not bumped.
    Unchanged,
}

/// The answer to `POST /admin/tools`: the tool's public metadata (never its prompt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolUpsertResponse {
    pub outcome: UpsertOutcome,
    pub tool: crate::tool::ToolMeta,
}

/// Who can chat with a brew.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Its owner only.
    #[default]
    Private,
    /// Every user (admins only may publish one); the prompt stays the owner's.
    Global,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Global => "global",
        }
    }
}

/// `POST /assistants`: a new brew (a personal assistant: a system prompt and a model).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssistantCreate {
    /// One line, not blank.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 80))]
    pub name: String,
    /// Defaults to a slug made from the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z0-9][a-z0-9-]{0,31}$"))]
    pub slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 300))]
    pub description: Option<String>,
    /// Not blank; at most 64 KiB.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub system_prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    /// Models tried in order when `model`'s provider fails before the first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<Vec<String>>,
}

/// `PATCH /assistants/{id}`: the fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssistantPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 80))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 300))]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    /// Models tried in order when `model`'s provider fails before the first token; `[]` clears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<Vec<String>>,
}

/// A brew as the API shows it. `system_prompt` is there for its owner only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assistant {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub model: String,
    /// Models tried in order when `model`'s provider fails before the first token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    pub visibility: Visibility,
    /// Whether the caller owns it (and so may edit it and read its prompt).
    pub mine: bool,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
}

/// Who said a chat message. The system prompt is the server's business, so clients cannot
/// send `system` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    User,
    Assistant,
}

impl ChatRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

/// `POST /chat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatRequest {
    /// A brew, by id or slug; without one, Aniate's default assistant answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant: Option<String>,
    /// At least one; at most 200, whose contents total at most the content limit (else 413).
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub messages: Vec<ChatMessage>,
}

/// A stored file's metadata (`/files`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileMeta {
    pub id: i64,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageTotals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// What the runs cost at the catalogue's prices, in millionths of a US dollar (unpriced
    /// models count 0; absent from servers before provider catalogues).
    #[serde(default)]
    pub cost_micro_usd: u64,
    /// Runs of models without a price in the catalogue (their cost is 0).
    #[serde(default)]
    pub unpriced: u64,
}

/// Usage of one model at one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelUsage {
    pub provider: String,
    pub model: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolUsage {
    /// A tool slug, or `chat` / `chat:<brew>`.
    pub tool: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
    /// Runs the prompt guard stopped (usage status `blocked`): who is probing for prompts.
    #[serde(default)]
    pub blocked: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DayUsage {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// `GET /usage`: the caller's usage this month, and what their plan leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageReport {
    pub plan: String,
    pub requests_per_minute: u32,
    pub tokens_per_month: u64,
    /// Start of the current period (the month, UTC), RFC 3339.
    pub period_start: String,
    /// When the monthly quota resets, RFC 3339.
    pub resets_at: String,
    pub tokens_used: u64,
    pub tokens_left: u64,
    pub totals: UsageTotals,
    pub by_tool: Vec<ToolUsage>,
    pub by_day: Vec<DayUsage>,
    /// By provider and model (absent from servers before provider catalogues).
    #[serde(default)]
    pub by_model: Vec<ModelUsage>,
    /// The plan's monthly cost limit in micro-dollars, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_limit_micro_usd: Option<u64>,
    /// Stored files against the plan's storage quota (absent from servers before it).
    #[serde(default)]
    pub storage: StorageUsage,
}

/// What a user stores, and what their plan allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StorageUsage {
    pub stored_bytes: u64,
    pub stored_files: u64,
    pub max_stored_bytes: u64,
    pub max_stored_files: u64,
}

/// One line of `GET /admin/usage`: a user's use of a tool, by one door, in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminUsageRow {
    pub email: String,
    pub plan: String,
    pub tool: String,
    /// The provider and model that answered (absent from servers before provider catalogues).
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub model: String,
    #[serde(flatten)]
    pub totals: UsageTotals,
    /// Runs the prompt guard stopped (usage status `blocked`): who is probing for prompts.
    #[serde(default)]
    pub blocked: u64,
    /// The door the runs came in by: `aniate` (`/tool/{slug}`, `/chat`) or `openai`
    /// (`/v1/chat/completions`); `aniate` from servers before it.
    #[serde(default = "aniate_door")]
    pub via: String,
}

fn aniate_door() -> String {
    "aniate".to_owned()
}
