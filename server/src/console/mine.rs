//! The signed-in user's brews and stored files, as `GET /assistants` and `GET /files` list
//! them. Brews are listed without their prompts, and no tool's prompt is on these pages.

use aniate_proto::api::Visibility;
use axum::{extract::State, response::Response};

use super::{ConsoleResult, Session, html::Html, pages};
use crate::{html, http::AppState};

/// `GET /console/brews`: the user's own brews and the global ones they can chat with.
pub async fn brews(State(state): State<AppState>, session: Session) -> ConsoleResult<Response> {
    let brews = state.db.visible_assistants(session.user.user_id).await?;
    let rows: Html = brews
        .iter()
        .map(|brew| {
            let whose = if brew.owner_id == session.user.user_id { "yours" } else { "global" };
            let visibility = match brew.visibility {
                Visibility::Private => "private",
                Visibility::Global => "global",
            };
            html!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                brew.slug,
                brew.name,
                brew.description,
                brew.model,
                visibility,
                whose
            )
        })
        .collect();
    let body = html!(
        "<h1>Brews</h1><p class=\"muted\">Make and chat with brews with <code>ant brew</code> and <code>ant chat</code>.</p>\
         <table id=\"brews\"><thead><tr><th>Slug</th><th>Name</th><th>Description</th><th>Model</th><th>Visibility</th><th></th></tr></thead>\
         <tbody>{}</tbody></table>",
        rows
    );
    Ok(pages::document("Brews", Some(&session), body))
}

/// `GET /console/files`: the user's stored files.
pub async fn files(State(state): State<AppState>, session: Session) -> ConsoleResult<Response> {
    let files = state.db.files_of(session.user.user_id).await?;
    let rows: Html = files
        .iter()
        .map(|file| {
            html!(
                "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                file.id,
                file.name,
                file.size.max(0) as u64,
                file.content_type,
                pages::when(file.created_at)
            )
        })
        .collect();
    let body = html!(
        "<h1>Stored files</h1><p class=\"muted\">Store files with <code>ant files push</code>; <code>ant files ls</code> lists them too.</p>\
         <table id=\"files\"><thead><tr><th class=\"num\">Id</th><th>Name</th><th class=\"num\">Bytes</th><th>Type</th><th>Stored</th></tr></thead>\
         <tbody>{}</tbody></table>",
        rows
    );
    Ok(pages::document("Stored files", Some(&session), body))
}
