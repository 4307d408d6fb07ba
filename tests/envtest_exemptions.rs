//! Issue 21 on a real kube-apiserver: a pod denied for `no-host-network` is
//! admitted once a MeshExemption covering it exists, and its PolicyReport
//! result turns `skip` (naming the exemption); when the exemption's
//! `expires` passes, without restarting meshgate, the webhook denies such a
//! pod again and the report turns `fail`. `meshgate audit --cluster` (the
//! real binary, `--now` at each step) agrees at every step. meshgate's own
//! /validate refuses an exemption beyond `exemptionObjects.maxDuration`.

mod common;
mod envtest;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Client;
use serde_json::{json, Value};

use common::{eventually, run_cli, Options, Server};

/// The exemption CRDs this test installs: the chart's own (plain YAML, no
/// templating), CEL validation included.
const EXEMPTION_CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/meshgate/files/crds/meshgate-exemptions.yaml"
);

/// Only `no-host-network` runs, enforced; exemption objects may last a
/// minute at most, so the test's 20 s one is accepted.
const CONFIG: &str =
    "mode: off\nrules: {no-host-network: enforce}\nexemptionObjects: {maxDuration: 1m}\n";

/// The background audit settles within seconds, the leader within the
/// 15 s lease; a loaded machine gets room.
const BOUND: Duration = Duration::from_secs(60);
/// How long the exemption lasts.
const LIFETIME: SignedDuration = SignedDuration::from_secs(20);

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "agent"}},
        "spec": {"hostNetwork": true, "serviceAccountName": "agent",
                 "containers": [{"name": "app", "image": "agent:1"}]}
    }))
    .unwrap()
}

fn exemption(expires: Timestamp) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "meshgate.io/v1alpha1", "kind": "MeshExemption",
        "metadata": {"name": "agent", "namespace": "shop"},
        "spec": {"rules": ["no-host-network"], "match": {"names": ["agent*"]},
                 "reason": "node agent reads host interfaces (SEC-1234)",
                 "expires": expires.to_string(), "ticket": "SEC-1234"}
    }))
    .unwrap()
}

fn exemptions(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("meshgate.io", "v1alpha1", "MeshExemption");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "meshexemptions");
    Api::namespaced_with(client.clone(), "shop", &resource)
}

/// meshgate's /validate for pods and exemption objects in `shop`.
fn webhook(meshgate: &Server) -> ValidatingWebhookConfiguration {
    serde_json::from_value(json!({
        "metadata": {"name": "meshgate-exemptions-test"},
        "webhooks": [{
            "name": "workloads.validate.meshgate.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "clientConfig": {
                "url": meshgate.url("/validate"),
                "caBundle": BASE64.encode(&meshgate.ca_pem),
            },
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
            "rules": [
                {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                 "operations": ["CREATE", "UPDATE"]},
                {"apiGroups": ["meshgate.io"], "apiVersions": ["v1alpha1"],
                 "resources": ["meshexemptions"], "operations": ["CREATE", "UPDATE", "DELETE"]},
            ],
        }],
    }))
    .unwrap()
}

/// The `no-host-network` result in the report about pod `name`, with its
/// properties.
async fn report_result(client: &Client, name: &str) -> Option<(String, Value)> {
    let gvk = GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "policyreports");
    let reports = Api::<DynamicObject>::namespaced_with(client.clone(), "shop", &resource);
    let list = reports.list(&Default::default()).await.ok()?;
    let report = list
        .items
        .into_iter()
        .find(|r| r.data["scope"]["name"] == name)?;
    let result = report.data["results"]
        .as_array()?
        .iter()
        .find(|r| r["policy"] == "no-host-network")?
        .clone();
    Some((
        result["result"].as_str()?.to_owned(),
        result["properties"].clone(),
    ))
}

/// `meshgate audit --cluster -n shop --now <now>`: exit status and stdout
/// (PolicyReport YAML).
fn audit(env: &envtest::Envtest, config: &std::path::Path, now: Timestamp) -> (i32, String) {
    let kubeconfig = env.kubeconfig();
    let now = now.to_string();
    let args = [
        "audit",
        "--cluster",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "-n",
        "shop",
        "--config",
        config.to_str().unwrap(),
        "--now",
        &now,
        "-o",
        "policyreport",
    ];
    let out = run_cli(&args, Duration::from_secs(60));
    (out.status.code().unwrap_or(-1), out.stdout)
}

/// Whether creating pod `name` is denied by meshgate for `no-host-network`
/// (a dry run, so nothing is left behind).
async fn denied(client: &Client, name: &str) -> bool {
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match Api::<Pod>::namespaced(client.clone(), "shop")
        .create(&dry_run, &pod(name))
        .await
    {
        Ok(_) => false,
        Err(kube::Error::Api(e)) if e.message.contains("no-host-network") => true,
        Err(other) => panic!("unexpected answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exemption_object_admits_until_it_expires_everywhere_alike() {
    let Some(env) = envtest::start("envtest_exemptions") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    envtest::install_report_crds(&client, "wgpolicyk8s.yaml").await;
    envtest::install_crds(&client, EXEMPTION_CRDS).await;
    envtest::create_namespace(&client, "meshgate", json!({})).await;
    envtest::create_namespace(&client, "shop", json!({"istio-injection": "enabled"})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();

    let meshgate = Server::start(
        Options::default()
            .kubeconfig(env.kubeconfig())
            .config(CONFIG),
    );
    eventually("the background audit's first pass", BOUND, || async {
        let metrics = meshgate.metrics().await;
        (metrics.value("meshgate_background_audit_complete", &[]) == 1.0).then_some(())
    })
    .await;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &webhook(&meshgate))
        .await
        .unwrap();

    // 1. No exemption: denied.
    eventually(
        "the webhook to deny the host-network pod",
        BOUND,
        || async { denied(&client, "agent").await.then_some(()) },
    )
    .await;

    // meshgate refuses an exemption beyond maxDuration, naming the field.
    let too_long = exemption(Timestamp::now() + SignedDuration::from_mins(10));
    match exemptions(&client)
        .create(&PostParams::default(), &too_long)
        .await
    {
        Err(kube::Error::Api(e)) => assert!(e.message.contains("spec.expires"), "{e:?}"),
        other => panic!("a 10 min exemption should be refused: {other:?}"),
    }

    // 2. An exemption for 20 s: admitted, reported `skip`.
    let expires = Timestamp::now() + LIFETIME;
    exemptions(&client)
        .create(&PostParams::default(), &exemption(expires))
        .await
        .unwrap();
    eventually("the exemption gauges", BOUND, || async {
        let metrics = meshgate.metrics().await;
        let active = [("state", "active"), ("scope", "namespaced")];
        let next = metrics.value("meshgate_exemption_next_expiry_seconds", &[]);
        (metrics.value("meshgate_exemptions", &active) == 1.0 && next > 0.0 && next <= 20.0)
            .then_some(())
    })
    .await;
    eventually("the exempted pod to be admitted", BOUND, || async {
        (!denied(&client, "agent").await).then_some(())
    })
    .await;
    Api::<Pod>::namespaced(client.clone(), "shop")
        .create(&PostParams::default(), &pod("agent"))
        .await
        .expect("admitted while the exemption holds");
    let (_, properties) = eventually("the report to say skip", BOUND, || async {
        report_result(&client, "agent")
            .await
            .filter(|(result, _)| result == "skip")
    })
    .await;
    assert_eq!(properties["exemption"], "MeshExemption/shop/agent");
    assert_eq!(properties["expires"], expires.to_string());
    assert!(properties["reason"].as_str().unwrap().contains("SEC-1234"));
    eventually(
        "the exemption's status: active, covering the pod",
        BOUND,
        || async {
            let status = exemptions(&client).get("agent").await.ok()?.data["status"].clone();
            (status["state"] == "Active"
                && status["covered"] == 1
                && status["lastApplied"].is_string())
            .then_some(())
        },
    )
    .await;

    // `meshgate audit` agrees: exempt before `expires`, failing from it on.
    let before = expires - SignedDuration::from_secs(1);
    let (status, out) = audit(&env, &config, before);
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("MeshExemption/shop/agent"), "{out}");
    let (status, out) = audit(&env, &config, expires);
    assert_eq!(status, 1, "{out}");

    // 3. After `expires`, without a restart: denied again, report `fail`.
    let wait = expires.duration_since(Timestamp::now());
    if wait.is_positive() {
        tokio::time::sleep(wait.unsigned_abs()).await;
    }
    assert!(denied(&client, "agent-2").await, "denied again at expiry");
    let started = std::time::Instant::now();
    eventually("the report to turn fail", BOUND, || async {
        report_result(&client, "agent")
            .await
            .filter(|(result, _)| result == "fail")
    })
    .await;
    eprintln!("report turned fail {:?} after expiry", started.elapsed());
    let (status, out) = audit(&env, &config, Timestamp::now());
    assert_eq!(status, 1, "{out}");
    eventually("the exemption's status: expired", BOUND, || async {
        let status = exemptions(&client).get("agent").await.ok()?.data["status"].clone();
        (status["state"] == "Expired" && status["covered"] == 0).then_some(())
    })
    .await;
    assert!(meshgate
        .log_entries()
        .iter()
        .any(|l| l["message"] == "exemption object reviewed"
            && l["exemption"] == "MeshExemption/shop/agent"));
}
