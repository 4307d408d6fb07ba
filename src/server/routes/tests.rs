//! The webhook router driven in-process (`ServiceExt::oneshot`): the HTTP
//! answers that need no TLS, no socket and no process. tests/server.rs keeps
//! what needs the real server (TLS, HTTP/2, connections, the binary).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use parking_lot::RwLock;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tower::ServiceExt;

use super::{webhook, AppState};
use crate::admission::Reviewer;
use crate::config::Config;
use crate::posture::reflector::{self, CacheSync};
use crate::posture::{files, Availability, SharedPosture};
use crate::server::metrics::ServerMetrics;

const LIMIT: usize = 64 * 1024;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/admission/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The router over the test cluster state, as `serve --state-from` builds
/// it, with its state for inspection.
fn router_with(sync: CacheSync) -> (Router, AppState, Registry) {
    let state_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state"));
    let index = files::index_paths(&[state_dir], "default").unwrap();
    let posture: SharedPosture = Arc::new(RwLock::new(index));
    let sync = Arc::new(sync);
    let mut registry = Registry::default();
    let metrics = ServerMetrics::register(&mut registry);
    let state = AppState {
        reviewer: Arc::new(
            Reviewer::new(Arc::new(Config::default()), posture).with_sync(sync.clone()),
        ),
        metrics,
        sync,
        max_body_bytes: LIMIT,
        draining: Arc::new(AtomicBool::new(false)),
        events: None,
    };
    (webhook(state.clone()), state, registry)
}

fn router() -> (Router, AppState, Registry) {
    router_with(CacheSync::all_synced(&reflector::all()))
}

fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::builder().uri(path).body(Body::empty()).unwrap()
}

async fn send(router: Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

async fn send_json(router: Router, request: Request<Body>) -> (StatusCode, Value) {
    let (status, body) = send(router, request).await;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
    (status, value)
}

fn exposition(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test]
async fn healthz_answers_ok() {
    let (router, _, _) = router();
    let (status, body) = send(router, get("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"ok");
}

#[tokio::test]
async fn readyz_follows_the_caches_and_the_drain() {
    let (router, state, _) = router_with(CacheSync::new(&reflector::all()));
    let (status, body) = send_json(router.clone(), get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["ready"], false);
    assert_eq!(
        body["waitingForCaches"].as_array().map(Vec::len),
        Some(reflector::all().len()),
        "{body}"
    );

    for resource in reflector::all() {
        let availability = if resource == reflector::PEER_AUTHENTICATIONS {
            Availability::Missing
        } else {
            Availability::Present
        };
        state.sync.mark_synced(resource, availability);
    }
    let (status, body) = send_json(router.clone(), get("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ready"], true);
    assert_eq!(
        body["istioCrdsMissing"],
        serde_json::json!([reflector::PEER_AUTHENTICATIONS])
    );

    state.draining.store(true, Ordering::Release);
    let (status, body) = send_json(router, get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["draining"], true);
}

#[tokio::test]
async fn readyz_is_plain_ready_with_complete_state() {
    let (router, _, _) = router();
    let (status, body) = send(router, get("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"ready");
}

#[tokio::test]
async fn validate_allows_and_denies_and_counts_with_enum_labels() {
    let (router, _, registry) = router();
    let (status, allowed) = send_json(
        router.clone(),
        post("/validate", fixture("pod-create-injected.json")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed["response"]["allowed"], true, "{allowed}");

    let (status, denied) =
        send_json(router, post("/validate", fixture("pod-create-plain.json"))).await;
    assert_eq!(status, StatusCode::OK);
    let response = &denied["response"];
    assert_eq!(response["allowed"], false, "{denied}");
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("meshgate denied pod bookinfo/plain-nginx: "),
        "{message}"
    );

    let text = exposition(&registry);
    for series in [
        r#"meshgate_admission_requests_total{endpoint="validate",kind="Pod",operation="CREATE",decision="allowed"} 1"#,
        r#"meshgate_admission_requests_total{endpoint="validate",kind="Pod",operation="CREATE",decision="denied"} 1"#,
        r#"meshgate_violations_total{rule="sidecar-required",mode="enforce"} 1"#,
    ] {
        assert!(text.contains(series), "{series} in:\n{text}");
    }
}

#[tokio::test]
async fn mutate_lets_other_kinds_through_unpatched() {
    let (router, _, _) = router();
    let (status, body) =
        send_json(router, post("/mutate", fixture("deployment-create.json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert!(body["response"].get("patch").is_none(), "{body}");
}

#[tokio::test]
async fn a_body_that_is_not_a_review_is_400_and_counted_as_an_error() {
    let (router, _, registry) = router();
    let (status, body) = send_json(router, post("/validate", "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{body}"
    );
    let series = r#"meshgate_admission_requests_total{endpoint="validate",kind="unknown",operation="unknown",decision="error"} 1"#;
    let text = exposition(&registry);
    assert!(text.contains(series), "{series} in:\n{text}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_declared_or_not() {
    let (router, _, _) = router();
    let declared = Request::builder()
        .method(Method::POST)
        .uri("/validate")
        .header(header::CONTENT_LENGTH, LIMIT + 1)
        .body(Body::empty())
        .unwrap();
    let (status, body) = send_json(router.clone(), declared).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        body["error"].as_str().unwrap().contains("-byte limit"),
        "{body}"
    );

    // No length given: the body is cut off once it passes the limit.
    let chunks =
        futures::stream::iter((0..3).map(|_| Ok::<_, std::io::Error>(vec![b' '; LIMIT / 2])));
    let streamed = post("/validate", Body::from_stream(chunks));
    let (status, _) = send_json(router, streamed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused() {
    let (router, _, _) = router();
    let (status, _) = send(router.clone(), get("/validate")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = send(router, post("/nowhere", "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
