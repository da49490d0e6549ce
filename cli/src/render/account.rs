//! Brews, stored files and usage, as tables.

use aniate_proto::api::{Assistant, FileMeta, UsageReport};

use super::{
    style::{Palette, sanitize_line, sanitize_text},
    table::{Cell, Table, render_pairs},
};
use crate::files::format_size;

/// `ant brew list`.
pub fn render_brews(brews: &[Assistant], width: usize, colored: bool) -> String {
    if brews.is_empty() {
        return "No brews yet; create one with `ant brew create NAME`\n".to_owned();
    }
    let palette = Palette::new(colored);
    let mut table = Table::new(&["SLUG", "NAME", "MODEL", "", "DESCRIPTION"]).flexible(4);
    for brew in brews {
        let mark = match (brew.mine, brew.visibility) {
            (true, aniate_proto::api::Visibility::Global) => "yours, global",
            (true, _) => "yours",
            (false, _) => "global",
        };
        table.row(vec![
            Cell::styled(&sanitize_line(&brew.slug), palette.bold),
            Cell::new(&sanitize_line(&brew.name)),
            Cell::new(&sanitize_line(&brew.model)),
            Cell::styled(mark, palette.dim),
            Cell::new(&sanitize_line(&brew.description)),
        ]);
    }
    table.render(width, &palette)
}

/// `ant brew show`: the brew, and its prompt if it is the user's.
pub fn render_brew(brew: &Assistant, colored: bool) -> String {
    let palette = Palette::new(colored);
    let pairs = [
        ("slug", sanitize_line(&brew.slug).into_owned()),
        ("name", sanitize_line(&brew.name).into_owned()),
        ("id", brew.id.to_string()),
        ("model", sanitize_line(&brew.model).into_owned()),
        ("visibility", brew.visibility.as_str().to_owned()),
        ("description", sanitize_line(&brew.description).into_owned()),
        ("updated", brew.updated_at.clone()),
    ];
    let mut out = render_pairs(&pairs, &palette);
    match &brew.system_prompt {
        Some(prompt) => {
            out.push_str("\n--- system prompt ---\n");
            out.push_str(&sanitize_text(prompt));
            if !prompt.ends_with('\n') {
                out.push('\n');
            }
        }
        None => out.push_str("(the prompt is its owner's)\n"),
    }
    out
}

/// `ant files ls`.
pub fn render_files(files: &[FileMeta], width: usize, colored: bool) -> String {
    if files.is_empty() {
        return "No stored files; upload one with `ant files push FILE`\n".to_owned();
    }
    let palette = Palette::new(colored);
    let mut table = Table::new(&["ID", "NAME", "SIZE", "UPLOADED", "SHA-256"]).flexible(1);
    for file in files {
        table.row(vec![
            Cell::styled(&file.id.to_string(), palette.bold),
            Cell::new(&sanitize_line(&file.name)),
            Cell::new(&format_size(file.size as usize)),
            Cell::new(&file.created_at),
            Cell::styled(&file.sha256[..12.min(file.sha256.len())], palette.dim),
        ]);
    }
    table.render(width, &palette)
}

/// The storage line under `ant files ls`: what is stored and what the plan allows.
pub fn render_storage(usage: &UsageReport) -> String {
    let storage = &usage.storage;
    format!(
        "Stored: {} of {} in {} of {} files ({} plan)\n",
        format_size(storage.stored_bytes as usize),
        format_size(storage.max_stored_bytes as usize),
        storage.stored_files,
        storage.max_stored_files,
        sanitize_line(&usage.plan)
    )
}

/// `ant usage`.
pub fn render_usage(usage: &UsageReport, width: usize, colored: bool) -> String {
    let palette = Palette::new(colored);
    let percent = (usage.tokens_used * 100).checked_div(usage.tokens_per_month).unwrap_or(100);
    let pairs = [
        ("plan", format!("{} ({} requests a minute)", sanitize_line(&usage.plan), usage.requests_per_minute)),
        (
            "tokens",
            format!(
                "{} of {} used this month ({percent}%), {} left",
                usage.tokens_used, usage.tokens_per_month, usage.tokens_left
            ),
        ),
        ("resets", usage.resets_at.clone()),
        (
            "requests",
            format!(
                "{} ({} prompt + {} completion tokens)",
                usage.totals.requests, usage.totals.prompt_tokens, usage.totals.completion_tokens
            ),
        ),
        (
            "cost",
            match usage.cost_limit_micro_usd {
                Some(limit) => format!("{} of {} this month", usd(usage.totals.cost_micro_usd), usd(limit)),
                None => format!("{} this month", usd(usage.totals.cost_micro_usd)),
            },
        ),
    ];
    let mut out = render_pairs(&pairs, &palette);
    if !usage.by_tool.is_empty() {
        out.push('\n');
        let mut table = Table::new(&["TOOL", "REQUESTS", "PROMPT", "COMPLETION", "COST"]);
        for tool in &usage.by_tool {
            table.row(vec![
                Cell::new(&sanitize_line(&tool.tool)),
                Cell::new(&tool.totals.requests.to_string()),
                Cell::new(&tool.totals.prompt_tokens.to_string()),
                Cell::new(&tool.totals.completion_tokens.to_string()),
                Cell::new(&usd(tool.totals.cost_micro_usd)),
            ]);
        }
        out.push_str(&table.render(width, &palette));
    }
    if !usage.by_model.is_empty() {
        out.push('\n');
        let mut table = Table::new(&["MODEL", "REQUESTS", "TOKENS", "COST"]);
        for model in &usage.by_model {
            table.row(vec![
                Cell::new(&sanitize_line(&format!("{}/{}", model.provider, model.model))),
                Cell::new(&model.totals.requests.to_string()),
                Cell::new(&(model.totals.prompt_tokens + model.totals.completion_tokens).to_string()),
                Cell::new(&usd(model.totals.cost_micro_usd)),
            ]);
        }
        out.push_str(&table.render(width, &palette));
    }
    if !usage.by_day.is_empty() {
        out.push('\n');
        let mut table = Table::new(&["DAY", "REQUESTS", "TOKENS", "COST"]);
        for day in &usage.by_day {
            table.row(vec![
                Cell::new(&day.day),
                Cell::new(&day.totals.requests.to_string()),
                Cell::new(&(day.totals.prompt_tokens + day.totals.completion_tokens).to_string()),
                Cell::new(&usd(day.totals.cost_micro_usd)),
            ]);
        }
        out.push_str(&table.render(width, &palette));
    }
    out
}

/// Micro-dollars as dollars with all six decimals (`$0.000123`): small runs cost fractions of
/// a cent, and rounding them away would hide them.
fn usd(micro_usd: u64) -> String {
    format!("${}.{:06}", micro_usd / 1_000_000, micro_usd % 1_000_000)
}
