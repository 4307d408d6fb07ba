//! `helm install` and `helm uninstall` of the chart on a real kube-apiserver,
//! with the report CRDs and PolicyReports of meshgate and of another tool
//! (shaped after Kyverno's): the CRDs and the other tool's reports survive
//! the uninstall, meshgate's reports do not.
//!
//! envtest runs no kubelet, so the test stands in for it: each hook Job Helm
//! creates is run as the meshgate binary with the Job's arguments, acting as
//! the Job's ServiceAccount (its RBAC as rendered), and then marked Complete.

mod common;
mod envtest;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use common::{eventually, Options, Server};

const RELEASE: &str = "meshgate";
const RELEASE_NAMESPACE: &str = "meshgate";
/// Helm's whole uninstall, both hook Jobs included.
const UNINSTALL_BOUND: Duration = Duration::from_secs(180);
/// The background audit settles and the writer waits 1 s; a loaded machine
/// gets room.
const REPORT_BOUND: Duration = Duration::from_secs(60);

fn reports(client: &Client, cluster_scoped: bool) -> Api<DynamicObject> {
    let (kind, plural) = if cluster_scoped {
        ("ClusterPolicyReport", "clusterpolicyreports")
    } else {
        ("PolicyReport", "policyreports")
    };
    let gvk = GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", kind);
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

fn namespaced_reports(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport");
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "policyreports"),
    )
}

/// `namespace/name` of the reports (both scopes) labelled managed-by=`tool`.
async fn reports_of(client: &Client, tool: &str) -> BTreeSet<String> {
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/managed-by={tool}"));
    let mut found = BTreeSet::new();
    for cluster_scoped in [false, true] {
        for report in reports(client, cluster_scoped)
            .list(&selector)
            .await
            .unwrap()
        {
            found.insert(format!(
                "{}/{}",
                report.namespace().unwrap_or_default(),
                report.name_any()
            ));
        }
    }
    found
}

/// A per-resource report as Kyverno (1.10 and later) writes it: named by
/// the resource's uid, `scope` naming the resource.
fn kyverno_report(kind: &str, namespace: Option<&str>, pod_uid: &str) -> Value {
    let mut metadata = json!({
        "name": pod_uid,
        "labels": {"app.kubernetes.io/managed-by": "kyverno"},
    });
    if let Some(ns) = namespace {
        metadata["namespace"] = ns.into();
    }
    json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": kind,
        "metadata": metadata,
        "scope": {"apiVersion": "v1", "kind": "Pod", "name": "agent",
                  "namespace": "shop", "uid": pod_uid},
        "results": [{
            "policy": "disallow-host-namespaces", "rule": "host-namespaces",
            "result": "fail", "scored": true, "severity": "medium",
            "source": "kyverno", "category": "Pod Security Standards (Baseline)",
            "message": "validation error: Sharing the host namespaces is disallowed.",
            "timestamp": {"seconds": 1_765_000_000, "nanos": 0},
        }],
        "summary": {"pass": 0, "fail": 1, "warn": 0, "error": 0, "skip": 0},
    })
}

fn helm(env: &envtest::Envtest, args: &[&str]) -> Command {
    let mut command = Command::new("helm");
    command
        .args(args)
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args(["--namespace", RELEASE_NAMESPACE]);
    command
}

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/meshgate")
}

/// A kubeconfig for `env` that acts as `account`.
fn kubeconfig_as(env: &envtest::Envtest, dir: &Path, account: &str) -> String {
    let mut kubeconfig: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(env.kubeconfig()).unwrap()).unwrap();
    kubeconfig["users"][0]["user"]["as"] = account.into();
    let path = dir.join(format!("kubeconfig-{}", account.replace(':', "-")));
    std::fs::write(&path, serde_yaml_ng::to_string(&kubeconfig).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

/// Does what the kubelet and the Job controller would: runs the Job's
/// container command (the meshgate binary) as its ServiceAccount, then
/// records the Job as Complete.
async fn run_hook_job(env: &envtest::Envtest, client: &Client, dir: &Path, job: &Job) {
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let account = format!(
        "system:serviceaccount:{RELEASE_NAMESPACE}:{}",
        pod.service_account_name.as_deref().unwrap()
    );
    let args = pod.containers[0].args.clone().unwrap();
    let kubeconfig = kubeconfig_as(env, dir, &account);
    let out = tokio::task::spawn_blocking(move || {
        common::run_cli_with_input(
            &args,
            &[("KUBECONFIG", &kubeconfig)],
            b"",
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "hook job: {}", out.stderr);

    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |kind: &str, reason: &str| {
        json!({"type": kind, "status": "True", "reason": reason,
               "lastProbeTime": now, "lastTransitionTime": now})
    };
    let status = json!({"status": {
        "startTime": now, "completionTime": now, "succeeded": 1, "active": 0, "ready": 0,
        "conditions": [
            condition("SuccessCriteriaMet", "CompletionsReached"),
            condition("Complete", "CompletionsReached"),
        ],
    }});
    Api::<Job>::namespaced(client.clone(), RELEASE_NAMESPACE)
        .patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
}

fn exited(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_uninstall_keeps_the_crds_and_other_tools_reports_and_removes_meshgates() {
    let Some(env) = envtest::start("envtest_uninstall") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    envtest::create_namespace(&client, RELEASE_NAMESPACE, json!({})).await;
    envtest::create_namespace(&client, "shop", json!({"istio-injection": "enabled"})).await;
    // Before the install: its webhooks have no endpoint here and fail closed.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "agent", "namespace": "shop", "labels": {"app": "agent"}},
        "spec": {"serviceAccountName": "agent", "hostNetwork": true,
                 "containers": [{"name": "app", "image": "shop:1"}]}
    }))
    .unwrap();
    let pod = Api::<Pod>::namespaced(client.clone(), "shop")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let pod_uid = pod.uid().unwrap();

    let out = helm(&env, &["install", RELEASE])
        .arg(chart())
        .args(["--set", "policyReports.installCRDs=true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // meshgate writes its reports (the real writer, with its label).
    let mut serve = Server::start(Options::default().kubeconfig(env.kubeconfig()));
    // One report per judged object: the pod's in shop, named by its uid,
    // and a ClusterPolicyReport per judged Namespace.
    let pod_report = format!("shop/meshgate-{pod_uid}");
    let written = eventually(
        "meshgate's reports of the pod and of shop",
        REPORT_BOUND,
        || async {
            let mine = reports_of(&client, "meshgate").await;
            (mine.contains(&pod_report) && mine.iter().any(|r| r.starts_with("/meshgate-")))
                .then_some(mine)
        },
    )
    .await;
    assert!(written.len() >= 2, "{written:?}");
    let shop_report = namespaced_reports(&client, "shop")
        .get(&format!("meshgate-{pod_uid}"))
        .await
        .unwrap();
    // Stopped, so the writer cannot put them back behind the test's back.
    serve.terminate();
    serve.wait_exit(Duration::from_secs(30)).await;

    // Another tool's reports, in the same CRDs.
    let post = PostParams::default();
    let kyverno: DynamicObject =
        serde_json::from_value(kyverno_report("PolicyReport", Some("shop"), &pod_uid)).unwrap();
    namespaced_reports(&client, "shop")
        .create(&post, &kyverno)
        .await
        .unwrap();
    let kyverno: DynamicObject =
        serde_json::from_value(kyverno_report("ClusterPolicyReport", None, &pod_uid)).unwrap();
    reports(&client, true)
        .create(&post, &kyverno)
        .await
        .unwrap();
    let theirs = reports_of(&client, "kyverno").await;
    assert_eq!(theirs.len(), 2);

    // helm uninstall, with this test as the kubelet of the hook Jobs.
    let dir = tempfile::tempdir().unwrap();
    let mut uninstall = helm(&env, &["uninstall", RELEASE, "--timeout", "150s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let jobs = Api::<Job>::namespaced(client.clone(), RELEASE_NAMESPACE);
    let mut ran = BTreeSet::new();
    let deadline = Instant::now() + UNINSTALL_BOUND;
    while !exited(&mut uninstall) {
        assert!(Instant::now() < deadline, "helm uninstall still runs");
        for job in jobs.list(&ListParams::default()).await.unwrap() {
            let uid = job.uid().unwrap();
            if job.status.as_ref().and_then(|s| s.succeeded) == Some(1) || ran.contains(&uid) {
                continue;
            }
            run_hook_job(&env, &client, dir.path(), &job).await;
            if ran.is_empty() {
                // The pre-delete pass ran while meshgate still runs; a report
                // its writer puts back now is caught by the post-delete pass.
                assert!(reports_of(&client, "meshgate").await.is_empty());
                let mut again = shop_report.clone();
                again.metadata.resource_version = None;
                again.metadata.uid = None;
                again.metadata.managed_fields = None;
                again.metadata.creation_timestamp = None;
                namespaced_reports(&client, "shop")
                    .create(&post, &again)
                    .await
                    .unwrap();
            }
            ran.insert(uid);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = uninstall.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "helm uninstall: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ran.len(), 2, "a pre-delete and a post-delete hook Job");

    // meshgate's reports are gone, the other tool's stay, so do the CRDs.
    assert_eq!(reports_of(&client, "meshgate").await, BTreeSet::new());
    assert_eq!(reports_of(&client, "kyverno").await, theirs);
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    // The exemption CRDs too: they hold what security approved.
    for crd in [
        "policyreports.wgpolicyk8s.io",
        "clusterpolicyreports.wgpolicyk8s.io",
        "meshexemptions.meshgate.io",
        "clustermeshexemptions.meshgate.io",
    ] {
        let crd = crds.get_opt(crd).await.unwrap();
        assert!(
            crd.is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
            "the CRD must survive helm uninstall"
        );
    }
    // And the release itself is gone.
    let webhooks = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    assert!(webhooks.get_opt(RELEASE).await.unwrap().is_none());
    let deployments = Api::<Deployment>::namespaced(client.clone(), RELEASE_NAMESPACE);
    assert!(deployments.get_opt(RELEASE).await.unwrap().is_none());

    // The same release installed again adopts the kept CRDs.
    let out = helm(&env, &["install", RELEASE])
        .arg(chart())
        .args(["--set", "policyReports.installCRDs=true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install over the kept CRDs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
