//! The layout every console page shares, and small pieces of pages.

use axum::response::{IntoResponse, Response};
use http::header;

use super::{Session, html::Html};
use crate::html;

/// A whole page: the layout, the navigation of the session's role, and `body`.
pub fn document(title: &str, session: Option<&Session>, body: Html) -> Response {
    let nav = match session {
        Some(session) => nav(session),
        None => Html::default(),
    };
    let page = html!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Aniate console</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head>\
         <body><header><a class=\"brand\" href=\"/console\">Aniate</a>{}</header><main>{}</main></body></html>",
        title,
        nav,
        body
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page.into_string()).into_response()
}

fn nav(session: &Session) -> Html {
    let mut links = Html::default();
    if session.is_admin() {
        links.push(Html::raw("<a href=\"/console/tools\">Tools</a><a href=\"/console/usage\">Usage</a><a href=\"/console/users\">Users</a><a href=\"/console/plans\">Plans</a>"));
    }
    links.push(Html::raw("<a href=\"/console/me\">My usage</a><a href=\"/console/tokens\">API tokens</a><a href=\"/console/brews\">Brews</a><a href=\"/console/files\">Files</a>"));
    html!(
        "<nav>{}</nav><form class=\"signout\" method=\"post\" action=\"/console/logout\">{}\
         <span class=\"who\">{} ({})</span><button type=\"submit\">Sign out</button></form>",
        links,
        session.csrf_field(),
        session.user.email,
        session.user.role.as_str()
    )
}

/// A time column as `2026-12-03 07:05`.
pub fn when(ms: i64) -> String {
    let text = crate::db::rfc3339(ms);
    text.get(..16).unwrap_or(&text).replace('T', " ")
}

/// An RFC 3339 time as `2026-12-03 07:05`.
pub fn when_text(rfc3339: &str) -> String {
    rfc3339.get(..16).unwrap_or(rfc3339).replace('T', " ")
}
