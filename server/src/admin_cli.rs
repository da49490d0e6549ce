//! `ant-server admin …`: user and tool administration straight against the database, for
//! bootstrapping (the first admin) and for operators with database access.

use std::io::{BufRead, Write};

use aniate_proto::api::{Role, UpsertOutcome};
use anyhow::{Context, bail};

use crate::{
    auth,
    cli::{AdminCommand, DbArgs, ToolsCommand},
    db::{Db, DbError, Plan, redact_url},
};

async fn open(db: &DbArgs) -> anyhow::Result<Db> {
    let url = db.resolve_url()?;
    Db::open(&url).await.with_context(|| format!("cannot open the database {}", redact_url(&url)))
}

/// Runs one admin command, writing its result to `out`.
pub async fn run(command: AdminCommand, stdin: &mut dyn BufRead, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        AdminCommand::CreateUser { email, admin, password_stdin: _, db } => {
            let email =
                auth::normalize_email(&email).with_context(|| format!("`{email}` is not a valid email address"))?;
            let mut password = String::new();
            stdin.read_line(&mut password).context("cannot read the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']).to_owned();
            auth::check_password_rules(&password, &email).map_err(anyhow::Error::msg)?;
            let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
                .await?
                .map_err(|err| anyhow::anyhow!("cannot hash the password: {err}"))?;
            let role = if admin { Role::Admin } else { Role::User };
            let db = open(&db).await?;
            match db.create_user(&email, &hash, role).await {
                Ok(_) => writeln!(out, "created {} {email}", role.as_str())?,
                Err(DbError::Conflict) => bail!("a user with email {email} exists already"),
                Err(err) => return Err(err.into()),
            }
        }
        AdminCommand::CreateToken { email, name, db } => {
            let email =
                auth::normalize_email(&email).with_context(|| format!("`{email}` is not a valid email address"))?;
            let db = open(&db).await?;
            let user = db.user_by_email(&email).await?.with_context(|| format!("no user with email {email}"))?;
            let token = auth::new_token();
            db.create_token(user.id, &auth::hash_token(&token), &name).await?;
            writeln!(out, "{token}")?;
        }
        AdminCommand::SetPlan { email, plan, db } => {
            let db = open(&db).await?;
            if db.plan(&plan).await?.is_none() {
                let known: Vec<String> = db.plans().await?.into_iter().map(|p| p.name).collect();
                bail!("unknown plan `{plan}` (plans: {})", known.join(", "));
            }
            if !db.set_plan(&email.trim().to_lowercase(), &plan).await? {
                bail!("no user with email {email}");
            }
            writeln!(out, "{email} is now on the {plan} plan")?;
        }
        AdminCommand::DefinePlan {
            name,
            requests_per_minute,
            tokens_per_month,
            max_stored_bytes,
            max_stored_files,
            allowed_models,
            cost_limit_usd,
            db,
        } => {
            check_plan_name(&name).map_err(anyhow::Error::msg)?;
            let cost_micro_usd_per_month = cost_limit_usd
                .map(cost_limit_micro_usd)
                .transpose()
                .map_err(|err| anyhow::anyhow!("--cost-limit-usd: {err}"))?;
            let allowed_models = allowed_models
                .map(allowed_model_patterns)
                .transpose()
                .map_err(|err| anyhow::anyhow!("--allowed-models: {err}"))?;
            let db = open(&db).await?;
            db.upsert_plan(&Plan {
                name: name.clone(),
                requests_per_minute,
                tokens_per_month,
                max_stored_bytes,
                max_stored_files,
                allowed_models: allowed_models.clone(),
                cost_micro_usd_per_month,
            })
            .await?;
            let cost = cost_micro_usd_per_month
                .map_or_else(|| "no cost limit".to_owned(), |c| format!("at most {} a month", usd(c)));
            let models = allowed_models.map_or_else(|| "any model".to_owned(), |m| format!("models {}", m.join(", ")));
            writeln!(
                out,
                "plan {name}: {requests_per_minute} requests a minute, {tokens_per_month} tokens a month, {cost}, {models}, \
                 {max_stored_bytes} bytes in at most {max_stored_files} stored files"
            )?;
        }
        AdminCommand::Plans { db } => {
            let db = open(&db).await?;
            writeln!(out, "{:<12} {:>12} {:>16} {:>12}  MODELS", "PLAN", "REQ/MINUTE", "TOKENS/MONTH", "COST/MONTH")?;
            for plan in db.plans().await? {
                writeln!(
                    out,
                    "{:<12} {:>12} {:>16} {:>12}  {}",
                    plan.name,
                    plan.requests_per_minute,
                    plan.tokens_per_month,
                    plan.cost_micro_usd_per_month.map_or_else(|| "-".to_owned(), usd),
                    plan.allowed_models.map_or_else(|| "*".to_owned(), |m| m.join(","))
                )?;
            }
        }
        AdminCommand::Usage { from, to, csv, db } => {
            let parse = |text: &Option<String>, default: i64, what: &str| -> anyhow::Result<i64> {
                match text {
                    Some(text) => crate::http::usage::parse_time(text)
                        .with_context(|| format!("--{what}: `{text}` is not a date or RFC 3339 time")),
                    None => Ok(default),
                }
            };
            let now = crate::db::now_ms();
            let from = parse(&from, crate::limits::month_bounds(now).0, "from")?;
            let to = parse(&to, now + 1, "to")?;
            let db = open(&db).await?;
            let rows = db.admin_usage(from, to).await?;
            if csv {
                writeln!(
                    out,
                    // New columns go at the end, so scripts reading the older ones by position keep working.
                    "email,plan,tool,requests,prompt_tokens,completion_tokens,blocked,provider,model,cost_usd,unpriced,via"
                )?;
                for row in &rows {
                    writeln!(
                        out,
                        "{},{},{},{},{},{},{},{},{},{},{},{}",
                        csv_field(&row.email),
                        csv_field(&row.plan),
                        csv_field(&row.tool),
                        row.totals.requests,
                        row.totals.prompt_tokens,
                        row.totals.completion_tokens,
                        row.blocked,
                        csv_field(&row.provider),
                        csv_field(&row.model),
                        usd_plain(row.totals.cost_micro_usd),
                        row.totals.unpriced,
                        csv_field(&row.via),
                    )?;
                }
            } else {
                writeln!(
                    out,
                    "{:<32} {:<8} {:<20} {:<36} {:>9} {:>12} {:>12} {:>12} {:>8} {:<6}",
                    "EMAIL", "PLAN", "TOOL", "MODEL", "REQUESTS", "PROMPT", "COMPLETION", "COST", "BLOCKED", "VIA"
                )?;
                for row in &rows {
                    // An unpriced model's runs cost 0 here: marked so nobody invoices them as free.
                    let cost = if row.totals.unpriced > 0 {
                        format!("{} (unpriced)", usd(row.totals.cost_micro_usd))
                    } else {
                        usd(row.totals.cost_micro_usd)
                    };
                    writeln!(
                        out,
                        "{:<32} {:<8} {:<20} {:<36} {:>9} {:>12} {:>12} {:>12} {:>8} {:<6}",
                        row.email,
                        row.plan,
                        row.tool,
                        format!("{}/{}", row.provider, row.model),
                        row.totals.requests,
                        row.totals.prompt_tokens,
                        row.totals.completion_tokens,
                        cost,
                        row.blocked,
                        row.via
                    )?;
                }
            }
        }
        AdminCommand::DisableUser { email, db } => set_disabled(&db, &email, true, out).await?,
        AdminCommand::EnableUser { email, db } => set_disabled(&db, &email, false, out).await?,
        AdminCommand::SetRole { email, role, db } => {
            let role = if role == "admin" { Role::Admin } else { Role::User };
            let db = open(&db).await?;
            if !db.set_role(&email.trim().to_lowercase(), role).await? {
                bail!("no user with email {email}");
            }
            writeln!(out, "{email} is now {}", role.as_str())?;
        }
        AdminCommand::Tools(ToolsCommand::List { json, db }) => {
            let db = open(&db).await?;
            let tools = db.all_tools().await?;
            if json {
                let rows: Vec<_> = tools.iter().map(crate::db::StoredTool::admin_view).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                writeln!(
                    out,
                    "{:<16} {:<8} {:>7}  {:<8} {:<6} {:<22} DESCRIPTION",
                    "SLUG", "OUTPUT", "VERSION", "ACTIVE", "GUARD", "MODEL"
                )?;
                for tool in &tools {
                    writeln!(
                        out,
                        "{:<16} {:<8} {:>7}  {:<8} {:<6} {:<22} {}",
                        tool.slug,
                        tool.output.as_str(),
                        tool.version,
                        if tool.active { "yes" } else { "no" },
                        tool.guard.as_str(),
                        tool.model,
                        tool.description
                    )?;
                }
            }
        }
        AdminCommand::Tools(ToolsCommand::Push { file, message, db }) => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let mut tool =
                crate::tooldef::parse_tool_toml(&text).map_err(|err| anyhow::anyhow!("{}: {err}", file.display()))?;
            crate::tooldef::check_message(message.as_deref()).map_err(|err| anyhow::anyhow!("--message: {err}"))?;
            tool.message = message;
            let db = open(&db).await?;
            let (stored, outcome) = db.upsert_tool(&tool, CLI_AUTHOR).await?;
            writeln!(out, "{} {} (version {})", outcome_verb(outcome), stored.slug, stored.version)?;
        }
        AdminCommand::Tools(ToolsCommand::Deactivate { slug, db }) => {
            let db = open(&db).await?;
            if !db.deactivate_tool(&slug, CLI_AUTHOR, None).await? {
                bail!("no tool `{slug}`");
            }
            writeln!(out, "deactivated {slug}")?;
        }
        AdminCommand::Tools(ToolsCommand::History { slug, json, db }) => {
            let db = open(&db).await?;
            let versions = db.tool_versions(&slug).await?;
            if versions.is_empty() {
                bail!("no tool `{slug}`");
            }
            if json {
                let rows: Vec<_> = versions.iter().map(crate::db::StoredToolVersion::info).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                writeln!(out, "{:>7}  {:<20} {:<24} {:<6} MESSAGE", "VERSION", "WHEN", "AUTHOR", "ACTIVE")?;
                for version in &versions {
                    let info = version.info();
                    let when = info.created_at.get(..19).unwrap_or(&info.created_at).replace('T', " ");
                    writeln!(
                        out,
                        "{:>7}  {:<20} {:<24} {:<6} {}",
                        info.version,
                        when,
                        info.author,
                        if info.active { "yes" } else { "no" },
                        info.message
                    )?;
                }
            }
        }
        AdminCommand::Tools(ToolsCommand::Diff { slug, from, to, db }) => {
            let db = open(&db).await?;
            let versions = [from, to];
            let mut found = Vec::new();
            for version in versions {
                found.push(
                    db.tool_version(&slug, version)
                        .await?
                        .with_context(|| format!("no version {version} of tool `{slug}`"))?,
                );
            }
            write!(out, "{}", crate::tooldiff::unified(&found[0], &found[1]))?;
        }
        AdminCommand::Tools(ToolsCommand::Rollback { slug, target: version, message, db }) => {
            crate::tooldef::check_message(message.as_deref()).map_err(|err| anyhow::anyhow!("--message: {err}"))?;
            let db = open(&db).await?;
            let Some((stored, outcome)) = db.rollback_tool(&slug, version, CLI_AUTHOR, message.as_deref()).await?
            else {
                bail!("no version {version} of tool `{slug}`");
            };
            match outcome {
                UpsertOutcome::Unchanged => {
                    writeln!(out, "unchanged {slug}: version {} already equals version {version}", stored.version)?
                }
                _ => writeln!(out, "rolled back {slug} to version {version} as version {}", stored.version)?,
            }
        }
    }
    Ok(())
}

/// The author of versions made by `ant-server admin`, which runs with database access and no
/// account.
const CLI_AUTHOR: &str = "admin-cli";

fn outcome_verb(outcome: UpsertOutcome) -> &'static str {
    match outcome {
        UpsertOutcome::Created => "created",
        UpsertOutcome::Updated => "updated",
        UpsertOutcome::Unchanged => "unchanged",
    }
}

/// A plan's name: 1 to 32 letters, digits, `-` or `_` (`define-plan` and the console's plans page).
pub fn check_plan_name(name: &str) -> Result<(), String> {
    let valid =
        !name.is_empty() && name.len() <= 32 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid { Ok(()) } else { Err(format!("`{name}` is not a plan name: use 1 to 32 letters, digits, `-` or `_`")) }
}

/// `disable-user` and `enable-user`.
async fn set_disabled(db: &DbArgs, email: &str, disabled: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let db = open(db).await?;
    if !db.set_disabled(&email.trim().to_lowercase(), disabled).await? {
        bail!("no user with email {email}");
    }
    writeln!(out, "{email} is now {}", if disabled { "disabled" } else { "enabled" })?;
    Ok(())
}

/// Quotes a CSV field when it needs it (RFC 4180), and neutralises a formula: a spreadsheet
/// runs a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return (an email like
/// `=HYPERLINK(…)@x.y` is valid), so such a cell gets a leading `'` and is shown as text.
/// Micro-dollars as `$1.234567`.
/// A plan's monthly cost limit in dollars, as micro-dollars: `define-plan --cost-limit-usd` and
/// the console's plan form.
pub fn cost_limit_micro_usd(usd: f64) -> Result<u64, String> {
    if usd.is_finite() && (0.0..=1e9).contains(&usd) {
        Ok((usd * 1e6).round() as u64)
    } else {
        Err(format!("`{usd}` is not an amount of dollars from 0 to 1e9"))
    }
}

/// A plan's allowed models, trimmed, blanks dropped, each a model reference or glob pattern:
/// `define-plan --allowed-models` and the console's plan form.
pub fn allowed_model_patterns(patterns: Vec<String>) -> Result<Vec<String>, String> {
    let patterns: Vec<String> = patterns.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect();
    for pattern in &patterns {
        crate::providers::check_model_ref(pattern)?;
    }
    Ok(patterns)
}

/// Dollars from micro-dollars, as `$1.234567`.
pub fn usd(micro_usd: u64) -> String {
    format!("${}", usd_plain(micro_usd))
}

/// Micro-dollars as `1.234567`, exactly (no float rounding).
fn usd_plain(micro_usd: u64) -> String {
    format!("{}.{:06}", micro_usd / 1_000_000, micro_usd % 1_000_000)
}

pub fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_owned() };
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("ada@example.com"), "ada@example.com");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+2@x.y"), "'=1+2@x.y");
        assert_eq!(csv_field("+1@x.y"), "'+1@x.y");
        assert_eq!(csv_field("-1@x.y"), "'-1@x.y");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("\rx"), "\"'\rx\"");
        assert_eq!(csv_field("=HYPERLINK(\"http://evil\",\"x\")"), "\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\"");
        assert_eq!(csv_field("a=b"), "a=b", "only a leading sign is a formula");
    }
}
