//! Admin pages for tools: the list, create and edit (the prompt in a text area), activate and
//! deactivate, the history with a side-by-side diff of any two versions, and rollback with a
//! confirmation. Every action calls the function of its API route in `http::admin`.

use aniate_proto::{
    api::ToolUpsert,
    tool::{GuardMode, OutputKind},
};
use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};

use super::{AdminSession, ConsoleError, ConsoleResult, CsrfForm, Session, html::Html, pages};
use crate::{
    db::{StoredTool, StoredToolVersion},
    html,
    http::{AppState, admin, error::ApiError},
};

/// A slug from a console path; one that cannot exist is a 404 page.
fn slug_of(slug: &str) -> ConsoleResult<&str> {
    if aniate_proto::tool::is_valid_slug(slug) {
        Ok(slug)
    } else {
        Err(ApiError::not_found("no such tool (slugs are a-z, 0-9 and -)").into())
    }
}

async fn stored_tool(state: &AppState, slug: &str) -> ConsoleResult<StoredTool> {
    state.db.tool(slug).await?.ok_or_else(|| ApiError::not_found(format!("no tool `{slug}`")).into())
}

/// `GET /console/tools`: every tool, active or not.
pub async fn list(State(state): State<AppState>, AdminSession(session): AdminSession) -> ConsoleResult<Response> {
    let tools = state.db.all_tools().await?;
    let rows: Html = tools
        .iter()
        .map(|tool| {
            let state_tag = if tool.active {
                Html::raw("<span class=\"tag\">active</span>")
            } else {
                Html::raw("<span class=\"tag off\">inactive</span>")
            };
            let (toggle_value, toggle_label) = if tool.active { ("0", "Deactivate") } else { ("1", "Activate") };
            html!(
                "<tr data-slug=\"{}\"><td><a href=\"/console/tools/{}\">{}</a></td><td>{}</td><td class=\"num\">{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td><a href=\"/console/tools/{}/history\">History</a> \
                 <form class=\"inline\" method=\"post\" action=\"/console/tools/{}/active\">{}\
                 <input type=\"hidden\" name=\"active\" value=\"{}\"><button class=\"secondary\" type=\"submit\">{}</button></form></td></tr>",
                tool.slug,
                tool.slug,
                tool.slug,
                tool.name,
                tool.version,
                state_tag,
                tool.output.as_str(),
                tool.model,
                tool.slug,
                tool.slug,
                session.csrf_field(),
                toggle_value,
                toggle_label
            )
        })
        .collect();
    let body = html!(
        "<h1>Tools</h1><div class=\"actions\"><a class=\"button\" href=\"/console/tools/new\">New tool</a></div>\
         <table id=\"tools\"><thead><tr><th>Slug</th><th>Name</th><th class=\"num\">Version</th><th>State</th><th>Output</th>\
         <th>Model</th><th></th></tr></thead><tbody>{}</tbody></table>",
        rows
    );
    Ok(pages::document("Tools", Some(&session), body))
}

/// The fields of the tool form, as the browser sends them.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ToolForm {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    output: String,
    /// A checkbox: present when checked.
    requires_file: Option<String>,
    #[serde(default)]
    guard: String,
    #[serde(default)]
    system_prompt: String,
    #[serde(default)]
    message: String,
    /// Whether this form edits an existing tool (the slug is then fixed).
    #[serde(default)]
    existing: String,
}

impl ToolForm {
    fn from_tool(tool: &StoredTool) -> ToolForm {
        ToolForm {
            slug: tool.slug.clone(),
            name: tool.name.clone(),
            description: tool.description.clone(),
            model: tool.model.clone(),
            output: tool.output.as_str().to_owned(),
            requires_file: tool.requires_file.then(|| "on".to_owned()),
            guard: tool.guard.as_str().to_owned(),
            system_prompt: tool.system_prompt.clone(),
            message: String::new(),
            existing: "1".to_owned(),
        }
    }

    /// The upsert the API would get; a form's `active` is never sent, so saving keeps it.
    fn to_upsert(&self) -> Result<ToolUpsert, ApiError> {
        let output = self.output.parse::<OutputKind>().map_err(|err| ApiError::invalid(format!("output: {err}")))?;
        let guard = self.guard.parse::<GuardMode>().map_err(|err| ApiError::invalid(format!("guard: {err}")))?;
        let model = self.model.trim();
        let message = self.message.trim();
        Ok(ToolUpsert {
            slug: self.slug.trim().to_owned(),
            name: self.name.trim().to_owned(),
            description: self.description.trim().to_owned(),
            // Browsers send text areas with CRLF line ends; the prompt is stored as written.
            system_prompt: self.system_prompt.replace("\r\n", "\n"),
            model: (!model.is_empty()).then(|| model.to_owned()),
            requires_file: Some(self.requires_file.is_some()),
            output: Some(output),
            active: None,
            guard: Some(guard),
            message: (!message.is_empty()).then(|| message.to_owned()),
            // The console's form has no fallbacks: an edit keeps the stored list.
            fallbacks: None,
        })
    }
}

fn options(all: &[&'static str], selected: &str) -> Html {
    all.iter()
        .map(|value| {
            if *value == selected {
                html!("<option value=\"{}\" selected>{}</option>", value, value)
            } else {
                html!("<option value=\"{}\">{}</option>", value, value)
            }
        })
        .collect()
}

/// The create/edit form. It shows the prompt: admin pages only.
fn tool_form_page(session: &Session, form: &ToolForm, error: Option<&str>, status: StatusCode) -> Response {
    let existing = !form.existing.is_empty();
    let title = if existing { format!("Edit {}", form.slug) } else { "New tool".to_owned() };
    let error = match error {
        Some(message) => html!("<p class=\"flash error\" role=\"alert\">{}</p>", message),
        None => Html::default(),
    };
    let slug_input = if existing {
        html!(
            "<input type=\"hidden\" name=\"slug\" value=\"{}\"><input type=\"hidden\" name=\"existing\" value=\"1\">\
             <p>Slug: <code>{}</code> · <a href=\"/console/tools/{}/history\">History</a></p>",
            form.slug,
            form.slug,
            form.slug
        )
    } else {
        html!(
            "<label>Slug <input name=\"slug\" value=\"{}\" required pattern=\"[a-z0-9][a-z0-9-]{{0,31}}\"></label>",
            form.slug
        )
    };
    let outputs: Vec<&str> = OutputKind::ALL.iter().map(|kind| kind.as_str()).collect();
    let guards: Vec<&str> = GuardMode::ALL.iter().map(|mode| mode.as_str()).collect();
    let output = if form.output.is_empty() { "text" } else { form.output.as_str() };
    let guard = if form.guard.is_empty() { "block" } else { form.guard.as_str() };
    let requires_file = if form.requires_file.is_some() { Html::raw(" checked") } else { Html::default() };
    let body = html!(
        "<h1>{}</h1>{}<form id=\"tool-form\" method=\"post\" action=\"/console/tools\">{}{}\
         <label>Name <input name=\"name\" value=\"{}\" required maxlength=\"80\"></label>\
         <label>Description <input name=\"description\" value=\"{}\" required maxlength=\"300\"></label>\
         <label>Model <input name=\"model\" value=\"{}\" placeholder=\"the server's default model\"></label>\
         <label>Output <select name=\"output\">{}</select></label>\
         <label>Prompt guard <select name=\"guard\">{}</select></label>\
         <label><input type=\"checkbox\" name=\"requires_file\"{}> Requires a file</label>\
         <label>System prompt <textarea name=\"system_prompt\" required>{}</textarea></label>\
         <label>Message (why this change, optional) <input name=\"message\" value=\"{}\" maxlength=\"200\"></label>\
         <button type=\"submit\">Save</button></form>",
        title,
        error,
        session.csrf_field(),
        slug_input,
        form.name,
        form.description,
        form.model,
        options(&outputs, output),
        options(&guards, guard),
        requires_file,
        form.system_prompt,
        form.message
    );
    let mut response = pages::document(&title, Some(session), body);
    *response.status_mut() = status;
    response
}

/// `GET /console/tools/new`.
pub async fn new_form(AdminSession(session): AdminSession) -> Response {
    tool_form_page(&session, &ToolForm::default(), None, StatusCode::OK)
}

/// `GET /console/tools/{slug}`: the edit form with the current prompt.
pub async fn edit(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(slug): Path<String>,
) -> ConsoleResult<Response> {
    let tool = stored_tool(&state, slug_of(&slug)?).await?;
    Ok(tool_form_page(&session, &ToolForm::from_tool(&tool), None, StatusCode::OK))
}

/// `POST /console/tools`: create or update through `admin::push_tool`, as `POST /admin/tools`.
pub async fn save(
    State(state): State<AppState>,
    CsrfForm(session, form): CsrfForm<ToolForm>,
) -> ConsoleResult<Response> {
    session.require_admin()?;
    let pushed = match form.to_upsert() {
        Ok(tool) => admin::push_tool(&state, &session.user.email, &tool).await,
        Err(err) => Err(err),
    };
    match pushed {
        Ok((stored, _)) => Ok(Redirect::to(&format!("/console/tools/{}/history", stored.slug)).into_response()),
        Err(err) if err.status() == StatusCode::UNPROCESSABLE_ENTITY => {
            Ok(tool_form_page(&session, &form, Some(&err.message), StatusCode::UNPROCESSABLE_ENTITY))
        }
        Err(err) => Err(err.into()),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct ActiveForm {
    #[serde(default)]
    active: String,
}

/// `POST /console/tools/{slug}/active`: deactivate through `admin::deactivate`, or activate
/// by pushing the tool as it is with `active` set, as `POST /admin/tools` would.
pub async fn set_active(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    CsrfForm(session, form): CsrfForm<ActiveForm>,
) -> ConsoleResult<Response> {
    session.require_admin()?;
    let slug = slug_of(&slug)?;
    if form.active == "1" {
        let tool = stored_tool(&state, slug).await?;
        let upsert = ToolUpsert {
            slug: tool.slug,
            name: tool.name,
            description: tool.description,
            system_prompt: tool.system_prompt,
            model: Some(tool.model),
            requires_file: Some(tool.requires_file),
            output: Some(tool.output),
            active: Some(true),
            guard: Some(tool.guard),
            message: Some("activated".to_owned()),
            fallbacks: None,
        };
        admin::push_tool(&state, &session.user.email, &upsert).await?;
    } else {
        admin::deactivate(&state, &session.user.email, slug).await?;
    }
    Ok(Redirect::to("/console/tools").into_response())
}

/// `GET /console/tools/{slug}/history`: the versions, a form to compare any two, and a
/// rollback link per older version.
pub async fn history(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(slug): Path<String>,
) -> ConsoleResult<Response> {
    let slug = slug_of(&slug)?;
    let versions = admin::versions(&state, slug).await?;
    let latest = versions.first().map_or(0, |v| v.version);
    let previous = versions.get(1).map_or(latest, |v| v.version);
    let rows: Html = versions
        .iter()
        .map(|version| {
            let checked = |n: i64| if version.version == n { Html::raw(" checked") } else { Html::default() };
            let action = if version.version == latest {
                Html::raw("<span class=\"muted\">current</span>")
            } else {
                html!(
                    "<a class=\"rollback\" href=\"/console/tools/{}/rollback?version={}\">Roll back to this</a>",
                    slug,
                    version.version
                )
            };
            let active = if version.active { "yes" } else { "no" };
            html!(
                "<tr data-version=\"{}\"><td><input type=\"radio\" name=\"from\" value=\"{}\" aria-label=\"from {}\"{}></td>\
                 <td><input type=\"radio\" name=\"to\" value=\"{}\" aria-label=\"to {}\"{}></td><td class=\"num\">{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                version.version,
                version.version,
                version.version,
                checked(previous),
                version.version,
                version.version,
                checked(latest),
                version.version,
                pages::when(version.created_at),
                version.author,
                active,
                version.message,
                action
            )
        })
        .collect();
    let body = html!(
        "<h1>History of {}</h1><p><a href=\"/console/tools/{}\">Edit</a></p>\
         <form method=\"get\" action=\"/console/tools/{}/diff\"><table id=\"versions\"><thead><tr><th>From</th><th>To</th>\
         <th class=\"num\">Version</th><th>When</th><th>Who</th><th>Active</th><th>Message</th><th></th></tr></thead>\
         <tbody>{}</tbody></table><div class=\"actions\"><button type=\"submit\">Compare</button></div></form>",
        slug,
        slug,
        slug,
        rows
    );
    Ok(pages::document(&format!("History of {slug}"), Some(&session), body))
}

#[derive(Debug, serde::Deserialize)]
pub struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

fn version_number(text: Option<&str>, field: &str) -> ConsoleResult<Option<i64>> {
    match text {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid(format!("{field}: `{text}` is not a version number")).into()),
    }
}

async fn version_of(state: &AppState, slug: &str, version: i64) -> ConsoleResult<StoredToolVersion> {
    state
        .db
        .tool_version(slug, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no version {version} of tool `{slug}`")).into())
}

/// `GET /console/tools/{slug}/diff?from=A&to=B`: the changed fields, and the prompts side by
/// side (by default the last two versions).
pub async fn diff(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(slug): Path<String>,
    Query(query): Query<DiffQuery>,
) -> ConsoleResult<Response> {
    let slug = slug_of(&slug)?;
    let versions = admin::versions(&state, slug).await?;
    let latest = versions.first().map_or(1, |v| v.version);
    let from =
        version_number(query.from.as_deref(), "from")?.unwrap_or_else(|| versions.get(1).map_or(latest, |v| v.version));
    let to = version_number(query.to.as_deref(), "to")?.unwrap_or(latest);
    let (old, new) = (version_of(&state, slug, from).await?, version_of(&state, slug, to).await?);
    let changed = crate::tooldiff::changed_fields(&old, &new);
    let fields = if changed.is_empty() {
        Html::raw("<p class=\"muted\">No field other than the prompt differs.</p>")
    } else {
        let rows: Html = changed
            .iter()
            .map(|(name, a, b)| html!("<tr><th>{}</th><td>{}</td><td>{}</td></tr>", *name, a, b))
            .collect();
        html!(
            "<table id=\"fields\"><thead><tr><th>Field</th><th>Version {}</th><th>Version {}</th></tr></thead><tbody>{}</tbody></table>",
            from,
            to,
            rows
        )
    };
    let side = crate::tooldiff::side_by_side(&old.system_prompt, &new.system_prompt);
    let n_changed = side.iter().filter(|row| row.changed).count();
    let cell = |line: &Option<(usize, String)>, class: &'static str| match line {
        Some((number, text)) => {
            html!("<td class=\"ln\">{}</td><td class=\"{}\">{}</td>", *number, Html::raw(class), text)
        }
        None => html!("<td class=\"ln\"></td><td class=\"{}\"></td>", Html::raw(class)),
    };
    let rows: Html = side
        .iter()
        .map(|row| {
            let class = if row.changed { Html::raw(" class=\"changed\"") } else { Html::default() };
            html!("<tr{}>{}{}</tr>", class, cell(&row.old, "old"), cell(&row.new, "new"))
        })
        .collect();
    let body = html!(
        "<h1>{}: version {} → version {}</h1><p><a href=\"/console/tools/{}/history\">History</a></p>\
         <h2>Fields</h2>{}<h2>System prompt <span class=\"muted\">({} changed lines)</span></h2>\
         <table class=\"diff\" id=\"prompt-diff\"><thead><tr><th class=\"ln\"></th><th>Version {} ({}, {})</th>\
         <th class=\"ln\"></th><th>Version {} ({}, {})</th></tr></thead><tbody>{}</tbody></table>",
        slug,
        from,
        to,
        slug,
        fields,
        n_changed,
        from,
        old.author,
        pages::when(old.created_at),
        to,
        new.author,
        pages::when(new.created_at),
        rows
    );
    Ok(pages::document(&format!("{slug} {from}→{to}"), Some(&session), body))
}

#[derive(Debug, serde::Deserialize)]
pub struct RollbackQuery {
    version: Option<String>,
}

/// `GET /console/tools/{slug}/rollback?version=N`: the confirmation.
pub async fn confirm_rollback(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(slug): Path<String>,
    Query(query): Query<RollbackQuery>,
) -> ConsoleResult<Response> {
    let slug = slug_of(&slug)?;
    let version = version_number(query.version.as_deref(), "version")?
        .ok_or_else(|| ConsoleError::Api(ApiError::invalid("version: which version to roll back to")))?;
    let target = version_of(&state, slug, version).await?;
    let current = stored_tool(&state, slug).await?;
    let body = html!(
        "<h1>Roll back {} to version {}?</h1>\
         <p>This makes version {}, equal to version {} ({}, {}); clients see it as a new version.</p>\
         <p><a href=\"/console/tools/{}/diff?from={}&amp;to={}\">See what changes</a></p>\
         <form id=\"rollback-form\" method=\"post\" action=\"/console/tools/{}/rollback\">{}\
         <input type=\"hidden\" name=\"version\" value=\"{}\">\
         <label>Message (optional) <input name=\"message\" maxlength=\"200\" placeholder=\"rollback to version {}\"></label>\
         <div class=\"actions\"><button class=\"danger\" type=\"submit\">Roll back</button>\
         <a class=\"button secondary\" href=\"/console/tools/{}/history\">Cancel</a></div></form>",
        slug,
        version,
        current.version + 1,
        version,
        target.author,
        pages::when(target.created_at),
        slug,
        current.version,
        version,
        slug,
        session.csrf_field(),
        version,
        version,
        slug
    );
    Ok(pages::document(&format!("Roll back {slug}"), Some(&session), body))
}

#[derive(Debug, serde::Deserialize)]
pub struct RollbackForm {
    #[serde(default)]
    version: String,
    #[serde(default)]
    message: String,
}

/// `POST /console/tools/{slug}/rollback`: through `admin::rollback`, as the API's rollback.
pub async fn rollback(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    CsrfForm(session, form): CsrfForm<RollbackForm>,
) -> ConsoleResult<Response> {
    session.require_admin()?;
    let slug = slug_of(&slug)?;
    let version = version_number(Some(&form.version), "version")?
        .ok_or_else(|| ConsoleError::Api(ApiError::invalid("version: which version to roll back to")))?;
    let message = form.message.trim();
    admin::rollback(&state, &session.user.email, slug, version, (!message.is_empty()).then_some(message)).await?;
    Ok(Redirect::to(&format!("/console/tools/{slug}/history")).into_response())
}
