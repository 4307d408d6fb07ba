//! The background audit against a real kube-apiserver: objects applied
//! before `meshgate serve` starts are judged once its caches have synced;
//! deleting a namespace's STRICT PeerAuthentication flips the namespace's
//! workloads to violating within seconds, and restoring it flips them back,
//! as the posture metrics on /metrics show.

mod common;
mod envtest;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::Client;
use serde_json::json;

use common::{eventually, Metrics, Options, Server};

/// "Within seconds": the debounce and settle pass take about 1.2 s; a loaded
/// 2-core machine gets room.
const FLIP_BOUND: Duration = Duration::from_secs(15);
const STRICT_RULE: &str = "strict-mtls-required";

/// Waits until the metrics of `meshgate` satisfy `check`; returns how long
/// it took.
async fn wait_until(meshgate: &Server, what: &str, check: impl Fn(&Metrics) -> bool) -> Duration {
    let started = Instant::now();
    eventually(what, FLIP_BOUND, || async {
        let metrics = meshgate.metrics().await;
        check(&metrics).then_some(())
    })
    .await;
    started.elapsed()
}

fn peer_authentications(client: &Client) -> Api<DynamicObject> {
    envtest::istio_api(client, "shop", "security.istio.io", "PeerAuthentication")
}

fn strict_policy() -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "shop"},
        "spec": {"mtls": {"mode": "STRICT"}}
    }))
    .unwrap()
}

/// The shop namespace: enrolled, STRICT, deny-by-default, with a Deployment
/// and a pod nobody owns.
async fn apply_shop(client: &Client) {
    let pp = PostParams::default();
    envtest::create_namespace(client, "shop", json!({"istio-injection": "enabled"})).await;
    peer_authentications(client)
        .create(&pp, &strict_policy())
        .await
        .unwrap();
    let deny_all: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-all", "namespace": "shop"}, "spec": {}
    }))
    .unwrap();
    envtest::istio_api(client, "shop", "security.istio.io", "AuthorizationPolicy")
        .create(&pp, &deny_all)
        .await
        .unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"serviceAccountName": "web",
                     "containers": [{"name": "app", "image": "shop:1"}]}
        }}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "shop")
        .create(&pp, &deployment)
        .await
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "lone", "namespace": "shop", "labels": {"app": "lone"}},
        "spec": {"serviceAccountName": "lone", "hostNetwork": true,
                 "containers": [{"name": "app", "image": "shop:1"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), "shop")
        .create(&pp, &pod)
        .await
        .unwrap();
}

fn strict_violations(metrics: &Metrics) -> f64 {
    metrics.value("meshgate_background_violations", &[("rule", STRICT_RULE)])
}

fn shop_strict(metrics: &Metrics) -> f64 {
    metrics.value(
        "meshgate_namespace_mtls_strict",
        &[("k8s_namespace", "shop")],
    )
}

#[tokio::test]
async fn background_audit_follows_the_namespace_posture() {
    let Some(env) = envtest::start("envtest_background") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    apply_shop(&client).await;

    // Applied before meshgate starts: judged once it has synced.
    let meshgate = Server::start(Options::default().kubeconfig(env.kubeconfig()));
    wait_until(&meshgate, "the first complete judgement", |m| {
        m.value("meshgate_background_audit_complete", &[]) == 1.0
            && m.value("meshgate_background_objects", &[("kind", "Deployment")]) == 1.0
            && m.value("meshgate_background_objects", &[("kind", "Pod")]) == 1.0
            && shop_strict(m) == 1.0
    })
    .await;
    let metrics = meshgate.metrics().await;
    assert_eq!(strict_violations(&metrics), 0.0, "{}", metrics.0);
    assert!(
        metrics.value(
            "meshgate_background_violations",
            &[("rule", "no-host-network")]
        ) >= 1.0,
        "the lone pod uses the host network: {}",
        metrics.0
    );

    // The STRICT policy goes: the Deployment and the pod now violate.
    peer_authentications(&client)
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    let flipped = wait_until(&meshgate, "the workloads to violate strict mTLS", |m| {
        shop_strict(m) == 0.0 && strict_violations(m) >= 2.0
    })
    .await;
    eprintln!("re-judged after the PeerAuthentication deletion in {flipped:?}");

    // Restored: back to no violation.
    peer_authentications(&client)
        .create(&PostParams::default(), &strict_policy())
        .await
        .unwrap();
    let restored = wait_until(&meshgate, "the workloads to comply again", |m| {
        shop_strict(m) == 1.0 && strict_violations(m) == 0.0
    })
    .await;
    eprintln!("re-judged after the PeerAuthentication came back in {restored:?}");
}
