//! Extractors whose rejections are our JSON errors rather than axum's plain text.

use aniate_proto::error::ErrorCode;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use bytes::Bytes;
use http::request::Parts;
use serde::de::DeserializeOwned;

use super::{AppState, error::ApiError};

/// A JSON body. Any content type is accepted (curl users forget the header); malformed JSON is
/// a 400, a well-formed body with a wrong or missing field a 422, an oversized body a 413.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "request body over the limit (content may be at most {} bytes)",
                        state.limits.max_content_bytes
                    ),
                )
            } else {
                ApiError::bad_request(format!("could not read the request body: {rejection}"))
            }
        })?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|err| match err.classify() {
            serde_json::error::Category::Data => ApiError::invalid(format!("invalid request body: {err}")),
            _ => ApiError::bad_request(format!("malformed JSON: {err}")),
        })
    }
}

/// The `{slug}` of a path. A slug that cannot exist (bad characters) is a 404 like any
/// unknown one.
#[derive(Debug)]
pub struct SlugPath(pub String);

impl FromRequestParts<AppState> for SlugPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Path(slug) =
            Path::<String>::from_request_parts(parts, state).await.map_err(|_| ApiError::not_found("no such tool"))?;
        if !aniate_proto::tool::is_valid_slug(&slug) {
            return Err(ApiError::not_found("no such tool (slugs are a-z, 0-9 and -)"));
        }
        Ok(SlugPath(slug))
    }
}
