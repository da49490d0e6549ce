//! The `ant-server` command line: `serve` and `admin …`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The Aniate server: the tool registry with its secret prompts, accounts and API tokens, and
/// the streaming tool runs against an OpenAI-compatible model provider.
///
/// Every flag can also be set by the environment variable shown next to it.
#[derive(Debug, Parser)]
#[command(name = "ant-server", version, propagate_version = true)]
#[command(after_long_help = "Examples:
  # Serve on SQLite in the default data dir, with Groq as the provider
  ANIATE_UPSTREAM_API_KEY=gsk_... ant-server serve

  # Create the first admin, then push a tool
  echo 'a-long-password' | ant-server admin create-user --email ada@example.com --admin --password-stdin
  ant-server admin tools push tools/explain-sql.toml

  # Serve on PostgreSQL, HTTPS, all interfaces
  ant-server serve --bind 0.0.0.0:8443 --database-url postgres://aniate@db/aniate \\
      --tls-cert cert.pem --tls-key key.pem")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (migrations run at start; the seed tools are added to a new database)
    Serve(Box<ServeArgs>),
    /// Administer users and tools directly in the database
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Write man pages for ant-server and its subcommands into a directory
    #[command(hide = true)]
    Manpages { dir: PathBuf },
}

#[derive(Debug, Args, Clone)]
pub struct DbArgs {
    /// Database URL: `sqlite://PATH?mode=rwc` or `postgres://USER@HOST/DB` [default: a SQLite
    /// file in the data dir]
    #[arg(long, env = "ANIATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where the server keeps its SQLite database and files [default:
    /// $XDG_DATA_HOME/aniate-server or ~/.local/share/aniate-server]
    #[arg(long, env = "ANIATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Address to listen on (port 0 picks a free port; the chosen address is printed)
    #[arg(long, env = "ANIATE_BIND", default_value = "127.0.0.1:8787")]
    pub bind: String,

    /// OpenAI-compatible base URL of the model provider (Groq, OpenAI, Ollama, vLLM, LiteLLM…)
    #[arg(long, env = "ANIATE_UPSTREAM_URL", default_value = crate::upstream::DEFAULT_UPSTREAM_URL)]
    pub upstream_url: String,

    /// API key for the provider, sent as a Bearer token
    #[arg(long, env = "ANIATE_UPSTREAM_API_KEY", hide_env_values = true)]
    pub upstream_api_key: Option<String>,

    /// TOML catalogue of named providers, their key variables and model prices (see
    /// docs/server.md); replaces --upstream-url and --upstream-api-key
    #[arg(long, env = "ANIATE_PROVIDERS")]
    pub providers: Option<PathBuf>,

    /// Milliseconds to wait for a TCP/TLS connection to the provider
    #[arg(long, env = "ANIATE_UPSTREAM_CONNECT_TIMEOUT_MS", default_value_t = 5_000)]
    pub upstream_connect_timeout_ms: u64,

    /// Milliseconds from sending a request to the provider's first token (then: 504)
    #[arg(long, env = "ANIATE_FIRST_TOKEN_TIMEOUT_MS", default_value_t = 30_000)]
    pub first_token_timeout_ms: u64,

    /// Longest silence in milliseconds between two chunks of a provider stream
    #[arg(long, env = "ANIATE_STREAM_IDLE_TIMEOUT_MS", default_value_t = 30_000)]
    pub stream_idle_timeout_ms: u64,

    /// Largest `content` of a tool run, in bytes (then: 413)
    #[arg(long, env = "ANIATE_MAX_CONTENT_BYTES", default_value_t = 1024 * 1024)]
    pub max_content_bytes: usize,

    /// Largest stored file (POST /files), in bytes (then: 413)
    #[arg(long, env = "ANIATE_MAX_FILE_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_file_bytes: usize,

    /// Where stored files' content lives [default: DATA_DIR/files]; replicas must share it
    #[arg(long, env = "ANIATE_FILES_DIR")]
    pub files_dir: Option<PathBuf>,

    /// Redis URL: share rate limits between replicas (fails open to per-replica limits)
    #[arg(long, env = "ANIATE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of the Redis keys, to share one Redis between deployments
    #[arg(long, env = "ANIATE_REDIS_PREFIX", default_value = "aniate")]
    pub redis_prefix: String,

    /// Requests a minute allowed on the default plan (`free`), replacing the plan's own limit
    #[arg(long, env = "ANIATE_RATE_LIMIT_PER_MIN")]
    pub rate_limit_per_min: Option<u32>,

    /// Prompt guard: this many consecutive words of a private prompt in an answer stop it (4 to 32)
    #[arg(long, env = "ANIATE_GUARD_WORDS", default_value_t = crate::guard::DEFAULT_NGRAM_WORDS as u8,
        value_parser = clap::value_parser!(u8).range(4..=32))]
    pub guard_words: u8,
    /// Days an API token lives unused: each use moves its expiry to that many days later
    #[arg(long, env = "ANIATE_TOKEN_TTL_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub token_ttl_days: u32,

    /// Sign-ups allowed from one client address in an hour (then: 429)
    #[arg(long, env = "ANIATE_SIGNUPS_PER_HOUR", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub signups_per_hour: u32,

    /// Milliseconds a client has to send a request's head; also how long a kept-alive HTTP/1.1
    /// connection may wait idle for its next request (then: closed)
    #[arg(long, env = "ANIATE_HEADER_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,

    /// Connections open at once; further clients wait in the listen backlog until one closes
    /// (plain HTTP; with --tls-cert, only the header timeout applies)
    #[arg(long, env = "ANIATE_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Whether anyone may create an account with POST /auth/signup
    #[arg(long, env = "ANIATE_ALLOW_SIGNUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_signup: bool,

    /// Bearer token that lets a non-loopback client (a Prometheus on another host) read
    /// GET /metrics; without it, only loopback clients may, and others get 403
    #[arg(long, env = "ANIATE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// PEM certificate chain: serve HTTPS (HTTP/1.1 and HTTP/2) directly
    #[arg(long, env = "ANIATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert
    #[arg(long, env = "ANIATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Log format on stderr: `text` for people, `json` for log pipelines
    #[arg(long, env = "ANIATE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user; the password is read from the first line of stdin
    CreateUser {
        #[arg(long)]
        email: String,
        /// Make the user an admin
        #[arg(long)]
        admin: bool,
        /// Read the password from stdin (required: passwords never go on the command line)
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Create an API token for a user and print it (shown once, stored hashed)
    CreateToken {
        #[arg(long)]
        email: String,
        /// A name to recognise the token by, e.g. `ci`
        #[arg(long, default_value = "admin-cli")]
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Put a user on a plan (`ant-server admin plans` lists them)
    SetPlan {
        #[arg(long)]
        email: String,
        #[arg(long)]
        plan: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Create a plan, or change a plan's limits (running servers pick it up within 10 s)
    DefinePlan {
        /// The plan's name: letters, digits, `-` and `_`
        #[arg(long)]
        name: String,
        #[arg(long)]
        requests_per_minute: u32,
        #[arg(long)]
        tokens_per_month: u64,
        /// The most bytes a user may store in files (default 100 MiB)
        #[arg(long, default_value_t = crate::db::DEFAULT_MAX_STORED_BYTES)]
        max_stored_bytes: u64,
        /// The most files a user may store (default 1000)
        #[arg(long, default_value_t = crate::db::DEFAULT_MAX_STORED_FILES)]
        max_stored_files: u64,
        /// Models the plan's brews may use, as glob patterns, comma-separated
        /// (`groq/*,local/llama3.1`) [default: any]
        #[arg(long, value_delimiter = ',')]
        allowed_models: Option<Vec<String>>,
        /// The most a user may spend in a month at the catalogue's prices, in US dollars
        /// (e.g. 5 or 0.50) [default: no limit]
        #[arg(long)]
        cost_limit_usd: Option<f64>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List the plans with their limits
    Plans {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Everyone's usage in a period, by user and tool (for invoicing)
    Usage {
        /// Start, a date or RFC 3339 time [default: the start of this month]
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive) [default: now]
        #[arg(long)]
        to: Option<String>,
        /// CSV instead of a table
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Disable an account: its tokens and logins get 403 `account_disabled` until enable-user
    DisableUser {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Enable a disabled account again; its unexpired, unrevoked tokens work again
    EnableUser {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Make a user an admin or a plain user again
    SetRole {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = ["user", "admin"])]
        role: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List, push or deactivate tools
    #[command(subcommand)]
    Tools(ToolsCommand),
}

#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// List every tool, active or not (prompts are not shown)
    List {
        /// One JSON document instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Create or update a tool from a TOML file (slug, name, description, system_prompt,
    /// and optionally model, requires_file, output, active)
    Push {
        file: PathBuf,
        /// One line on why, kept with the version this push makes
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// A tool's versions, newest first: who changed it, when and why (prompts are not shown)
    History {
        slug: String,
        /// One JSON document instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// What changed between two versions of a tool, prompt included (a unified diff)
    Diff {
        slug: String,
        /// The older version
        from: i64,
        /// The newer version
        to: i64,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Make a new version of a tool equal to an older one (clients see a newer version)
    Rollback {
        slug: String,
        /// The version to go back to
        #[arg(value_name = "VERSION")]
        target: i64,
        /// One line on why [default: rollback to version N]
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Deactivate a tool: it disappears from /tools and can no longer run
    Deactivate {
        slug: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

impl DbArgs {
    /// The database URL, defaulting to `aniate.db` in the data dir (created if missing).
    pub fn resolve_url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        Ok(crate::db::default_sqlite_url(&self.resolve_data_dir()?))
    }

    /// The data dir, created (0700) if missing.
    pub fn resolve_data_dir(&self) -> anyhow::Result<PathBuf> {
        let data_dir = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir()?,
        };
        crate::private_files::create_private_dir(&data_dir)
            .map_err(|err| anyhow::anyhow!("cannot create the data dir {}: {err}", data_dir.display()))?;
        Ok(data_dir)
    }
}

/// `ant-server manpages DIR`: `ant-server.1` and one page per subcommand (clap_mangen).
pub fn write_manpages(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let server = Cli::command();
    let mut pages = vec![("ant-server".to_owned(), server.clone())];
    for sub in server.get_subcommands().filter(|sub| !sub.is_hide_set() && sub.get_name() != "help") {
        let name = format!("ant-server-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, command) in &pages {
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone()).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
    }
    println!("wrote {} man pages to {}", pages.len(), dir.display());
    Ok(())
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("aniate-server"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow::anyhow!("HOME is not set; pass --data-dir or --database-url"))?;
    Ok(PathBuf::from(home).join(".local/share/aniate-server"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
