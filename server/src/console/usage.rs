//! The admin's usage page: requests, tokens and errors per day as charts, usage by tool, by
//! user (the top users first) and by model, blocked runs, and a CSV export of what is shown.
//!
//! The charts are SVG drawn here, so they need no script (the CSP allows none inline anyway):
//! one point per day with usage.

use axum::{
    extract::{Query, State},
    http::header,
    response::{IntoResponse, Response},
};

use super::{AdminSession, ConsoleResult, html::Html, pages};
use crate::{
    db::{UsageGroup, UsageSummary, now_ms, rfc3339},
    html,
    http::{AppState, error::ApiError},
    limits::month_bounds,
};

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Default, serde::Deserialize)]
pub struct PeriodQuery {
    from: Option<String>,
    to: Option<String>,
}

/// What the page shows for a period; the CSV export is made from the same value.
struct UsageView {
    from: i64,
    to: i64,
    by_day: Vec<(i64, UsageSummary)>,
    by_tool: Vec<(String, UsageSummary)>,
    by_user: Vec<(String, UsageSummary)>,
    by_model: Vec<(String, UsageSummary)>,
}

/// The period of the query, as `GET /admin/usage` reads it: `from` (default the start of this
/// month) to `to` (exclusive, default now), dates or RFC 3339 times.
fn period(query: &PeriodQuery) -> Result<(i64, i64), ApiError> {
    let parse = |text: Option<&str>, field: &str, default: i64| match text.filter(|t| !t.is_empty()) {
        Some(text) => crate::http::usage::parse_time(text)
            .ok_or_else(|| ApiError::invalid(format!("{field}: `{text}` is not a date or RFC 3339 time"))),
        None => Ok(default),
    };
    let now = now_ms();
    let from = parse(query.from.as_deref(), "from", month_bounds(now).0)?;
    let to = parse(query.to.as_deref(), "to", now + 1)?;
    if to <= from {
        return Err(ApiError::invalid("to: must be after from"));
    }
    Ok((from, to))
}

async fn load(state: &AppState, query: &PeriodQuery) -> ConsoleResult<UsageView> {
    let (from, to) = period(query)?;
    Ok(UsageView {
        from,
        to,
        by_day: state.db.admin_usage_by_day(from, to).await?,
        by_tool: state.db.admin_usage_by(UsageGroup::Tool, from, to).await?,
        by_user: state.db.admin_usage_by(UsageGroup::User, from, to).await?,
        by_model: state.db.admin_usage_by(UsageGroup::Model, from, to).await?,
    })
}

fn day_text(day: i64) -> String {
    rfc3339(day * DAY_MS)[..10].to_owned()
}

/// A line chart of one series, one point per day with usage, on an axis of every day of the
/// period.
fn chart(id: &'static str, title: &'static str, view: &UsageView, value: impl Fn(&UsageSummary) -> u64) -> Html {
    const WIDTH: i64 = 560;
    const HEIGHT: i64 = 160;
    const PAD: i64 = 28;
    let first_day = view.from / DAY_MS;
    let last_day = ((view.to - 1) / DAY_MS).max(first_day);
    let n_days = (last_day - first_day).max(1);
    let max = view.by_day.iter().map(|(_, s)| value(s)).max().unwrap_or(0).max(1);
    let points: Vec<(i64, i64, String, u64)> = view
        .by_day
        .iter()
        .map(|(day, summary)| {
            let v = value(summary);
            let x = PAD + (day - first_day) * (WIDTH - 2 * PAD) / n_days;
            let y = HEIGHT - PAD - (v as i64) * (HEIGHT - 2 * PAD) / (max as i64);
            (x, y, day_text(*day), v)
        })
        .collect();
    let line: String = points.iter().map(|(x, y, _, _)| format!("{x},{y}")).collect::<Vec<_>>().join(" ");
    let dots: Html = points
        .iter()
        .map(|(x, y, day, v)| {
            html!(
                "<circle class=\"point\" cx=\"{}\" cy=\"{}\" r=\"4\" fill=\"#2f5bd3\"><title>{}: {}</title></circle>",
                *x,
                *y,
                day,
                *v
            )
        })
        .collect();
    html!(
        "<figure class=\"chart\" id=\"{}\" data-points=\"{}\"><figcaption>{} <span class=\"muted\">(max {})</span></figcaption>\
         <svg viewBox=\"0 0 560 160\" width=\"560\" height=\"160\" role=\"img\" aria-label=\"{}\">\
         <line x1=\"28\" y1=\"132\" x2=\"532\" y2=\"132\" stroke=\"#d9dde5\"/>\
         <text x=\"28\" y=\"150\" font-size=\"10\" fill=\"#5b6475\">{}</text>\
         <text x=\"532\" y=\"150\" font-size=\"10\" fill=\"#5b6475\" text-anchor=\"end\">{}</text>\
         <polyline points=\"{}\" fill=\"none\" stroke=\"#2f5bd3\" stroke-width=\"2\"/>{}</svg></figure>",
        Html::raw(id),
        points.len(),
        Html::raw(title),
        max,
        Html::raw(title),
        day_text(first_day),
        day_text(last_day),
        line,
        dots
    )
}

fn table(id: &'static str, key_title: &'static str, rows: &[(String, UsageSummary)]) -> Html {
    let body: Html = rows
        .iter()
        .map(|(key, s)| {
            html!(
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                key,
                s.totals.requests,
                s.tokens(),
                s.totals.completion_tokens,
                s.errors,
                s.blocked
            )
        })
        .collect();
    html!(
        "<table id=\"{}\"><thead><tr><th>{}</th><th class=\"num\">Requests</th><th class=\"num\">Tokens</th>\
         <th class=\"num\">Completion tokens</th><th class=\"num\">Errors</th><th class=\"num\">Blocked</th></tr></thead>\
         <tbody>{}</tbody></table>",
        Html::raw(id),
        Html::raw(key_title),
        body
    )
}

/// `GET /console/usage?from=&to=`.
pub async fn page(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Query(query): Query<PeriodQuery>,
) -> ConsoleResult<Response> {
    let view = load(&state, &query).await?;
    let total = view.by_day.iter().fold(UsageSummary::default(), |mut sum, (_, s)| {
        sum.totals.requests += s.totals.requests;
        sum.totals.prompt_tokens += s.totals.prompt_tokens;
        sum.totals.completion_tokens += s.totals.completion_tokens;
        sum.errors += s.errors;
        sum.blocked += s.blocked;
        sum
    });
    let from_text = day_text(view.from / DAY_MS);
    let to_text = rfc3339(view.to);
    let csv_link = html!(
        "/console/usage.csv?from={}&amp;to={}",
        Html(url_encode(&rfc3339(view.from))),
        Html(url_encode(&to_text))
    );
    let days: Html = view
        .by_day
        .iter()
        .map(|(day, s)| {
            html!(
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                day_text(*day),
                s.totals.requests,
                s.tokens(),
                s.errors,
                s.blocked
            )
        })
        .collect();
    let body = html!(
        "<h1>Usage</h1><form class=\"period\" method=\"get\" action=\"/console/usage\">\
         <label>From <input type=\"date\" name=\"from\" value=\"{}\"></label>\
         <label>To (exclusive) <input name=\"to\" value=\"{}\"></label><button type=\"submit\">Show</button>\
         <a class=\"button secondary\" id=\"csv\" href=\"{}\">Export CSV</a></form>\
         <div class=\"cards\"><div class=\"card\"><div class=\"muted\">Requests</div><div class=\"big\" id=\"total-requests\">{}</div></div>\
         <div class=\"card\"><div class=\"muted\">Tokens</div><div class=\"big\">{}</div></div>\
         <div class=\"card\"><div class=\"muted\">Errors</div><div class=\"big\">{}</div></div>\
         <div class=\"card\"><div class=\"muted\">Blocked runs</div><div class=\"big\" id=\"total-blocked\">{}</div></div></div>\
         {}{}{}\
         <h2>Per day</h2><table id=\"by-day\"><thead><tr><th>Day</th><th class=\"num\">Requests</th><th class=\"num\">Tokens</th>\
         <th class=\"num\">Errors</th><th class=\"num\">Blocked</th></tr></thead><tbody>{}</tbody></table>\
         <h2>Top users</h2>{}<h2>By tool</h2>{}<h2>By model</h2>{}",
        from_text,
        to_text,
        csv_link,
        total.totals.requests,
        total.tokens(),
        total.errors,
        total.blocked,
        chart("chart-requests", "Requests per day", &view, |s| s.totals.requests),
        chart("chart-tokens", "Tokens per day", &view, UsageSummary::tokens),
        chart("chart-errors", "Errors per day", &view, |s| s.errors),
        days,
        table("by-user", "User", &view.by_user),
        table("by-tool", "Tool", &view.by_tool),
        table("by-model", "Model", &view.by_model)
    );
    Ok(pages::document("Usage", Some(&session), body))
}

/// `GET /console/usage.csv?from=&to=`: what the page shows for the same period, one row per
/// line of its tables (`section` says which), cells quoted and never formulas.
pub async fn csv(
    State(state): State<AppState>,
    AdminSession(_session): AdminSession,
    Query(query): Query<PeriodQuery>,
) -> ConsoleResult<Response> {
    let view = load(&state, &query).await?;
    let mut text = String::from("section,key,requests,prompt_tokens,completion_tokens,errors,blocked\n");
    let mut push = |section: &str, key: &str, s: &UsageSummary| {
        text.push_str(&format!(
            "{section},{},{},{},{},{},{}\n",
            crate::admin_cli::csv_field(key),
            s.totals.requests,
            s.totals.prompt_tokens,
            s.totals.completion_tokens,
            s.errors,
            s.blocked
        ));
    };
    for (day, s) in &view.by_day {
        push("day", &day_text(*day), s);
    }
    for (section, rows) in [("user", &view.by_user), ("tool", &view.by_tool), ("model", &view.by_model)] {
        for (key, s) in rows {
            push(section, key, s);
        }
    }
    let name = format!("attachment; filename=\"aniate-usage-{}.csv\"", day_text(view.from / DAY_MS));
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, name)], text)
        .into_response())
}

/// Percent-encodes a query value (RFC 3339 times have `:` and `+`).
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
