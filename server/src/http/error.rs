//! [`ApiError`]: every HTTP error the server sends, as `{"error": {"code", "message"}}`.
//!
//! Messages are written for the user who will read them in a terminal. They never contain a
//! system prompt: no message is built from a tool's stored fields other than its slug.

use aniate_proto::error::{ErrorBody, ErrorCode};
use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};

use crate::db::DbError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, sent as `Retry-After` (429s).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidField, message)
    }

    pub fn internal() -> ApiError {
        ApiError::new(ErrorCode::Internal, "internal server error; the server log has details under this request id")
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> ApiError {
        if err.is_unavailable() {
            tracing::error!(cause = %err, "database unavailable");
            return ApiError::new(ErrorCode::Unavailable, "the database is unavailable; try again shortly");
        }
        tracing::error!(cause = %err, "database error");
        ApiError::internal()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(ErrorBody::new(self.code, self.message.clone()))).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // For a door that answers errors in another shape (`openai::openai_errors`).
        response.extensions_mut().insert(self);
        response
    }
}
