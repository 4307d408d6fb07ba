//! HTTP routes. Handlers are thin: read the body within its limit, hand it
//! to the [`Reviewer`], log and count the answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::admission::{review, Record, ReviewError, Reviewed, Reviewer};
use crate::metrics::Metrics;
use crate::posture::reflector::CacheSync;
use crate::subject::Kind;

#[derive(Clone)]
pub struct AppState {
    pub reviewer: Arc<Reviewer>,
    pub metrics: Metrics,
    pub sync: Arc<CacheSync>,
    pub max_body_bytes: usize,
    /// Set on SIGTERM: `/readyz` answers 503 so the endpoint is removed
    /// while reviews are still served.
    pub draining: Arc<AtomicBool>,
    /// Queues Events for reviews admitted with audit-mode findings.
    pub events: Option<crate::events::AdmissionEvents>,
}

/// The webhook router (served over TLS).
pub fn webhook(state: AppState) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The metrics router (plain HTTP on its own port).
pub fn metrics(registry: Arc<Registry>, metrics: Metrics, sync: Arc<CacheSync>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let (registry, metrics, sync) = (registry.clone(), metrics.clone(), sync.clone());
            async move {
                // Sync state is read at scrape time rather than pushed on
                // every watch event.
                for (resource, synced) in sync.states() {
                    metrics.cache_synced(resource, synced);
                }
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &registry) {
                    Ok(()) => (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
        }),
    )
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "draining": true})),
        )
            .into_response();
    }
    if state.sync.is_ready() {
        let missing: Vec<_> = state.sync.missing().collect();
        if missing.is_empty() {
            return (StatusCode::OK, "ready").into_response();
        }
        // Ready (exempt namespaces and policy-free rules still work), but
        // say loudly that posture cannot be verified.
        return (
            StatusCode::OK,
            Json(json!({
                "ready": true,
                "istioCrdsMissing": missing,
                "warning": "Istio CRDs are not installed: posture rules report workloads as unverifiable",
            })),
        )
            .into_response();
    }
    let waiting: Vec<_> = state
        .sync
        .states()
        .filter(|(_, synced)| !synced)
        .map(|(resource, _)| resource)
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"ready": false, "waitingForCaches": waiting})),
    )
        .into_response()
}

async fn validate(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let bytes = match read_body(&state, "validate", &headers, body).await {
        Ok(bytes) => bytes,
        Err(answer) => return answer,
    };
    let reviewed = state.reviewer.validate(&bytes).await;
    if let (Some(events), Ok(reviewed)) = (&state.events, &reviewed) {
        events.offer(&bytes, reviewed);
    }
    answer(&state, "validate", started, reviewed)
}

async fn mutate(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let bytes = match read_body(&state, "mutate", &headers, body).await {
        Ok(bytes) => bytes,
        Err(answer) => return answer,
    };
    let reviewed = state.reviewer.mutate(&bytes);
    answer(&state, "mutate", started, reviewed)
}

/// The body within its limit, or the answer that refuses it.
async fn read_body(
    state: &AppState,
    endpoint: &'static str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, Response> {
    let limit = state.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        state.metrics.observe_bad_request(endpoint);
        return Err(too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            state.metrics.observe_bad_request(endpoint);
            Err(too_large(limit))
        }
        Err(error) => {
            tracing::warn!(endpoint, %error, "cannot read the request body");
            state.metrics.observe_bad_request(endpoint);
            Err(error_response(
                StatusCode::BAD_REQUEST,
                "cannot read the request body",
            ))
        }
    }
}

/// Answers, logs and counts a review.
fn answer(
    state: &AppState,
    endpoint: &'static str,
    started: Instant,
    reviewed: Result<Reviewed, ReviewError>,
) -> Response {
    match reviewed {
        Ok(reviewed) => {
            let record = &reviewed.record;
            let elapsed = started.elapsed();
            state
                .metrics
                .observe_review(endpoint, record, elapsed.as_secs_f64());
            reviewed
                .span
                .in_scope(|| log_decision(endpoint, record, elapsed.as_secs_f64() * 1000.0));
            match reviewed.to_body() {
                Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
                Err(error) => {
                    tracing::error!(endpoint, %error, "cannot serialise the answer");
                    state.metrics.observe_bad_request(endpoint);
                    error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot serialise the answer",
                    )
                }
            }
        }
        Err(error) => {
            tracing::warn!(endpoint, %error, "rejected a body that is not an AdmissionReview");
            state.metrics.observe_bad_request(endpoint);
            error_response(StatusCode::BAD_REQUEST, &error.to_string())
        }
    }
}

/// The answer to a request that did not complete within its deadline (a
/// body that drips in, for one).
pub fn request_timeout(limit: Duration) -> Response {
    error_response(
        StatusCode::REQUEST_TIMEOUT,
        &format!("request not completed within {}ms", limit.as_millis()),
    )
}

fn too_large(limit: usize) -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body exceeds the {limit}-byte limit"),
    )
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// One line per decision; constant message, data in fields.
fn log_decision(endpoint: &'static str, r: &Record, latency_ms: f64) {
    let rules: Vec<String> = r
        .violations
        .iter()
        .map(|(rule, mode)| format!("{rule}:{}", mode.as_str()))
        .collect();
    let exempted: Vec<&str> = r.exempted.iter().map(|rule| rule.as_str()).collect();
    tracing::info!(
        endpoint,
        uid = %r.uid,
        kind = r.kind.map_or("other", Kind::as_str),
        namespace = %r.namespace,
        name = %r.name,
        operation = review::operation_str(&r.operation),
        user = %r.user,
        dry_run = r.dry_run,
        decision = r.outcome.as_str(),
        rules = %rules.join(","),
        exempted = %exempted.join(","),
        omitted = %r.omitted.texts.join(" | "),
        latency_ms,
        "admission review"
    );
}

#[cfg(test)]
mod tests;
