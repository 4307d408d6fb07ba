//! The API server goes away while `meshgate serve` watches it: a restart,
//! then an outage of a minute (`MESHGATE_ENVTEST_OUTAGE_SECS` to change it),
//! against a real kube-apiserver whose etcd keeps its data. meshgate must log
//! and count the lost and re-established watches, stay ready, keep its cached
//! denials, never let in on stale state what the API server's current
//! policies deny, and re-list when the watch comes back. Every watched kind
//! (the posture index's and the background audit's, one watch each) keeps
//! that discipline: a line when lost, one when back, counters in between;
//! and kube-client's own error lines stay out.

mod common;
mod envtest;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::{eventually, fixture, with_namespace, Options, Server};

const DEPLOYMENT: &str = "deployment-create.json";
const RESOURCES: [&str; 6] = [
    "namespaces",
    "peerauthentications.security.istio.io",
    "authorizationpolicies.security.istio.io",
    "destinationrules.networking.istio.io",
    "sidecars.networking.istio.io",
    "serviceentries.networking.istio.io",
];
/// kube-runtime's backoff grows to 30 s while the API server is away; a
/// watch comes back within that (plus a loaded machine's slack) once it is up.
const RECONNECT_BOUND: Duration = Duration::from_secs(75);

fn outage() -> Duration {
    let secs = std::env::var("MESHGATE_ENVTEST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

// ------------------------------------------------------------------ meshgate

/// How many log lines say `message` for `resource`.
fn count(meshgate: &Server, message: &str, resource: &str) -> usize {
    meshgate
        .log_entries()
        .iter()
        .filter(|v| v["message"] == message && v["resource"] == resource)
        .count()
}

/// Waits until every watched resource has logged `message` `n` times.
async fn wait_for_each(meshgate: &Server, message: &str, n: usize, bound: Duration) {
    eventually(
        &format!("{n} x {message:?} for every resource"),
        bound,
        || {
            let done = RESOURCES.iter().all(|r| count(meshgate, message, r) >= n);
            async move { done.then_some(()) }
        },
    )
    .await;
}

async fn readyz(meshgate: &Server) -> StatusCode {
    meshgate.get("/readyz").await.0
}

/// The fixture Deployment, in `ns`, through `/validate`.
async fn review(meshgate: &Server, ns: &str) -> Value {
    meshgate
        .review(with_namespace(&fixture(DEPLOYMENT), ns))
        .await
}

fn allowed(response: &Value) -> bool {
    response["allowed"] == true
}

fn message(response: &Value) -> &str {
    response["status"]["message"].as_str().unwrap_or_default()
}

const LISTED: &str = "cache synced";
const LOST: &str = "watch lost; answering from the cache until it is re-established";
const BACK: &str = "watch re-established; cache re-listed";

/// Every resource meshgate watches (those it listed): the posture index's
/// and the background audit's.
fn watched_resources(meshgate: &Server) -> Vec<String> {
    let mut resources: Vec<String> = meshgate
        .log_entries()
        .iter()
        .filter(|v| v["message"] == LISTED)
        .filter_map(|v| v["resource"].as_str().map(str::to_owned))
        .collect();
    resources.sort();
    resources.dedup();
    resources
}

/// The messages of meshgate's log lines at WARN or ERROR about a watched
/// resource, the number of those from kube's client, and the whole log's
/// line count.
fn noisy_lines(meshgate: &Server) -> (Vec<String>, usize, usize) {
    let entries = meshgate.log_entries();
    let loud = |v: &&Value| v["level"] == "WARN" || v["level"] == "ERROR";
    let watches = entries
        .iter()
        .filter(loud)
        .filter(|v| v["resource"].is_string())
        .filter_map(|v| v["message"].as_str())
        .map(str::to_owned)
        .collect();
    let client = entries
        .iter()
        .filter(loud)
        .filter(|v| {
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("kube_client"))
        })
        .count();
    (watches, client, entries.len())
}

// ------------------------------------------------------------------ cluster

fn authorization_policies(client: &Client, ns: &str) -> Api<DynamicObject> {
    envtest::istio_api(client, ns, "security.istio.io", "AuthorizationPolicy")
}

fn allow_nothing() -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow-nothing"}, "spec": {}
    }))
    .unwrap()
}

/// istio-system with the mesh-wide STRICT baseline; `bookinfo` and `legacy`
/// enrolled, only `bookinfo` with a deny-by-default policy.
async fn seed(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let create = PostParams::default();
    for (name, labels) in [
        ("istio-system", json!({})),
        ("bookinfo", json!({"istio-injection": "enabled"})),
        ("legacy", json!({"istio-injection": "enabled"})),
    ] {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        namespaces.create(&create, &ns).await.unwrap();
    }
    let strict: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default"}, "spec": {"mtls": {"mode": "STRICT"}}
    }))
    .unwrap();
    let pas = envtest::istio_api(
        client,
        "istio-system",
        "security.istio.io",
        "PeerAuthentication",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = pas.create(&create, &strict).await {
        // The CRD is established, but discovery may lag a moment.
        assert!(Instant::now() < deadline, "cannot create the baseline: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    authorization_policies(client, "bookinfo")
        .create(&create, &allow_nothing())
        .await
        .unwrap();
}

// -------------------------------------------------------------------- test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshgate_rides_out_an_api_server_restart_and_outage() {
    let Some(env) = envtest::start("meshgate_rides_out_an_api_server_restart_and_outage") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    envtest::install_exemption_crds(&client).await;
    seed(&client).await;

    let meshgate = Server::start(
        Options::default()
            .kubeconfig(env.kubeconfig())
            .args(&["--confirm-timeout", "1s"]),
    );
    eventually("meshgate ready", Duration::from_secs(60), || async {
        (readyz(&meshgate).await == StatusCode::OK).then_some(())
    })
    .await;
    let metrics = meshgate.metrics().await;
    for resource in RESOURCES {
        for name in [
            "meshgate_watch_errors_total",
            "meshgate_watch_restarts_total",
        ] {
            assert!(
                metrics
                    .0
                    .contains(&format!("{name}{{resource=\"{resource}\"}} 0")),
                "{name} for {resource} is created at zero:\n{}",
                metrics.0
            );
        }
    }
    let response = review(&meshgate, "bookinfo").await;
    assert!(allowed(&response), "{response}");
    let response = review(&meshgate, "legacy").await;
    assert!(
        message(&response).contains("[default-deny-required]"),
        "{response}"
    );

    // 1. A restart: every watch is lost, then re-established with a re-list.
    env.restart_apiserver();
    wait_for_each(
        &meshgate,
        "watch re-established; cache re-listed",
        1,
        RECONNECT_BOUND,
    )
    .await;
    for resource in RESOURCES {
        assert_eq!(
            count(
                &meshgate,
                "watch lost; answering from the cache until it is re-established",
                resource
            ),
            1,
            "{resource}"
        );
    }
    let metrics = meshgate.metrics().await;
    for resource in RESOURCES {
        let restarts = metrics.value("meshgate_watch_restarts_total", &[("resource", resource)]);
        let errors = metrics.value("meshgate_watch_errors_total", &[("resource", resource)]);
        assert_eq!(restarts, 1.0, "{resource}");
        assert!(errors >= 1.0, "{resource}: {errors}");
    }
    assert!(allowed(&review(&meshgate, "bookinfo").await));

    // 2. The API server is away for a while.
    env.stop_apiserver();
    let stopped = Instant::now();
    wait_for_each(
        &meshgate,
        "watch lost; answering from the cache until it is re-established",
        2,
        Duration::from_secs(30),
    )
    .await;
    // Still ready: an unready meshgate would have the API server, once
    // back, fail every call (failurePolicy) instead of getting answers.
    assert_eq!(readyz(&meshgate).await, StatusCode::OK);
    // A cached denial stands: the confirmation cannot reach the API server.
    let started = Instant::now();
    let response = review(&meshgate, "legacy").await;
    assert!(
        message(&response).contains("[default-deny-required]"),
        "{response}"
    );
    // A cached allow cannot be confirmed either: whileSyncing (deny).
    let response = review(&meshgate, "bookinfo").await;
    assert!(!allowed(&response), "{response}");
    assert!(
        message(&response).contains("lost its watch of the API server"),
        "{response}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2 + 5),
        "answered within the confirm timeout (1s each) plus slack: {:?}",
        started.elapsed()
    );
    if let Some(rest) = outage().checked_sub(stopped.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    env.start_apiserver();

    // The policies change before meshgate's watch is back: bookinfo loses
    // its deny-by-default policy, legacy gets one. Cached state says the
    // opposite; the answers must follow the API server.
    authorization_policies(&client, "bookinfo")
        .delete("allow-nothing", &DeleteParams::default())
        .await
        .unwrap();
    authorization_policies(&client, "legacy")
        .create(&PostParams::default(), &allow_nothing())
        .await
        .unwrap();
    let response = review(&meshgate, "bookinfo").await;
    assert!(
        message(&response).contains("[default-deny-required]"),
        "never allowed on stale state: {response}"
    );
    let response = review(&meshgate, "legacy").await;
    assert!(allowed(&response), "{response}");

    wait_for_each(
        &meshgate,
        "watch re-established; cache re-listed",
        2,
        RECONNECT_BOUND,
    )
    .await;
    // The re-list replaced the cache: one AuthorizationPolicy, legacy's.
    let relisted = meshgate
        .log_entries()
        .into_iter()
        .rfind(|v| {
            v["message"] == "watch re-established; cache re-listed"
                && v["resource"] == "authorizationpolicies.security.istio.io"
        })
        .unwrap();
    assert_eq!(relisted["objects"], 1, "{relisted}");
    assert!(relisted["down_seconds"].as_f64().unwrap() >= outage().as_secs_f64() - 1.0);
    let metrics = meshgate.metrics().await;
    for resource in RESOURCES {
        assert_eq!(
            metrics.value("meshgate_watch_restarts_total", &[("resource", resource)]),
            2.0,
            "{resource}"
        );
    }
    assert!(allowed(&review(&meshgate, "legacy").await));
    assert!(!allowed(&review(&meshgate, "bookinfo").await));

    // Every watch, the background audit's kinds too: one line lost and one
    // back per resource and outage (the restart, then the stop), however
    // long it lasted; every failed call counted. Before issue 20, the
    // background audit's own watches logged 65 warnings and 157
    // kube-client errors in 70 s.
    let watched = watched_resources(&meshgate);
    assert!(watched.len() >= 13, "{watched:?}");
    eventually("every watch back twice", RECONNECT_BOUND, || {
        let done = watched.iter().all(|r| count(&meshgate, BACK, r) >= 2);
        async move { done.then_some(()) }
    })
    .await;
    let metrics = meshgate.metrics().await;
    for resource in &watched {
        assert_eq!(count(&meshgate, LOST, resource), 2, "{resource}");
        assert_eq!(count(&meshgate, BACK, resource), 2, "{resource}");
        let labels = [("resource", resource.as_str())];
        assert_eq!(
            metrics.value("meshgate_watch_restarts_total", &labels),
            2.0,
            "{resource}"
        );
        assert!(
            metrics.value("meshgate_watch_errors_total", &labels) >= 2.0,
            "{resource}"
        );
    }
    let (loud, client_loud, lines) = noisy_lines(&meshgate);
    eprintln!(
        "outage of {:?} plus a restart: {} watch warnings for {} watched resources, {client_loud} kube-client warning/error lines, {lines} log lines in all",
        outage(),
        loud.len(),
        watched.len()
    );
    // Besides the losses: a kind whose API is not served (no cert-manager)
    // probes every 30 s and says once that it cannot reach the API.
    let others: Vec<&String> = loud.iter().filter(|m| *m != LOST).collect();
    assert!(
        others.iter().all(|m| m.starts_with("cannot probe the API")),
        "{others:?}"
    );
    assert!(others.len() <= 2, "{others:?}");
    assert_eq!(client_loud, 0, "kube-client's own lines are filtered out");
}
