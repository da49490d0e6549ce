//! Error codes and the one error body every HTTP error and stream `error` event uses.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A machine-readable error code. Each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not valid JSON or not the expected shape.
    BadRequest,
    /// 401: no token, an unknown token, a revoked token, or wrong credentials.
    Unauthorized,
    /// 403: authenticated but not allowed (e.g. not an admin).
    Forbidden,
    /// 403: the account is disabled by an admin; its tokens and logins fail until it is enabled.
    AccountDisabled,
    /// 404: unknown or inactive tool, or any resource the caller may not see.
    NotFound,
    /// 409: e.g. signing up with an email that is taken.
    Conflict,
    /// 413: content over the server's limit.
    PayloadTooLarge,
    /// 422: a field is present but invalid.
    InvalidField,
    /// 429: a rate limit or quota; the response carries `Retry-After`.
    RateLimited,
    /// 502: the LLM provider failed.
    ProviderError,
    /// 504: the LLM provider did not answer in time.
    ProviderTimeout,
    /// 503: the server cannot serve now (e.g. its database is down).
    Unavailable,
    /// The answer was stopped because it repeated the tool's private instructions (a stream
    /// `error` event; 403 where it is a status).
    PromptProtected,
    /// 500: a bug on the server.
    Internal,
    /// A code this version does not know, from a newer server.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden | ErrorCode::PromptProtected | ErrorCode::AccountDisabled => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::InvalidField => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::ProviderError => 502,
            ErrorCode::Unavailable => 503,
            ErrorCode::ProviderTimeout => 504,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::AccountDisabled => "account_disabled",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ProviderError => "provider_error",
            ErrorCode::ProviderTimeout => "provider_timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::PromptProtected => "prompt_protected",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"code": "...", "message": "..."}`: the inside of an error body, and the data of a stream
/// `error` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// `{"error": {"code": "...", "message": "..."}}`: the body of every HTTP error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code, message: message.into() } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        let body = ErrorBody::new(ErrorCode::PayloadTooLarge, "too big");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":{"code":"payload_too_large","message":"too big"}}"#
        );
        assert_eq!(serde_json::to_string(&ErrorCode::AccountDisabled).unwrap(), r#""account_disabled""#);
        assert_eq!(ErrorCode::AccountDisabled.as_str(), "account_disabled");
        let code: ErrorCode = serde_json::from_str(r#""from_the_future""#).unwrap();
        assert_eq!(code, ErrorCode::Unknown);
    }
}
