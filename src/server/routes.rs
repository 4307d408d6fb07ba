//! HTTP routes. Handlers are thin: read the body within its limit, hand it
//! to the [`Reviewer`], log and count the answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::admission::{Record, ReviewError, Reviewed, Reviewer};
use crate::config::Mode;
use crate::posture::reflector::CacheSync;
use crate::rules::RuleId;
use crate::subject::Kind;

use super::metrics::ServerMetrics;

#[derive(Clone)]
pub struct AppState {
    pub reviewer: Arc<Reviewer>,
    pub metrics: ServerMetrics,
    pub sync: Arc<CacheSync>,
    pub max_body_bytes: usize,
    /// Set on SIGTERM: `/readyz` answers 503 so the endpoint is removed
    /// while reviews are still served.
    pub draining: Arc<AtomicBool>,
    /// Queues Events for reviews admitted with audit-mode findings.
    pub events: Option<crate::events::AdmissionEvents>,
}

/// The webhook router (served over TLS). Its state is shared behind one
/// `Arc`: each request then clones one pointer, not every handle inside.
pub fn webhook(state: AppState) -> Router {
    let state = Arc::new(state);
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The metrics router (plain HTTP on its own port).
pub fn metrics(registry: Arc<Registry>, metrics: ServerMetrics, sync: Arc<CacheSync>) -> Router {
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

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
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

async fn validate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let bytes = match read_body(&state, "validate", request).await {
        Ok(bytes) => bytes,
        Err(answer) => return answer,
    };
    let reviewed = state.reviewer.validate(&bytes).await;
    if let (Some(events), Ok(reviewed)) = (&state.events, &reviewed) {
        events.offer(&bytes, reviewed);
    }
    answer(&state, "validate", started, reviewed)
}

async fn mutate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let bytes = match read_body(&state, "mutate", request).await {
        Ok(bytes) => bytes,
        Err(answer) => return answer,
    };
    let reviewed = state.reviewer.mutate(&bytes);
    answer(&state, "mutate", started, reviewed)
}

/// The body within its limit, or the answer that refuses it. The whole
/// request is taken, not a `HeaderMap` extractor: that would copy the
/// headers for one look at `Content-Length`.
async fn read_body(
    state: &AppState,
    endpoint: &'static str,
    request: Request,
) -> Result<Bytes, Response> {
    let limit = state.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        state.metrics.observe_bad_request(endpoint);
        return Err(too_large(limit));
    }
    match Limited::new(request.into_body(), limit).collect().await {
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
    let reviewed = match reviewed {
        Ok(reviewed) => reviewed,
        Err(error) => {
            tracing::warn!(endpoint, %error, "rejected a body that is not an AdmissionReview");
            state.metrics.observe_bad_request(endpoint);
            return error_response(StatusCode::BAD_REQUEST, &error.to_string());
        }
    };
    let Reviewed {
        body, record, span, ..
    } = reviewed;
    let body = match body {
        Ok(body) => body,
        Err(error) => {
            span.in_scope(|| tracing::error!(endpoint, %error, "cannot serialise the answer"));
            state.metrics.observe_bad_request(endpoint);
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot serialise the answer",
            );
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    state.metrics.observe_review(endpoint, &record, elapsed);
    log_decision(&span, endpoint, &record, elapsed * 1000.0);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
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

/// One line per decision, in the review's span; constant message, data in
/// fields. The lists are written straight into the line, not joined into
/// strings first. The span is the line's parent rather than entered: the
/// same line without entering and leaving it.
fn log_decision(span: &tracing::Span, endpoint: &'static str, r: &Record, latency_ms: f64) {
    let rules = Joined(",", || {
        r.violations
            .iter()
            .map(|&(rule, mode)| Violation(rule, mode))
    });
    let exempted = Joined(",", || r.exempted.iter().map(|rule| rule.as_str()));
    let omitted = Joined(" | ", || r.omitted.texts.iter());
    tracing::info!(
        parent: span,
        endpoint,
        uid = %r.uid,
        kind = r.kind.map_or("other", Kind::as_str),
        namespace = %r.namespace,
        name = %r.name,
        operation = r.operation,
        user = %r.user,
        dry_run = r.dry_run,
        decision = r.outcome.as_str(),
        rules = %rules,
        exempted = %exempted,
        omitted = %omitted,
        latency_ms,
        "admission review"
    );
}

/// `rule:mode`.
struct Violation(RuleId, Mode);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0, self.1.as_str())
    }
}

/// Displays the items `.1` yields, separated by `.0`.
struct Joined<F>(&'static str, F);

impl<F, I> std::fmt::Display for Joined<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: std::fmt::Display,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, item) in (self.1)().enumerate() {
            if i > 0 {
                f.write_str(self.0)?;
            }
            item.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
