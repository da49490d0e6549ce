//! The Aniate server: the brain of the system.
//!
//! It alone holds the tools' system prompts, picks the model, calls the LLM provider and
//! streams answers back; it keeps users, API tokens and usage.
//!
//! Layout:
//! - [`cli`]: flags of `ant-server serve` and `ant-server admin …`.
//! - [`serve`]: start-up, listening (HTTP or HTTPS), graceful shutdown.
//! - [`http`]: routes, middleware and handlers; [`http::run`] is the streamed tool run.
//! - [`upstream`]: the OpenAI-compatible provider client.
//! - [`providers`]: the provider catalogue and the router (fallbacks, cooldowns, prices).
//! - [`prompt`], [`output`]: what goes to the model, and what its answer becomes per output kind.
//! - [`guard`]: the prompt guard, which stops an answer that repeats its run's private prompt.
//! - [`db`]: SQLite/PostgreSQL through `sqlx::Any`; the only module that knows SQL.
//! - [`auth`]: passwords (Argon2id), API tokens (stored as SHA-256), the `AuthUser` extractor.
//! - [`tooldef`]: tool TOML files, the seed tools, tool validation.
//! - [`tooldiff`]: what changed between two versions of a tool (admin CLI and console).
//! - [`private_files`]: the umask and modes that keep the server's files its user's alone.
//! - [`throttle`]: login failures and sign-ups, per account and client address.
//! - [`console`]: the web console at `/console`, server-rendered HTML over the same actions.
//! - [`admin_cli`], [`metrics`], [`telemetry`].
//!
//! **Architecture Invariant:** a system prompt only ever travels from the database to the
//! provider. The type that carries it, [`db::StoredTool`], is not `Serialize`.

pub mod admin_cli;
pub mod auth;
pub mod cli;
pub mod console;
pub mod db;
pub mod guard;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod output;
pub mod private_files;
pub mod prompt;
pub mod providers;
pub mod serve;
pub mod telemetry;
pub mod throttle;
pub mod tooldef;
pub mod tooldiff;
pub mod upstream;
