//! The public tool registry: `GET /tools` and `GET /tools/{slug}`. Metadata only, never a
//! prompt.

use aniate_proto::error::ErrorBody;
use aniate_proto::tool::ToolMeta;
use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};

use super::{
    AppState,
    error::{ApiError, ApiResult},
    extract::SlugPath,
};

/// Active tools. Answers `304 Not Modified` when `If-None-Match` names the current `ETag`, so
/// the daemon's periodic check costs next to nothing.
#[utoipa::path(get, path = "/tools", tag = "tools", operation_id = "list_tools",
    params(("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer")),
    responses((status = 200, description = "Active tools, metadata only", body = [ToolMeta]), (status = 304, description = "Unchanged since the ETag")))]
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let tools: Vec<ToolMeta> = state.db.active_tools().await?.iter().map(|tool| tool.meta()).collect();
    let body = serde_json::to_vec(&tools).map_err(|_| ApiError::internal())?;
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32]);
    let etag_value = HeaderValue::from_str(&etag).map_err(|_| ApiError::internal())?;
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if if_none_match_hits(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value), cache]).into_response());
    }
    Ok((
        [(header::ETAG, etag_value), (header::CONTENT_TYPE, HeaderValue::from_static("application/json")), cache],
        body,
    )
        .into_response())
}

fn if_none_match_hits(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|value| value.to_str().ok()).any(|value| {
        value
            .split(',')
            .map(str::trim)
            .any(|candidate| candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag)
    })
}

#[utoipa::path(get, path = "/tools/{slug}", tag = "tools", operation_id = "show_tool", params(("slug" = String, Path, example = "what")),
    responses((status = 200, body = ToolMeta), (status = 404, body = ErrorBody)))]
pub async fn show(State(state): State<AppState>, SlugPath(slug): SlugPath) -> ApiResult<Json<ToolMeta>> {
    let tool = state
        .db
        .active_tool(&slug)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tool `{slug}`; GET /tools lists them")))?;
    Ok(Json(tool.meta()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let etag = "\"abc\"";
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            if_none_match_hits(&headers, etag)
        };
        assert!(check("\"abc\""));
        assert!(check("W/\"abc\""));
        assert!(check("\"x\", \"abc\""));
        assert!(check("*"));
        assert!(!check("\"abd\""));
        assert!(!if_none_match_hits(&HeaderMap::new(), etag));
    }
}
