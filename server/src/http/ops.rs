//! `GET /healthz` and `GET /metrics`.

use aniate_proto::api::Health;
use axum::{Json, extract::State, response::IntoResponse};
use http::{StatusCode, header};

use super::AppState;

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
    responses((status = 200, description = "The metrics in the OpenMetrics text format, which Prometheus reads", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}
