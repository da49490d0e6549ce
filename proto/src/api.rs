//! HTTP request and response bodies.
//!
//! A body a client sends is `Serialize + Deserialize` so that clients can build it and the
//! server can read it. Where a body carries a system prompt ([`ToolUpsert`]), it only ever goes
//! from an admin to the server, never back.

use serde::{Deserialize, Serialize};

use crate::tool::OutputKind;

/// `POST /tool/{slug}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// `POST /auth/signup` and `POST /auth/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

/// The answer to signup and login: an opaque API token, shown once and stored hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
}

/// A user's role. Roles live in the server's database; nothing is hard-coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
pub struct Me {
    pub email: String,
    pub role: Role,
    pub plan: String,
}

/// `POST /admin/tools`: create or update a tool. Missing optional fields keep their current
/// value on update and take their default on create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolUpsert {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub system_prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_file: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` or `not_ready`.
    pub status: String,
    pub version: String,
    /// Whether the database answered a trivial query just now.
    pub database: bool,
}

/// What `POST /admin/tools` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpsertOutcome {
    Created,
    Updated,
    /// The pushed tool equals the stored one; its version was not bumped.
    Unchanged,
}

/// The answer to `POST /admin/tools`: the tool's public metadata (never its prompt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolUpsertResponse {
    pub outcome: UpsertOutcome,
    pub tool: crate::tool::ToolMeta,
}
