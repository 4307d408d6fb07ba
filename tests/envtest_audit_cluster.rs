//! `meshgate audit --cluster` against a real kube-apiserver: the fixtures
//! applied with kubectl give the same findings as `meshgate audit` on the
//! same files; `-n` limits the audit to one namespace; a kind the cluster
//! does not serve (no cert-manager) is reported, not fatal.

mod common;
mod envtest;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{run_cli, Exited};
use serde_json::Value;

const NAMESPACES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/state/namespaces.yaml"
);

/// A workload in a fixture namespace that breaks two rules.
const AGENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: agent, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      hostNetwork: true
      containers: [{name: agent, image: agent:1}]
";

fn meshgate(args: &[&str]) -> Exited {
    run_cli(args, Duration::from_secs(60))
}

/// (rule, mode, kind, namespace, name) of the JSON findings in `namespaces`.
fn findings(
    output: &Exited,
    namespaces: &[&str],
) -> BTreeSet<(String, String, String, String, String)> {
    let report: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", output.stdout, output.stderr));
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| namespaces.contains(&f["namespace"].as_str().unwrap()))
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_owned();
            (s("rule"), s("mode"), s("kind"), s("namespace"), s("name"))
        })
        .collect()
}

#[tokio::test]
async fn audit_cluster_agrees_with_the_audit_of_the_applied_files() {
    let Some(env) = envtest::start("audit_cluster") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent.yaml");
    std::fs::write(&agent, AGENT).unwrap();
    env.kubectl(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n",
    );
    env.kubectl(&["apply", "-f", NAMESPACES], "");
    env.kubectl(&["apply", "-f", "-"], AGENT);
    let kubeconfig = env.kubeconfig().to_string_lossy().into_owned();
    let fixture_namespaces = ["bookinfo", "legacy", "audited", "istio-system"];

    let on_files = meshgate(&[
        "audit",
        "--output",
        "json",
        NAMESPACES,
        agent.to_str().unwrap(),
    ]);
    let on_cluster = meshgate(&[
        "audit",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--output",
        "json",
    ]);
    let stderr = &on_cluster.stderr;
    assert!(stderr.contains("does not serve Certificate"), "{stderr}");
    let expected = findings(&on_files, &fixture_namespaces);
    assert!(
        expected
            .iter()
            .any(|f| f.0 == "no-host-network" && f.4 == "agent"),
        "{expected:?}"
    );
    assert_eq!(findings(&on_cluster, &fixture_namespaces), expected);
    assert_eq!(
        on_cluster.status.code(),
        Some(1),
        "enforced findings: exit 1"
    );

    // One namespace: only its objects (and itself) are judged.
    let bookinfo = meshgate(&[
        "audit",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "-n",
        "bookinfo",
        "--output",
        "json",
    ]);
    let report: Value = serde_json::from_str(&bookinfo.stdout).unwrap();
    let namespaces: BTreeSet<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, BTreeSet::from(["bookinfo"]));
    assert_eq!(
        findings(&bookinfo, &["bookinfo"]),
        findings(&on_files, &["bookinfo"])
    );

    // The same as PolicyReports.
    let reports = meshgate(&[
        "audit",
        "--cluster",
        "--kubeconfig",
        &kubeconfig,
        "--output",
        "policyreport",
    ]);
    let yaml = reports.stdout;
    assert!(yaml.contains("namespace: bookinfo"), "{yaml}");
    assert!(yaml.contains("policy: no-host-network"), "{yaml}");
}

/// A Deployment that meets every rule in `bookinfo` (enrolled, STRICT,
/// deny-by-default), but only if the namespace's state is known.
const CLEAN_WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      containers: [{name: web, image: web:1}]
";

/// The change that turns mesh-wide mTLS PERMISSIVE.
const PERMISSIVE_ROOT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: PERMISSIVE}}
";

#[tokio::test]
async fn audit_cluster_with_files_judges_the_change_against_the_live_state() {
    let Some(env) = envtest::start("audit_cluster_with_files") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    env.kubectl(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n",
    );
    env.kubectl(&["apply", "-f", NAMESPACES], "");
    env.kubectl(&["apply", "-f", "-"], AGENT);
    let kubeconfig = env.kubeconfig().to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yaml");
    std::fs::write(&web, CLEAN_WEB).unwrap();
    let change = dir.path().join("permissive.yaml");
    std::fs::write(&change, PERMISSIVE_ROOT).unwrap();
    let web = web.to_str().unwrap();

    // Alone, the file's namespace is unknown: its posture cannot be verified.
    let alone = meshgate(&["audit", "-o", "json", web]);
    assert_eq!(alone.status.code(), Some(1), "{}", alone.stdout);

    // Against the cluster: bookinfo is enrolled, STRICT and deny-by-default,
    // and only the file's object is judged (not the cluster's agent).
    let against_cluster = |files: &[&str]| {
        let mut args = vec![
            "audit",
            "--cluster",
            "--kubeconfig",
            &kubeconfig,
            "-o",
            "json",
        ];
        args.extend_from_slice(files);
        meshgate(&args)
    };
    let live = against_cluster(&[web]);
    let report: Value = serde_json::from_str(&live.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", live.stdout, live.stderr));
    assert_eq!(report["summary"]["objectsChecked"], 1, "{report}");
    assert_eq!(report["findings"], serde_json::json!([]), "{report}");
    assert_eq!(live.status.code(), Some(0), "{}", live.stderr);

    // With a change that replaces the root PeerAuthentication: the workload
    // is judged as the cluster would be after the apply.
    let changed = against_cluster(&[web, change.to_str().unwrap()]);
    let found = findings(&changed, &["bookinfo", "istio-system"]);
    assert!(
        found
            .iter()
            .any(|f| f.0 == "strict-mtls-required" && f.4 == "web"),
        "{found:?}"
    );
    assert!(
        found.iter().any(|f| f.0 == "peer-authentication-strict"),
        "{found:?}"
    );
    assert!(!found.iter().any(|f| f.4 == "agent"), "{found:?}");
}
