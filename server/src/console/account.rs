//! The signed-in user's own pages: usage this month against the plan, and API tokens (create
//! with a name, list, revoke). No page here ever shows a tool's prompt.

use axum::{
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
};

use super::{ConsoleResult, CsrfForm, NoFields, Session, html::Html, pages};
use crate::{
    auth::{self, TokenKind},
    html,
    http::{AppState, error::ApiError},
};

/// `GET /console/me`: this month's usage against the plan, by tool and by day.
pub async fn overview(State(state): State<AppState>, session: Session) -> ConsoleResult<Response> {
    let report = crate::http::usage::usage_report(&state, &session.user).await?;
    // A plan without tokens is used up from the start.
    let percent = report.tokens_used.saturating_mul(100).checked_div(report.tokens_per_month).unwrap_or(100);
    let by_tool: Html = report
        .by_tool
        .iter()
        .map(|row| {
            html!(
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                row.tool,
                row.totals.requests,
                row.totals.prompt_tokens,
                row.totals.completion_tokens,
                row.blocked
            )
        })
        .collect();
    let by_day: Html = report
        .by_day
        .iter()
        .map(|row| {
            html!(
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                row.day,
                row.totals.requests,
                row.totals.prompt_tokens + row.totals.completion_tokens
            )
        })
        .collect();
    let body = html!(
        "<h1>My usage</h1><p class=\"muted\">Since {}; the monthly quota resets {}.</p>\
         <div class=\"cards\"><div class=\"card\"><div class=\"muted\">Plan</div><div class=\"big\" id=\"plan\">{}</div>\
         <div>{} requests a minute</div></div>\
         <div class=\"card\"><div class=\"muted\">Tokens this month</div><div class=\"big\" id=\"tokens-used\">{}</div>\
         <div>of {} ({}%), {} left</div></div>\
         <div class=\"card\"><div class=\"muted\">Requests this month</div><div class=\"big\">{}</div></div>\
         <div class=\"card\"><div class=\"muted\">Stored files</div><div class=\"big\">{}</div><div>{} of {} bytes</div></div></div>\
         <h2>By tool</h2><table id=\"by-tool\"><thead><tr><th>Tool</th><th class=\"num\">Requests</th><th class=\"num\">Prompt tokens</th>\
         <th class=\"num\">Completion tokens</th><th class=\"num\">Blocked</th></tr></thead><tbody>{}</tbody></table>\
         <h2>By day</h2><table id=\"by-day\"><thead><tr><th>Day</th><th class=\"num\">Requests</th><th class=\"num\">Tokens</th></tr></thead>\
         <tbody>{}</tbody></table>",
        pages::when_text(&report.period_start),
        pages::when_text(&report.resets_at),
        report.plan,
        report.requests_per_minute,
        report.tokens_used,
        report.tokens_per_month,
        percent,
        report.tokens_left,
        report.totals.requests,
        report.storage.stored_files,
        report.storage.stored_bytes,
        report.storage.max_stored_bytes,
        by_tool,
        by_day
    );
    Ok(pages::document("My usage", Some(&session), body))
}

async fn tokens_page(
    state: &AppState,
    session: &Session,
    new_token: Option<(String, String)>,
) -> ConsoleResult<Response> {
    let tokens = state.db.user_tokens(session.user.user_id, TokenKind::Api.as_str()).await?;
    let rows: Html = tokens
        .iter()
        .map(|token| {
            let last_used = token.last_used_at.map_or_else(|| "never".to_owned(), pages::when);
            html!(
                "<tr data-token=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td><form class=\"inline\" method=\"post\" \
                 action=\"/console/tokens/{}/revoke\">{}<button class=\"secondary\" type=\"submit\">Revoke</button></form></td></tr>",
                token.id,
                token.name,
                pages::when(token.created_at),
                last_used,
                token.id,
                session.csrf_field()
            )
        })
        .collect();
    let created = match new_token {
        Some((name, token)) => html!(
            "<div class=\"flash\" role=\"status\"><p>New token <b>{}</b>; copy it now, it is not shown again:</p>\
             <code class=\"token\" id=\"new-token\">{}</code></div>",
            name,
            token
        ),
        None => Html::default(),
    };
    let body = html!(
        "<h1>API tokens</h1>{}<form id=\"new-token-form\" method=\"post\" action=\"/console/tokens\">{}\
         <label>Name <input name=\"name\" required maxlength=\"64\" placeholder=\"ci\"></label>\
         <button type=\"submit\">Create token</button></form>\
         <h2>Tokens</h2><table id=\"tokens\"><thead><tr><th>Name</th><th>Created</th><th>Last used</th><th></th></tr></thead>\
         <tbody>{}</tbody></table><p class=\"muted\">Use one with <code>ant login --token …</code> or \
         <code>Authorization: Bearer …</code>.</p>",
        created,
        session.csrf_field(),
        rows
    );
    Ok(pages::document("API tokens", Some(session), body))
}

/// `GET /console/tokens`.
pub async fn tokens(State(state): State<AppState>, session: Session) -> ConsoleResult<Response> {
    tokens_page(&state, &session, None).await
}

#[derive(Debug, serde::Deserialize)]
pub struct NewTokenForm {
    #[serde(default)]
    name: String,
}

/// `POST /console/tokens`: a new API token, shown once (stored hashed, as every token).
pub async fn create_token(
    State(state): State<AppState>,
    CsrfForm(session, form): CsrfForm<NewTokenForm>,
) -> ConsoleResult<Response> {
    let name = form.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name: 1 to 64 characters on one line").into());
    }
    let token = auth::new_token();
    state.db.create_token(session.user.user_id, &auth::hash_token(&token), name).await?;
    tracing::info!(user_id = session.user.user_id, "API token created in the console");
    tokens_page(&state, &session, Some((name.to_owned(), token))).await
}

/// `POST /console/tokens/{id}/revoke`: one of the user's own API tokens, revoked as
/// `POST /auth/logout` revokes one.
pub async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(session, NoFields {}): CsrfForm<NoFields>,
) -> ConsoleResult<Response> {
    let id: i64 = id.parse().map_err(|_| ApiError::not_found("no such token"))?;
    let own = state.db.user_tokens(session.user.user_id, TokenKind::Api.as_str()).await?;
    if !own.iter().any(|token| token.id == id) {
        return Err(ApiError::not_found("no such token").into());
    }
    state.db.revoke_token(id).await?;
    Ok(Redirect::to("/console/tokens").into_response())
}
