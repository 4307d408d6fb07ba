//! The cluster feeder end to end, with no cluster: the real `meshgate serve`
//! binary watches a fake API server (tests/fake_apiserver) through a
//! kubeconfig, and the tests change the fake's objects while reviews arrive.
//! They check readiness before and after the caches sync, decisions that
//! follow watch events, confirm-on-deny reading the API server, and missing
//! Istio CRDs.

mod common;
mod fake_apiserver;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use common::{eventually, fixture, uid_of, Options, Server};
use fake_apiserver::FakeApiServer;

/// Upper bound for anything that should follow a watch event or start-up.
const BOUND: Duration = Duration::from_secs(10);

const NAMESPACES: &str = "/api/v1/namespaces";
const DEPLOYMENT: &str = "deployment-create.json";

// ------------------------------------------------------------ cluster state

fn namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut all = serde_json::Map::new();
    all.insert("kubernetes.io/metadata.name".into(), name.into());
    for (k, v) in labels {
        all.insert((*k).into(), (*v).into());
    }
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": all},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

fn bookinfo(injection: &str) -> Value {
    namespace("bookinfo", &[("istio-injection", injection)])
}

/// The mesh-wide STRICT PeerAuthentication `istio-system/default`.
fn mesh_wide_strict(api_version: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "istio-system"},
        "spec": {"mtls": {"mode": "STRICT"}},
    })
}

/// The allow-nothing AuthorizationPolicy of `bookinfo`.
fn allow_nothing(api_version: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow-nothing", "namespace": "bookinfo"},
        "spec": {},
    })
}

/// Namespaces as on a small cluster with Istio: `bookinfo` enrolled.
fn seed_namespaces(api: &FakeApiServer) {
    for name in ["default", "kube-system", "istio-system"] {
        api.apply(namespace(name, &[]));
    }
    api.apply(bookinfo("enabled"));
}

/// Namespaces plus the baseline that lets the workload fixtures in.
fn seed_baseline(api: &FakeApiServer) {
    seed_namespaces(api);
    api.apply(mesh_wide_strict("security.istio.io/v1"));
    api.apply(allow_nothing("security.istio.io/v1"));
}

// ------------------------------------------------------------------ server

/// A `meshgate serve` that watches `api`.
fn start(api: &FakeApiServer, extra: &[&str]) -> Server {
    Server::start(Options::default().kubeconfig(api.kubeconfig()).args(extra))
}

/// meshgate watching a baseline cluster, ready, and letting the fixture
/// Deployment in.
async fn allowing_on_a_baseline() -> (FakeApiServer, Server) {
    let api = FakeApiServer::start().await;
    seed_baseline(&api);
    let server = start(&api, &[]);
    ready(&server).await;
    let response = server.review(fixture(DEPLOYMENT)).await;
    assert!(allowed(&response), "{response}");
    (api, server)
}

/// Sends the fixture until its answer satisfies `wanted`, within BOUND.
async fn review_until(
    server: &Server,
    name: &str,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, BOUND, || async {
        let response = server.review(fixture(name)).await;
        wanted(&response).then_some(response)
    })
    .await
}

fn allowed(response: &Value) -> bool {
    response["allowed"] == true
}

fn message(response: &Value) -> &str {
    response["status"]["message"].as_str().unwrap_or_default()
}

fn denied_by(rule: &str) -> impl Fn(&Value) -> bool + '_ {
    move |r| !allowed(r) && message(r).contains(&format!("[{rule}]"))
}

/// Waits until every cache has synced and `/readyz` answers 200.
async fn ready(server: &Server) -> String {
    eventually("/readyz to answer 200", BOUND, || async {
        let (status, body) = server.get("/readyz").await;
        (status == StatusCode::OK).then_some(body)
    })
    .await
}

// ------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_every_cache_then_turns_ready() {
    let api = FakeApiServer::start().await;
    seed_baseline(&api);
    api.hold_lists(NAMESPACES);
    let server = start(&api, &[]);

    // The Istio caches sync; only the held namespaces keep it unready.
    let waiting = eventually("/readyz to wait only for namespaces", BOUND, || async {
        let (status, body) = server.get("/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let body: Value = serde_json::from_str(&body).expect("/readyz JSON");
        (body["waitingForCaches"] == json!(["namespaces"])).then_some(body)
    })
    .await;
    assert_eq!(waiting["ready"], false, "{waiting}");
    assert!(api.lists(NAMESPACES) >= 1, "{}", api.request_log());

    // whileSyncing defaults to deny, saying why.
    let response = server.review(fixture("pod-create-injected.json")).await;
    assert!(!allowed(&response), "{response}");
    assert_eq!(response["status"]["code"], 403, "{response}");
    assert!(
        message(&response).contains("meshgate has not finished loading the cluster's mesh posture"),
        "{response}"
    );

    api.release_lists(NAMESPACES);
    assert_eq!(ready(&server).await, "ready");
    let response = server.review(fixture("pod-create-injected.json")).await;
    assert!(allowed(&response), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_follow_namespace_relabelling() {
    let (api, server) = allowing_on_a_baseline().await;
    let lists = api.lists(NAMESPACES);

    api.apply(bookinfo("disabled"));
    let response = review_until(
        &server,
        DEPLOYMENT,
        "a denial once bookinfo is istio-injection=disabled",
        denied_by("sidecar-required"),
    )
    .await;
    assert!(
        message(&response).contains("namespace \"bookinfo\" is labelled istio-injection=disabled"),
        "{response}"
    );

    api.apply(bookinfo("enabled"));
    review_until(
        &server,
        DEPLOYMENT,
        "an allow once bookinfo is enrolled again",
        allowed,
    )
    .await;
    // The watch carried both changes; nothing was re-listed.
    assert_eq!(api.lists(NAMESPACES), lists, "{}", api.request_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_peer_authentication_changes_decisions() {
    const PAS: &str = "/apis/security.istio.io/v1/peerauthentications";
    let (api, server) = allowing_on_a_baseline().await;
    let lists = api.lists(PAS);

    // Deleted from the API server (so the confirm read agrees) and the watch.
    api.delete(
        "security.istio.io/v1",
        "PeerAuthentication",
        Some("istio-system"),
        "default",
    );
    let response = review_until(
        &server,
        DEPLOYMENT,
        "a denial once the STRICT PeerAuthentication is gone",
        denied_by("strict-mtls-required"),
    )
    .await;
    assert!(
        message(&response).contains("PERMISSIVE (no PeerAuthentication applies: Istio's default)"),
        "{response}"
    );
    // The DELETED event did it, not a re-list.
    assert_eq!(api.lists(PAS), lists, "{}", api.request_log());
    // The denial was confirmed against the API server first.
    for path in [
        "/apis/security.istio.io/v1/namespaces/bookinfo/peerauthentications",
        "/apis/security.istio.io/v1/namespaces/istio-system/peerauthentications",
    ] {
        assert!(api.lists(path) >= 1, "{path}:\n{}", api.request_log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_on_the_api_server_but_not_in_the_cache_does_not_cause_a_denial() {
    const BOOKINFO_PAS: &str = "/apis/security.istio.io/v1/namespaces/bookinfo/peerauthentications";
    const ROOT_PAS: &str = "/apis/security.istio.io/v1/namespaces/istio-system/peerauthentications";
    let api = FakeApiServer::start().await;
    seed_namespaces(&api);
    api.apply(allow_nothing("security.istio.io/v1"));
    let server = start(&api, &["--confirm-timeout", "200ms"]);
    ready(&server).await;

    // Applied a moment ago: the API server has it, the watch has not told
    // meshgate yet (and here never will).
    api.apply_unwatched(mesh_wide_strict("security.istio.io/v1"));
    let response = server.review(fixture(DEPLOYMENT)).await;
    assert!(allowed(&response), "{response}");
    assert!(api.lists(BOOKINFO_PAS) >= 1, "{}", api.request_log());
    assert!(api.lists(ROOT_PAS) >= 1, "{}", api.request_log());
    let uid = uid_of(&fixture(DEPLOYMENT));
    // Log lines reach stdout in batches (serve::log), a moment after the
    // answer.
    eventually("an overturned confirmation in the log", BOUND, || async {
        server
            .log_entries()
            .iter()
            .any(|e| {
                e["message"] == "posture denial confirmed against the API server"
                    && e["uid"] == uid.as_str()
                    && e["overturned"] == true
            })
            .then_some(())
    })
    .await;

    // When the API server is slower than --confirm-timeout, the cached
    // denial stands.
    api.delay_lists(ROOT_PAS, Duration::from_secs(3));
    let confirm_reads = api.lists(ROOT_PAS);
    let response = server.review(fixture(DEPLOYMENT)).await;
    assert!(denied_by("strict-mtls-required")(&response), "{response}");
    assert_eq!(
        api.lists(ROOT_PAS),
        confirm_reads + 1,
        "{}",
        api.request_log()
    );
    eventually(
        "the log to say the cached posture stands",
        BOUND,
        || async {
            server.log_entries().into_iter().find(|e| {
                e["message"] == "cannot confirm the denial; the cached posture stands"
                    && e["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("took longer than 200ms"))
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_istio_crds_are_reported_not_passed() {
    let api = FakeApiServer::start().await;
    seed_namespaces(&api);
    api.set_group_missing("security.istio.io", true);
    api.set_group_missing("networking.istio.io", true);
    let server = start(&api, &[]);

    let body: Value = serde_json::from_str(&ready(&server).await).expect("/readyz JSON");
    assert_eq!(body["ready"], true, "{body}");
    let mut missing: Vec<&str> = body["istioCrdsMissing"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    missing.sort_unstable();
    assert_eq!(
        missing,
        [
            "authorizationpolicies.security.istio.io",
            "destinationrules.networking.istio.io",
            "peerauthentications.security.istio.io",
            "serviceentries.networking.istio.io",
            "sidecars.networking.istio.io",
        ],
        "{body}"
    );
    // Every version was tried before giving up.
    for version in ["v1", "v1beta1", "v1alpha3"] {
        let path = format!("/apis/networking.istio.io/{version}/sidecars");
        assert!(api.lists(&path) >= 1, "{path}:\n{}", api.request_log());
    }

    let response = server.review(fixture(DEPLOYMENT)).await;
    assert!(!allowed(&response), "{response}");
    assert!(
        message(&response).starts_with("meshgate denied deployment bookinfo/productpage-v1: "),
        "{response}"
    );
    assert!(
        message(&response).contains("[strict-mtls-required] mTLS posture cannot be verified"),
        "{response}"
    );
    assert!(
        message(&response)
            .contains("[default-deny-required] authorization posture cannot be verified"),
        "{response}"
    );
    let entries = server.log_entries();
    let error = entries
        .iter()
        .find(|e| {
            e["level"] == "ERROR"
                && e["resource"] == "peerauthentications.security.istio.io"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Istio CRD not installed"))
        })
        .unwrap_or_else(|| panic!("no error line about the missing CRD"));
    assert!(error["message"].as_str().unwrap().contains("unverifiable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1beta1_only_clusters_are_watched_at_v1beta1() {
    const V1BETA1_PAS: &str = "/apis/security.istio.io/v1beta1/peerauthentications";
    let api = FakeApiServer::start().await;
    seed_namespaces(&api);
    api.set_version_missing("security.istio.io", "v1", true);
    api.apply(mesh_wide_strict("security.istio.io/v1beta1"));
    api.apply(allow_nothing("security.istio.io/v1beta1"));
    let server = start(&api, &[]);

    assert_eq!(ready(&server).await, "ready");
    let response = server.review(fixture(DEPLOYMENT)).await;
    assert!(allowed(&response), "{response}");
    // Log lines reach stdout in batches (serve::log), a moment later.
    let watching = eventually(
        "a `watching` line for PeerAuthentications",
        BOUND,
        || async {
            server.log_entries().into_iter().find(|e| {
                e["message"] == "watching"
                    && e["resource"] == "peerauthentications.security.istio.io"
            })
        },
    )
    .await;
    assert_eq!(watching["version"], "v1beta1", "{watching}");
    // The metadata-only probe answered 404 at v1, then parsed at v1beta1.
    assert!(
        api.lists("/apis/security.istio.io/v1/peerauthentications") >= 1,
        "{}",
        api.request_log()
    );
    assert!(
        !server
            .log_entries()
            .iter()
            .any(|e| e["message"] == "cannot probe the API; retrying"),
        "the probe failed"
    );

    // Events arrive over the v1beta1 watch, and confirm reads v1beta1 too.
    api.delete(
        "security.istio.io/v1beta1",
        "PeerAuthentication",
        Some("istio-system"),
        "default",
    );
    review_until(
        &server,
        DEPLOYMENT,
        "a denial once the v1beta1 PeerAuthentication is gone",
        denied_by("strict-mtls-required"),
    )
    .await;
    assert!(api.watches(V1BETA1_PAS) >= 1, "{}", api.request_log());
    assert_eq!(
        api.watches("/apis/security.istio.io/v1/peerauthentications"),
        0,
        "{}",
        api.request_log()
    );
    assert!(
        api.lists("/apis/security.istio.io/v1beta1/namespaces/bookinfo/peerauthentications") >= 1,
        "{}",
        api.request_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_drops_objects_deleted_while_the_watch_was_down() {
    const PAS: &str = "/apis/security.istio.io/v1/peerauthentications";
    let (api, server) = allowing_on_a_baseline().await;
    let lists = api.lists(PAS);

    // The policy goes while no watch would have told meshgate; then the
    // API server's history is compacted, so the watchers must re-list.
    api.delete_unwatched(
        "security.istio.io/v1",
        "PeerAuthentication",
        Some("istio-system"),
        "default",
    );
    api.expire_watches();
    review_until(
        &server,
        DEPLOYMENT,
        "a denial once the re-list no longer has the STRICT PeerAuthentication",
        denied_by("strict-mtls-required"),
    )
    .await;
    // The denial can come first from confirming the allow against the API
    // server (the watch is marked lost); the watcher's re-list follows.
    eventually(
        "the watcher re-lists after 410",
        Duration::from_secs(20),
        || async { (api.lists(PAS) > lists).then_some(()) },
    )
    .await;
    // Everything else survived the re-list.
    let response = server.review(fixture("pod-create-injected.json")).await;
    assert!(denied_by("strict-mtls-required")(&response), "{response}");
    assert!(
        !message(&response).contains("[default-deny-required]")
            && !message(&response).contains("[sidecar-required]"),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_service_entries_decide_destination_rules() {
    const SERVICE_ENTRIES: &str = "/apis/networking.istio.io/v1/serviceentries";
    let api = FakeApiServer::start().await;
    seed_baseline(&api);
    let server = start(&api, &[]);
    ready(&server).await;
    // TLS origination to a host no ServiceEntry puts in the mesh.
    let review = common::edit(&fixture("destinationrule-create-disable.json"), |v| {
        v["request"]["object"]["spec"] = json!({
            "host": "ratings.vm.bookinfo.internal",
            "trafficPolicy": {"tls": {"mode": "SIMPLE"}},
        });
    });
    let response = server.review(review.clone()).await;
    assert!(allowed(&response), "{response}");
    assert!(api.lists(SERVICE_ENTRIES) >= 1, "{}", api.request_log());

    api.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "ratings-vm", "namespace": "bookinfo"},
        "spec": {"hosts": ["ratings.vm.bookinfo.internal"], "location": "MESH_INTERNAL",
                 "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                 "resolution": "STATIC"},
    }));
    let response = eventually("a denial once the host is MESH_INTERNAL", BOUND, || async {
        let response = server.review(review.clone()).await;
        denied_by("destination-rule-mtls")(&response).then_some(response)
    })
    .await;
    assert!(
        message(&response).contains("(ServiceEntry bookinfo/ratings-vm declares it MESH_INTERNAL)"),
        "{response}"
    );

    api.delete(
        "networking.istio.io/v1",
        "ServiceEntry",
        Some("bookinfo"),
        "ratings-vm",
    );
    eventually("an allow once the ServiceEntry is gone", BOUND, || async {
        allowed(&server.review(review.clone()).await).then_some(())
    })
    .await;
}
