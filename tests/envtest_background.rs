//! The background audit against a real kube-apiserver: objects applied
//! before `meshgate serve` starts are judged once its caches have synced;
//! deleting a namespace's STRICT PeerAuthentication flips the namespace's
//! workloads to violating within seconds, and restoring it flips them back,
//! as the posture metrics on /metrics show.

mod common;
mod envtest;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::Client;
use serde_json::{json, Value};

use common::{collect_lines, eventually, within, Ca, Lines, Metrics};

/// "Within seconds": the debounce and settle pass take about 1.2 s; a loaded
/// 2-core machine gets room.
const FLIP_BOUND: Duration = Duration::from_secs(15);
const STRICT_RULE: &str = "strict-mtls-required";

struct Meshgate {
    child: Child,
    metrics_addr: SocketAddr,
    stdout: Lines,
    _dir: tempfile::TempDir,
}

impl Meshgate {
    async fn start(kubeconfig: &std::path::Path) -> Meshgate {
        let dir = tempfile::tempdir().unwrap();
        let serving = Ca::new("meshgate background test CA").issue();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &serving.cert_pem).unwrap();
        std::fs::write(&key, &serving.key_pem).unwrap();
        let mut command = Command::new(common::BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT");
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("MESHGATE_") || name.to_ascii_lowercase().ends_with("_proxy") {
                command.env_remove(&*name);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start meshgate");
        let stdout = collect_lines(child.stdout.take().unwrap());
        let lines = stdout.clone();
        let metrics_addr = eventually("meshgate to listen", Duration::from_secs(30), || {
            let found = lines.lock().unwrap().iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["message"] == "listening" && v["endpoint"] == "metrics")
                    .then(|| v["addr"].as_str()?.parse::<SocketAddr>().ok())
                    .flatten()
            });
            async move { found }
        })
        .await;
        Meshgate {
            child,
            metrics_addr,
            stdout,
            _dir: dir,
        }
    }

    async fn metrics(&self) -> Metrics {
        let text = within(
            "GET /metrics",
            reqwest::get(format!("http://{}/metrics", self.metrics_addr)),
        )
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
        Metrics(text)
    }

    /// Waits until the metrics satisfy `check`; returns how long it took.
    async fn wait_until(&self, what: &str, check: impl Fn(&Metrics) -> bool) -> Duration {
        let started = Instant::now();
        eventually(what, FLIP_BOUND, || async {
            let metrics = self.metrics().await;
            check(&metrics).then_some(())
        })
        .await;
        started.elapsed()
    }
}

impl Drop for Meshgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- meshgate stdout ---\n{}",
                self.stdout.lock().unwrap().join("\n")
            );
        }
    }
}

fn peer_authentications(client: &Client) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "security.istio.io".into(),
        version: "v1".into(),
        api_version: "security.istio.io/v1".into(),
        kind: "PeerAuthentication".into(),
        plural: "peerauthentications".into(),
    };
    Api::namespaced_with(client.clone(), "shop", &resource)
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
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &ns)
        .await
        .unwrap();
    peer_authentications(client)
        .create(&pp, &strict_policy())
        .await
        .unwrap();
    let resource = ApiResource {
        group: "security.istio.io".into(),
        version: "v1".into(),
        api_version: "security.istio.io/v1".into(),
        kind: "AuthorizationPolicy".into(),
        plural: "authorizationpolicies".into(),
    };
    let deny_all: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-all", "namespace": "shop"}, "spec": {}
    }))
    .unwrap();
    Api::<DynamicObject>::namespaced_with(client.clone(), "shop", &resource)
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
    let meshgate = Meshgate::start(&env.kubeconfig()).await;
    meshgate
        .wait_until("the first complete judgement", |m| {
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
    let flipped = meshgate
        .wait_until("the workloads to violate strict mTLS", |m| {
            shop_strict(m) == 0.0 && strict_violations(m) >= 2.0
        })
        .await;
    eprintln!("re-judged after the PeerAuthentication deletion in {flipped:?}");

    // Restored: back to no violation.
    peer_authentications(&client)
        .create(&PostParams::default(), &strict_policy())
        .await
        .unwrap();
    let restored = meshgate
        .wait_until("the workloads to comply again", |m| {
            shop_strict(m) == 1.0 && strict_violations(m) == 0.0
        })
        .await;
    eprintln!("re-judged after the PeerAuthentication came back in {restored:?}");
}
