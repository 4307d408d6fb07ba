//! Helpers of the native-policy envtest tests (envtest_native_outage,
//! envtest_native_mount_diff): pods, server-side dry runs, the native objects, and
//! `meshgate serve` writing them and stopping.

#![allow(dead_code)] // each test binary uses a different part of it

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Client;
use serde_json::{json, Value};

use crate::common::{eventually, Options, Server};
use crate::envtest;
use meshgate::config::Config;

/// The election and the first pass take a few seconds; the API server
/// starts enforcing a new policy within about a second more.
pub const SYNC_BOUND: Duration = Duration::from_secs(60);
pub const ENROLLED: &str = "shop";

pub fn native_api(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

pub async fn native_objects(client: &Client) -> Vec<String> {
    let mut names = Vec::new();
    for (kind, plural) in meshgate::native::sync::KINDS {
        let list = native_api(client, kind, plural)
            .list_metadata(&ListParams::default().labels("meshgate.io/native-policy=true"))
            .await
            .unwrap();
        names.extend(
            list.items
                .into_iter()
                .map(|o| format!("{kind}/{}", o.metadata.name.unwrap())),
        );
    }
    names
}

/// Only the certificate mount runs: these tests compare the mount, and the
/// validating policies of the other rules (tests/envtest_native_diff.rs)
/// would refuse some of their pods first.
pub const MOUNT_ONLY: &str = "mode: off\nrules: {workload-certificates: enforce}\n";

pub fn mount_only() -> Config {
    Config::from_yaml(MOUNT_ONLY)
        .unwrap()
        .with_own_namespace("meshgate")
}

pub fn pod(name: &str, spec: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ENROLLED, "annotations": annotations,
                     "labels": {"app": name}},
        "spec": spec,
    })
}

/// An injected pod: the injector's mark, istio-init and istio-proxy.
pub fn injected(name: &str) -> Value {
    pod(
        name,
        json!({
            "initContainers": [{"name": "istio-init", "image": "proxyv2"}],
            "containers": [
                {"name": "app", "image": "shop:1"},
                {"name": "istio-proxy", "image": "proxyv2", "args": ["proxy", "sidecar"]},
            ],
        }),
        json!({"sidecar.istio.io/status": "{}"}),
    )
}

/// What the API server stores for `object` (`--dry-run=server`), or its
/// refusal.
pub fn dry_run(env: &envtest::Envtest, object: &Value) -> Result<Value, String> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args([
            "--request-timeout=20s",
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(object.to_string().as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub fn mounts(pod: &Value, container: usize) -> Vec<(String, String, bool)> {
    pod["spec"]["containers"][container]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["mountPath"].as_str().unwrap().to_owned(),
                m["readOnly"] == true,
            )
        })
        .collect()
}

/// Namespaces: enrolled, not enrolled, enrolled but capped at audit, and
/// meshgate's own (its Lease).
pub async fn namespaces(client: &Client) {
    envtest::create_namespace(client, "meshgate", json!({})).await;
    envtest::create_namespace(client, ENROLLED, json!({"istio-injection": "enabled"})).await;
    envtest::create_namespace(client, "plain", json!({})).await;
    envtest::create_namespace(
        client,
        "audited",
        json!({"istio-injection": "enabled", "meshgate.io/mode": "audit"}),
    )
    .await;
}

/// serve writes the policies, then stops: they stay.
pub async fn sync_then_stop(env: &envtest::Envtest, client: &Client) {
    let mut meshgate = Server::start(
        Options::default()
            .kubeconfig(env.kubeconfig())
            .config(MOUNT_ONLY)
            .args(&["--native-policies", "true"]),
    );
    let wanted = meshgate::native::compile(&mount_only())
        .unwrap()
        .objects
        .len();
    eventually("serve applies the native policies", SYNC_BOUND, || async {
        (native_objects(client).await.len() == wanted).then_some(())
    })
    .await;
    meshgate.terminate();
    let status = meshgate.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", meshgate.stderr());
    // The API server takes a moment to load a new policy.
    tokio::time::sleep(Duration::from_secs(3)).await;
}
