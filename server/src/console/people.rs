//! Admin pages for accounts and plans: users (role, plan, disable, revoke tokens) and plans
//! (define and edit limits). Each action calls the database function `ant-server admin` calls
//! for it (`set-role`, `set-plan`, `disable-user`, `define-plan`), and revoking tokens is
//! `POST /auth/logout-all`'s `revoke_user_tokens`.

use aniate_proto::api::Role;
use axum::{
    extract::State,
    response::{IntoResponse, Redirect, Response},
};

use super::{AdminSession, ConsoleResult, CsrfForm, html::Html, pages};
use crate::{
    db::Plan,
    html,
    http::{AppState, error::ApiError},
};

/// `GET /console/users`.
pub async fn users(State(state): State<AppState>, AdminSession(session): AdminSession) -> ConsoleResult<Response> {
    let users = state.db.all_users().await?;
    let plans: Vec<String> = state.db.plans().await?.into_iter().map(|plan| plan.name).collect();
    let rows: Html = users
        .iter()
        .map(|user| {
            let plan_options: Html = plans
                .iter()
                .map(|plan| {
                    if *plan == user.plan {
                        html!("<option value=\"{}\" selected>{}</option>", plan, plan)
                    } else {
                        html!("<option value=\"{}\">{}</option>", plan, plan)
                    }
                })
                .collect();
            let (role_value, role_label) = match user.role {
                Role::Admin => ("user", "Make user"),
                Role::User => ("admin", "Make admin"),
            };
            let (disable_value, disable_label, state_tag) = if user.disabled_at.is_some() {
                ("0", "Enable", Html::raw("<span class=\"tag off\">disabled</span>"))
            } else {
                ("1", "Disable", Html::raw("<span class=\"tag\">active</span>"))
            };
            let csrf = session.csrf_field();
            html!(
                "<tr data-email=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>\
                 <form class=\"inline\" method=\"post\" action=\"/console/users/plan\">{}<input type=\"hidden\" name=\"email\" value=\"{}\">\
                 <select name=\"plan\" aria-label=\"plan\">{}</select> <button class=\"secondary\" type=\"submit\">Set plan</button></form></td><td>\
                 <form class=\"inline\" method=\"post\" action=\"/console/users/role\">{}<input type=\"hidden\" name=\"email\" value=\"{}\">\
                 <input type=\"hidden\" name=\"role\" value=\"{}\"><button class=\"secondary\" type=\"submit\">{}</button></form> \
                 <form class=\"inline\" method=\"post\" action=\"/console/users/disabled\">{}<input type=\"hidden\" name=\"email\" value=\"{}\">\
                 <input type=\"hidden\" name=\"disabled\" value=\"{}\"><button class=\"secondary\" type=\"submit\">{}</button></form> \
                 <form class=\"inline\" method=\"post\" action=\"/console/users/revoke\">{}<input type=\"hidden\" name=\"email\" value=\"{}\">\
                 <button class=\"danger\" type=\"submit\">Revoke tokens</button></form></td></tr>",
                user.email,
                user.email,
                user.role.as_str(),
                state_tag,
                csrf.clone(),
                user.email,
                plan_options,
                csrf.clone(),
                user.email,
                role_value,
                role_label,
                csrf.clone(),
                user.email,
                disable_value,
                disable_label,
                csrf,
                user.email
            )
        })
        .collect();
    let body = html!(
        "<h1>Users</h1><table id=\"users\"><thead><tr><th>Email</th><th>Role</th><th>State</th><th>Plan</th><th></th></tr></thead>\
         <tbody>{}</tbody></table>",
        rows
    );
    Ok(pages::document("Users", Some(&session), body))
}

#[derive(Debug, serde::Deserialize)]
pub struct UserForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    disabled: String,
}

fn no_user(email: &str) -> ApiError {
    ApiError::not_found(format!("no user with email {email}"))
}

/// `POST /console/users/plan`, as `ant-server admin set-plan`.
pub async fn set_plan(
    State(state): State<AppState>,
    CsrfForm(session, form): CsrfForm<UserForm>,
) -> ConsoleResult<Response> {
    session.require_admin()?;
    if state.db.plan(&form.plan).await?.is_none() {
        return Err(ApiError::invalid(format!("plan: no plan `{}`", form.plan)).into());
    }
    if !state.db.set_plan(&form.email, &form.plan).await? {
        return Err(no_user(&form.email).into());
    }
    tracing::info!(admin = session.user.user_id, plan = %form.plan, "plan set in the console");
    Ok(Redirect::to("/console/users").into_response())
}

/// `POST /console/users/role`, as `ant-server admin set-role`.
pub async fn set_role(
    State(state): State<AppState>,
    CsrfForm(session, form): CsrfForm<UserForm>,
) -> ConsoleResult<Response> {
    session.require_admin()?;
    let role = match form.role.as_str() {
        "admin" => Role::Admin,
        "user" => Role::User,
        other => return Err(ApiError::invalid(format!("role: `{other}` is not user or admin")).into()),
    };
    if form.email == session.user.email && role == Role::User {
        return Err(
            ApiError::invalid("role: an admin cannot demote themselves here; use `ant-server admin set-role`").into()
        );
    }
    if !state.db.set_role(&form.email, role).await? {
        return Err(no_user(&form.email).into());
    }
    Ok(Redirect::to("/console/users").into_response())
}

/// `POST /console/users/disabled`, as `ant-server admin disable-user` and `enable-user`.
pub async fn set_disabled(
    State(state): State<AppState>,
    CsrfForm(session, form): CsrfForm<UserForm>,
) -> ConsoleResult<Response> {
    session.require_admin()?;
    let disabled = form.disabled == "1";
    if disabled && form.email == session.user.email {
        return Err(ApiError::invalid("an admin cannot disable their own account").into());
    }
    if !state.db.set_disabled(&form.email, disabled).await? {
        return Err(no_user(&form.email).into());
    }
    Ok(Redirect::to("/console/users").into_response())
}

/// `POST /console/users/revoke`: every token and session of the user, as `POST /auth/logout-all`.
pub async fn revoke_tokens(
    State(state): State<AppState>,
    CsrfForm(session, form): CsrfForm<UserForm>,
) -> ConsoleResult<Response> {
    session.require_admin()?;
    let user = state.db.user_by_email(&form.email).await?.ok_or_else(|| no_user(&form.email))?;
    let n_revoked = state.db.revoke_user_tokens(user.id).await?;
    tracing::info!(admin = session.user.user_id, user_id = user.id, n_revoked, "tokens revoked in the console");
    Ok(Redirect::to("/console/users").into_response())
}

/// `GET /console/plans`: the plans and a form to define or change one.
pub async fn plans(State(state): State<AppState>, AdminSession(session): AdminSession) -> ConsoleResult<Response> {
    let plans = state.db.plans().await?;
    let rows: Html = plans
        .iter()
        .map(|plan| {
            html!(
                "<tr data-plan=\"{}\"><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                plan.name,
                plan.name,
                plan.requests_per_minute,
                plan.tokens_per_month,
                plan.cost_micro_usd_per_month.map_or_else(|| "no limit".to_owned(), crate::admin_cli::usd),
                plan.allowed_models.as_ref().map_or_else(|| "any".to_owned(), |models| models.join(", ")),
                plan.max_stored_bytes,
                plan.max_stored_files
            )
        })
        .collect();
    let body = html!(
        "<h1>Plans</h1><table id=\"plans\"><thead><tr><th>Plan</th><th class=\"num\">Requests a minute</th>\
         <th class=\"num\">Tokens a month</th><th class=\"num\">Cost limit a month</th><th>Models of brews</th>\
         <th class=\"num\">Stored bytes</th><th class=\"num\">Stored files</th></tr></thead>\
         <tbody>{}</tbody></table><h2>Define or change a plan</h2><form id=\"plan-form\" method=\"post\" action=\"/console/plans\">{}\
         <label>Name <input name=\"name\" required maxlength=\"32\"></label>\
         <label>Requests a minute <input name=\"requests_per_minute\" type=\"number\" min=\"0\" required></label>\
         <label>Tokens a month <input name=\"tokens_per_month\" type=\"number\" min=\"0\" required></label>\
         <label>Cost limit a month, US dollars <input name=\"cost_limit_usd\" inputmode=\"decimal\" placeholder=\"no limit\"></label>\
         <label>Models its users' brews may name <input name=\"allowed_models\" placeholder=\"any (e.g. groq/*, local/llama3.1)\"></label>\
         <label>Stored bytes <input name=\"max_stored_bytes\" type=\"number\" min=\"0\" value=\"{}\"></label>\
         <label>Stored files <input name=\"max_stored_files\" type=\"number\" min=\"0\" value=\"{}\"></label>\
         <button type=\"submit\">Save plan</button></form>",
        rows,
        session.csrf_field(),
        crate::db::DEFAULT_MAX_STORED_BYTES,
        crate::db::DEFAULT_MAX_STORED_FILES
    );
    Ok(pages::document("Plans", Some(&session), body))
}

#[derive(Debug, serde::Deserialize)]
pub struct PlanForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    requests_per_minute: String,
    #[serde(default)]
    tokens_per_month: String,
    #[serde(default)]
    max_stored_bytes: String,
    #[serde(default)]
    max_stored_files: String,
    /// Empty: no limit.
    #[serde(default)]
    cost_limit_usd: String,
    /// Comma-separated patterns; empty: any model.
    #[serde(default)]
    allowed_models: String,
}

fn number<T: std::str::FromStr>(text: &str, field: &str, default: Option<T>) -> Result<T, ApiError> {
    match (text.trim(), default) {
        ("", Some(default)) => Ok(default),
        (text, _) => text.parse().map_err(|_| ApiError::invalid(format!("{field}: `{text}` is not a whole number"))),
    }
}

/// `POST /console/plans`, as `ant-server admin define-plan` (the same name check and upsert).
pub async fn save_plan(
    State(state): State<AppState>,
    CsrfForm(session, form): CsrfForm<PlanForm>,
) -> ConsoleResult<Response> {
    session.require_admin()?;
    let name = form.name.trim().to_owned();
    crate::admin_cli::check_plan_name(&name).map_err(ApiError::invalid)?;
    // As `define-plan`: the form states the whole plan, and a blank field is no limit.
    let cost_micro_usd_per_month = match form.cost_limit_usd.trim().trim_start_matches('$') {
        "" => None,
        text => {
            let usd =
                text.parse().map_err(|_| ApiError::invalid(format!("cost_limit_usd: `{text}` is not an amount")))?;
            Some(
                crate::admin_cli::cost_limit_micro_usd(usd)
                    .map_err(|err| ApiError::invalid(format!("cost_limit_usd: {err}")))?,
            )
        }
    };
    let allowed_models = match form.allowed_models.trim() {
        "" => None,
        text => Some(
            crate::admin_cli::allowed_model_patterns(text.split(',').map(str::to_owned).collect())
                .map_err(|err| ApiError::invalid(format!("allowed_models: {err}")))?,
        ),
    };
    let plan = Plan {
        allowed_models,
        cost_micro_usd_per_month,
        name,
        requests_per_minute: number(&form.requests_per_minute, "requests_per_minute", None)?,
        tokens_per_month: number(&form.tokens_per_month, "tokens_per_month", None)?,
        max_stored_bytes: number(
            &form.max_stored_bytes,
            "max_stored_bytes",
            Some(crate::db::DEFAULT_MAX_STORED_BYTES),
        )?,
        max_stored_files: number(
            &form.max_stored_files,
            "max_stored_files",
            Some(crate::db::DEFAULT_MAX_STORED_FILES),
        )?,
    };
    state.db.upsert_plan(&plan).await?;
    tracing::info!(admin = session.user.user_id, plan = %plan.name, "plan saved in the console");
    Ok(Redirect::to("/console/plans").into_response())
}
