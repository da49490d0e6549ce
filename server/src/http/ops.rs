//! `GET /healthz` and `GET /metrics`.
//!
//! `/metrics` answers loopback clients (a Prometheus or an agent on the server's host), and any
//! client that presents `ANIATE_METRICS_TOKEN` as a bearer token when the operator set one;
//! everyone else gets 403.

use std::net::IpAddr;

use aniate_proto::{api::Health, error::ErrorCode};
use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{Extensions, HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};

use super::{AppState, error::ApiError};

/// Liveness and readiness in one: 200 when the database answers, 503 when it does not.
#[utoipa::path(get, path = "/healthz", tag = "ops", operation_id = "healthz", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let database = state.db.ping().await;
    let status = if database { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Health {
        status: if database { "ok" } else { "not_ready" }.to_owned(),
        version: aniate_proto::VERSION.to_owned(),
        database,
    };
    (status, Json(body))
}

#[utoipa::path(get, path = "/metrics", tag = "ops", operation_id = "metrics",
    responses((status = 200, description = "The metrics in the OpenMetrics text format, which Prometheus reads", content_type = "application/openmetrics-text", body = String),
        (status = 403, description = "Not a loopback client, and no valid `ANIATE_METRICS_TOKEN` bearer token", body = aniate_proto::error::ErrorBody)))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap, extensions: Extensions) -> Response {
    if !may_read_metrics(super::client_ip(&extensions), &headers, state.metrics_token.as_deref()) {
        let message = if state.metrics_token.is_some() {
            "/metrics answers loopback clients and the bearer of ANIATE_METRICS_TOKEN"
        } else {
            "/metrics answers loopback clients only; set ANIATE_METRICS_TOKEN to let others in with it"
        };
        return ApiError::new(ErrorCode::Forbidden, message).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}

/// Whether a client at `peer` (unknown when the server was not told) sending `headers` may read
/// the metrics. The token is compared by its hash, so the comparison's time says nothing about
/// how much of it a guess got right.
fn may_read_metrics(peer: Option<IpAddr>, headers: &HeaderMap, token: Option<&str>) -> bool {
    if peer.is_some_and(|ip| ip.is_loopback()) {
        return true;
    }
    let Some(token) = token else { return false };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim);
    presented.is_some_and(|presented| Sha256::digest(presented.as_bytes()) == Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        headers
    }

    #[test]
    fn metrics_answer_loopback_or_the_token_bearer() {
        let loopback = Some("127.0.0.1".parse().unwrap());
        let mapped_loopback = Some("::ffff:127.0.0.1".parse::<IpAddr>().unwrap().to_canonical());
        let remote = Some("192.0.2.7".parse().unwrap());
        assert!(may_read_metrics(loopback, &HeaderMap::new(), None));
        assert!(may_read_metrics(mapped_loopback, &HeaderMap::new(), None));
        assert!(may_read_metrics(Some("::1".parse().unwrap()), &HeaderMap::new(), Some("t")));
        assert!(!may_read_metrics(remote, &HeaderMap::new(), None));
        assert!(!may_read_metrics(remote, &bearer("anything"), None));
        assert!(!may_read_metrics(remote, &HeaderMap::new(), Some("s3cret-token")));
        assert!(!may_read_metrics(remote, &bearer("s3cret-tokeN"), Some("s3cret-token")));
        assert!(may_read_metrics(remote, &bearer("s3cret-token"), Some("s3cret-token")));
        assert!(!may_read_metrics(None, &HeaderMap::new(), None), "an unknown peer is not loopback");
    }
}
