//! Istio's own workloads and injector output through the real interfaces:
//! `meshgate audit` on the manifests Istio produces, and the HTTPS server
//! on the Pods they become. Fixtures: `tests/fixtures/workloads/`, shaped
//! after istio/istio's templates and `istioctl kube-inject` test data.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

const WORKLOADS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/workloads");
/// The rules this file is about; posture and service-account rules have
/// their own tests.
const PROXY_RULES: &[&str] = &["sidecar-required", "no-interception-bypass"];

/// Namespace `shop` labelled as given, with the mesh baseline so only
/// workload rules speak.
fn shop(labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {{{labels}}}\n---\n\
         apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: istio-system}}\nspec: {{mtls: {{mode: STRICT}}}}\n---\n\
         apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-nothing, namespace: shop}}\nspec: {{}}\n"
    )
}

const SIDECAR: &str = "istio-injection: enabled";
const AMBIENT: &str = "istio.io/dataplane-mode: ambient";
const UNLABELLED: &str = "";

/// `meshgate audit --output json` on namespace `shop` and the fixtures;
/// the proxy-rule findings as (rule, message).
fn audit(labels: &str, fixtures: &[&str]) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-namespace.yaml"), shop(labels)).unwrap();
    for f in fixtures {
        std::fs::copy(Path::new(WORKLOADS).join(f), dir.path().join(f)).unwrap();
    }
    let dir_arg = dir.path().to_string_lossy().into_owned();
    let out = run_cli(
        &["audit", "--namespace", "shop", "--output", "json", &dir_arg],
        Duration::from_secs(30),
    );
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout, out.stderr));
    let findings: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_owned(),
                f["message"].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(rule, _)| PROXY_RULES.contains(&rule.as_str()))
        .collect();
    let enforce = report["summary"]["enforce"].as_u64().unwrap();
    assert_eq!(
        out.status.code(),
        Some(if enforce > 0 { 1 } else { 0 }),
        "exit status follows the enforce-level findings"
    );
    findings
}

#[test]
fn audit_admits_istiod_gateways_and_waypoints_in_every_namespace_mode() {
    let istio_built = [
        "waypoint-deployment.yaml",
        "kube-gateway-deployment.yaml",
        "gateway-helm-deployment.yaml",
    ];
    for labels in [SIDECAR, AMBIENT, UNLABELLED] {
        // The Helm chart's gateway relies on the injector's gateway template;
        // its pod label selects the injector even without namespace labels.
        let findings = audit(labels, &istio_built);
        assert!(findings.is_empty(), "{labels:?}: {findings:?}");
    }
}

#[test]
fn audit_denies_an_application_that_copies_a_waypoints_labels() {
    // The only object of the input is the copy, so these are its findings.
    for (labels, message) in [
        (
            SIDECAR,
            "will run without an istio-proxy sidecar: it opts out with the label sidecar.istio.io/inject=false",
        ),
        (
            AMBIENT,
            "opts out of the ambient mesh with label istio.io/dataplane-mode=none",
        ),
    ] {
        let findings = audit(labels, &["copied-waypoint-labels.yaml"]);
        assert_eq!(
            findings,
            [("sidecar-required".to_owned(), message.to_owned())],
            "{labels:?}"
        );
    }
    // With a copy of the gateway's proxy beside it, the copy is judged as an
    // application too: it runs as the proxy's UID.
    let findings = audit(SIDECAR, &["app-beside-router.yaml"]);
    let rules: Vec<&str> = findings.iter().map(|(r, _)| r.as_str()).collect();
    assert!(rules.contains(&"sidecar-required"), "{findings:?}");
    assert!(
        findings
            .iter()
            .any(|(_, m)| m.contains("container \"istio-proxy\" runs as UID 1337")),
        "{findings:?}"
    );
}

#[test]
fn audit_accepts_kube_inject_output_without_namespace_labels() {
    let manual = [
        "kube-inject-deployment.yaml",
        "kube-inject-pod.yaml",
        "kube-inject-cronjob.yaml",
        "kube-inject-cni-deployment.yaml",
    ];
    for labels in [UNLABELLED, "istio-injection: disabled"] {
        let findings = audit(labels, &manual);
        assert!(findings.is_empty(), "{labels:?}: {findings:?}");
    }
}

#[test]
fn audit_finds_exclusions_in_istio_init_arguments() {
    let findings = audit(SIDECAR, &["kube-inject-traffic-params.yaml"]);
    assert_eq!(findings.len(), 3, "{findings:?}");
    assert!(findings
        .iter()
        .all(|(r, m)| r == "no-interception-bypass" && m.contains("container \"istio-init\"")));
    assert!(findings.iter().any(|(_, m)| m.ends_with("flag -d 4,5,6")));
}

#[test]
fn audit_gives_proxyless_templates_the_verdict_of_their_pods() {
    let findings = audit(
        SIDECAR,
        &["grpc-agent-deployment.yaml", "kube-inject-grpc-agent.yaml"],
    );
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert!(findings
        .iter()
        .all(|(r, m)| r == "sidecar-required" && m.contains("injection template \"grpc-agent\"")));
}

// ------------------------------------------------------------- HTTPS

/// A captured Pod CREATE review carrying `object` (a YAML fixture) instead.
fn pod_review(file: &str, namespace: &str, name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(Path::new(WORKLOADS).join(file)).unwrap();
    let mut object = meshgate::manifest::parse_text(file, &text)
        .expect("YAML fixture")
        .remove(0)
        .value;
    object["metadata"]["namespace"] = namespace.into();
    object["metadata"]["name"] = name.into();
    edit(&fixture("pod-create-injected.json"), |v| {
        let request = &mut v["request"];
        request["uid"] = format!("0f0e0d0c-{:08x}-4000-8000-000000000000", name.len()).into();
        request["namespace"] = namespace.into();
        request["name"] = name.into();
        request["userInfo"]["username"] =
            "system:serviceaccount:kube-system:replicaset-controller".into();
        request["object"] = object;
    })
}

#[tokio::test]
async fn the_server_admits_a_waypoint_pod_and_denies_its_label_copy() {
    let server = Server::start(Options::default());
    let waypoint = pod_review("waypoint-pod.yaml", "bookinfo", "waypoint-7c9d8b6f5d-x2v9q");
    let response = server.review(waypoint.clone()).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("warnings").is_none(), "{response}");

    // The same pod with an application in place of the proxy.
    let copy = edit(&waypoint, |v| {
        v["request"]["object"]["spec"]["containers"][0]["args"] =
            serde_json::json!(["serve", "--port", "8080"]);
        v["request"]["object"]["spec"]["containers"][0]["name"] = "app".into();
    });
    let response = server.review(copy).await;
    assert_eq!(response["allowed"], false, "{response}");
    let m = response["status"]["message"].as_str().unwrap();
    assert!(m.contains("[sidecar-required]"), "{m}");
    assert!(m.contains("sidecar.istio.io/inject=false"), "{m}");
}

#[tokio::test]
async fn the_server_gives_kube_injected_pods_the_verdict_of_their_templates() {
    let server = Server::start(Options::default());
    // Not enrolled: the manual injection is what puts the proxy there.
    let pod = pod_review("kube-inject-pod.yaml", "legacy", "hellopod");
    let pod = edit(&pod, |v| {
        v["request"]["object"]["spec"]["serviceAccountName"] = "hello".into();
    });
    // A kube-injected CronJob's pods: the mark stayed on the job template.
    let cronjob_pod = edit(&pod, |v| {
        let annotations = v["request"]["object"]["metadata"]["annotations"]
            .as_object_mut()
            .unwrap();
        annotations.remove("sidecar.istio.io/status");
    });
    for review in [pod, cronjob_pod] {
        let response = server.review(review).await;
        let m = response["status"]["message"].as_str().unwrap_or_default();
        assert!(!m.contains("[sidecar-required]"), "{response}");
        assert!(!m.contains("[no-interception-bypass]"), "{response}");
    }
}

#[tokio::test]
async fn the_certificate_mount_leaves_waypoints_alone() {
    let server = Server::start(Options::default());
    let waypoint = pod_review("waypoint-pod.yaml", "bookinfo", "waypoint-7c9d8b6f5d-x2v9q");
    let (status, body) = server.post("/mutate?timeout=5s", waypoint).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["response"]["allowed"], true, "{body}");
    // A waypoint is a proxy, not a pod with a sidecar: no OUTPUT_CERTS, no
    // volume.
    assert!(body["response"].get("patch").is_none(), "{body}");
}
