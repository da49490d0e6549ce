//! `/assistants`: brews, users' personal assistants. A user sees their own brews and global
//! ones; another user's private brew is a 404 (it does not exist for them), a global brew they
//! do not own is a 403 to edit, and so is a global brew of their own once they are no longer an
//! admin. Only the owner ever reads a brew's prompt.

use aniate_proto::error::ErrorBody;
use aniate_proto::{
    api::{Assistant, AssistantCreate, AssistantPatch, Role, Visibility},
    error::ErrorCode,
    tool::is_valid_slug,
};
use axum::{Json, extract::State, http::StatusCode};

use super::{
    AppState,
    error::{ApiError, ApiResult},
    extract::{ApiJson, ApiPath},
};
use crate::{
    auth::AuthUser,
    db::{DEFAULT_MODEL, DbError, NewAssistant, StoredAssistant, rfc3339},
    tooldef::MAX_PROMPT_BYTES,
};

/// What `user` may see of `brew`.
pub fn view(brew: &StoredAssistant, user_id: i64) -> Assistant {
    let mine = brew.owner_id == user_id;
    Assistant {
        id: brew.id,
        slug: brew.slug.clone(),
        name: brew.name.clone(),
        description: brew.description.clone(),
        model: brew.model.clone(),
        fallbacks: brew.fallbacks.clone(),
        visibility: brew.visibility,
        mine,
        created_at: rfc3339(brew.created_at),
        updated_at: rfc3339(brew.updated_at),
        system_prompt: mine.then(|| brew.system_prompt.clone()),
    }
}

fn slug_from_name(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    slug.chars().take(32).collect::<String>().trim_end_matches('-').to_owned()
}

fn check_fields(
    name: Option<&str>,
    description: Option<&str>,
    prompt: Option<&str>,
    model: Option<&str>,
) -> ApiResult<()> {
    if let Some(name) = name
        && (name.trim().is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control))
    {
        return Err(ApiError::invalid("name: 1 to 80 characters on one line"));
    }
    if description.is_some_and(|d| d.chars().count() > 300) {
        return Err(ApiError::invalid("description: at most 300 characters"));
    }
    if let Some(prompt) = prompt {
        if prompt.trim().is_empty() {
            return Err(ApiError::invalid("system_prompt must not be empty"));
        }
        if prompt.len() > MAX_PROMPT_BYTES {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("system_prompt over {MAX_PROMPT_BYTES} bytes"),
            ));
        }
    }
    if let Some(model) = model {
        crate::providers::check_model_ref(model).map_err(|err| ApiError::invalid(format!("model: {err}")))?;
    }
    Ok(())
}

/// Refuses a brew whose model or fallbacks the user's plan does not allow (422 listing the
/// allowed patterns). Brews are the one place users choose models, and the operator's key pays.
pub async fn check_plan_models(state: &AppState, user: &AuthUser, models: &[&str]) -> ApiResult<()> {
    let plan = state.limiter.plan(&state.db, &user.plan).await?;
    let Some(allowed) = &plan.allowed_models else {
        return Ok(());
    };
    for model in models {
        let resolved = state.providers.resolve(model).to_string();
        let ok = allowed.iter().any(|pattern| {
            crate::providers::glob_matches(pattern, model) || crate::providers::glob_matches(pattern, &resolved)
        });
        if !ok {
            let listed = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
            return Err(ApiError::invalid(format!(
                "model: the {} plan does not allow `{model}`; it allows {listed}",
                plan.name
            )));
        }
    }
    Ok(())
}

/// The model and fallbacks of a brew, as one list to check against the plan.
fn brew_models<'a>(model: Option<&'a str>, fallbacks: Option<&'a [String]>) -> Vec<&'a str> {
    model.into_iter().chain(fallbacks.unwrap_or_default().iter().map(String::as_str)).collect()
}

fn check_visibility(user: &AuthUser, visibility: Option<Visibility>) -> ApiResult<()> {
    if visibility == Some(Visibility::Global) && user.role != Role::Admin {
        return Err(ApiError::new(ErrorCode::Forbidden, "only admins publish global brews"));
    }
    Ok(())
}

#[utoipa::path(get, path = "/assistants", tag = "brews", operation_id = "list_assistants", security(("token" = [])), responses((status = 200, body = [Assistant])))]
pub async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Vec<Assistant>>> {
    let brews = state.db.visible_assistants(user.user_id).await?;
    Ok(Json(brews.iter().map(|brew| view(brew, user.user_id)).collect()))
}

#[utoipa::path(post, path = "/assistants", tag = "brews", operation_id = "create_assistant", security(("token" = [])),
    request_body(content = AssistantCreate, example = json!({"name": "Rust Reviewer", "system_prompt": "You review Rust code for soundness", "model": "llama-3.3-70b-versatile"})),
    responses((status = 201, body = Assistant), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<AssistantCreate>,
) -> ApiResult<(StatusCode, Json<Assistant>)> {
    check_fields(Some(&body.name), body.description.as_deref(), Some(&body.system_prompt), body.model.as_deref())?;
    if let Some(fallbacks) = &body.fallbacks {
        crate::providers::check_fallbacks(fallbacks).map_err(ApiError::invalid)?;
    }
    check_visibility(&user, body.visibility)?;
    let model = body.model.clone().unwrap_or_else(|| DEFAULT_MODEL.to_owned());
    check_plan_models(&state, &user, &brew_models(Some(model.as_str()), body.fallbacks.as_deref())).await?;
    let slug = body.slug.clone().unwrap_or_else(|| slug_from_name(&body.name));
    if !is_valid_slug(&slug) {
        return Err(ApiError::invalid(format!("slug: `{slug}` is not a slug (1 to 32 of a-z, 0-9 and -)")));
    }
    let new = NewAssistant {
        owner_id: user.user_id,
        slug,
        name: body.name.trim().to_owned(),
        description: body.description.unwrap_or_default(),
        system_prompt: body.system_prompt,
        model,
        fallbacks: body.fallbacks.unwrap_or_default(),
        visibility: body.visibility.unwrap_or_default(),
    };
    match state.db.create_assistant(&new).await {
        Ok(brew) => Ok((StatusCode::CREATED, Json(view(&brew, user.user_id)))),
        Err(DbError::Conflict) => {
            Err(ApiError::new(ErrorCode::Conflict, format!("you have a brew `{}` already", new.slug)))
        }
        Err(err) => Err(err.into()),
    }
}

async fn visible(state: &AppState, user: &AuthUser, id: &str) -> ApiResult<StoredAssistant> {
    state.db.visible_assistant(user.user_id, id).await?.ok_or_else(|| ApiError::not_found("no such brew"))
}

/// A brew the user may change: their own, and if it is global, only while they are an admin
/// (every user chats with a global brew, so a demoted admin must not keep editing it). A global
/// brew of someone else is visible, so changing it is forbidden rather than "not found".
async fn owned(state: &AppState, user: &AuthUser, id: &str) -> ApiResult<StoredAssistant> {
    let brew = visible(state, user, id).await?;
    if brew.owner_id != user.user_id {
        return Err(ApiError::new(ErrorCode::Forbidden, "only its owner can change this brew"));
    }
    if brew.visibility == Visibility::Global && user.role != Role::Admin {
        return Err(ApiError::new(ErrorCode::Forbidden, "only admins change global brews"));
    }
    Ok(brew)
}

#[utoipa::path(get, path = "/assistants/{id}", tag = "brews", operation_id = "show_assistant", params(("id" = String, Path, description = "Id or slug")), security(("token" = [])),
    responses((status = 200, body = Assistant), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Assistant>> {
    Ok(Json(view(&visible(&state, &user, &id).await?, user.user_id)))
}

#[utoipa::path(patch, path = "/assistants/{id}", tag = "brews", operation_id = "update_assistant", params(("id" = String, Path, description = "Id or slug")), request_body = AssistantPatch,
    security(("token" = [])), responses((status = 200, body = Assistant), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<AssistantPatch>,
) -> ApiResult<Json<Assistant>> {
    let brew = owned(&state, &user, &id).await?;
    check_fields(
        patch.name.as_deref(),
        patch.description.as_deref(),
        patch.system_prompt.as_deref(),
        patch.model.as_deref(),
    )?;
    if let Some(fallbacks) = &patch.fallbacks {
        crate::providers::check_fallbacks(fallbacks).map_err(ApiError::invalid)?;
    }
    check_visibility(&user, patch.visibility)?;
    check_plan_models(&state, &user, &brew_models(patch.model.as_deref(), patch.fallbacks.as_deref())).await?;
    let updated = state.db.update_assistant(brew.id, &patch).await?;
    Ok(Json(view(&updated, user.user_id)))
}

#[utoipa::path(delete, path = "/assistants/{id}", tag = "brews", operation_id = "delete_assistant", params(("id" = String, Path, description = "Id or slug")), security(("token" = [])),
    responses((status = 204, description = "Deleted"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let brew = owned(&state, &user, &id).await?;
    state.db.delete_assistant(brew.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_from_names() {
        assert_eq!(slug_from_name("Rust Reviewer"), "rust-reviewer");
        assert_eq!(slug_from_name("  SQL -- helper!! "), "sql-helper");
        assert_eq!(slug_from_name("日本"), "");
    }
}
