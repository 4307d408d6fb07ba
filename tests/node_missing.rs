//! What a user meets on a real node (tests/node/mod.rs) when something
//! meshgate needs is missing: the PolicyReport CRDs, Istio's CRDs, the
//! namespace of the report writer's Lease, the certificate Secret. Each is
//! said clearly, once (then at a low rate), and each recovers once the
//! missing piece is added, without a restart. One cluster for all four.

mod node;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use node::{figure, Node, NAMESPACE, RELEASE};

const TEST: &str = "node_missing";

/// A namespace with a workload outside the mesh, there before meshgate (an
/// enforcing meshgate without Istio's CRDs denies new workloads): the
/// background audit judges it, so there is a report to write.
const LEGACY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: old, namespace: legacy}
spec:
  replicas: 0
  selector: {matchLabels: {app: old}}
  template:
    metadata: {labels: {app: old}}
    spec:
      containers: [{name: old, image: "localhost/busybox:local"}]
"#;

#[test]
fn missing_pieces_on_a_real_node() {
    let Some(node) = node::start(TEST) else {
        return;
    };
    node.apply(LEGACY);
    let installed = Instant::now();
    node.install_chart(&[]);
    node.wait_for(
        "2 pods Ready without any CRD",
        Duration::from_secs(180),
        || node.ready_pods().len() == 2,
    );
    // Past one 30 s Istio retry and three 10 s report retries.
    let since_install = installed.elapsed();
    std::thread::sleep(Duration::from_secs(40).saturating_sub(since_install));
    istio_crds_missing_said_once(&node);
    report_crds_missing_said_once_then_reports(&node);
    certificate_secret_missing(&node);
    // Last: `kubectl set env` leaves the Deployment in a state a later `helm
    // upgrade` cannot merge (value and valueFrom).
    lease_namespace_missing(&node);
}

/// The JSON log lines of `pod`'s meshgate container (the chart's default
/// `logFormat: json`: the event's fields beside `message`, `level`).
fn log_lines(node: &Node, pod: &str) -> Vec<serde_json::Value> {
    node.kubectl(&["logs", pod, "-n", NAMESPACE, "--tail=-1"], "")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn message(line: &serde_json::Value) -> &str {
    line["message"].as_str().unwrap_or("")
}

/// Each Istio kind is said missing once per pod at ERROR, not once per 30 s
/// retry, and /readyz says so while the pod is Ready.
fn istio_crds_missing_said_once(node: &Node) {
    for pod in node.ready_pods() {
        let mut said: BTreeMap<String, usize> = BTreeMap::new();
        for line in log_lines(node, &pod) {
            if message(&line).starts_with("Istio CRD not installed (is Istio installed?)") {
                assert_eq!(line["level"], "ERROR", "{line}");
                let resource = line["resource"].as_str().unwrap_or("").to_owned();
                *said.entry(resource).or_default() += 1;
            }
        }
        assert!(said.len() >= 4, "{pod}: Istio kinds said missing: {said:?}");
        assert!(
            said.values().all(|&n| n == 1),
            "{pod}: said more than once: {said:?}"
        );
    }
    figure(
        TEST,
        "Istio CRDs missing: lines per kind and pod in 40 s",
        1,
    );
}

/// The leader says once that the PolicyReport CRDs are missing and how to
/// install them; once they are installed the reports appear, without a
/// restart.
fn report_crds_missing_said_once_then_reports(node: &Node) {
    let mut said = Vec::new();
    for pod in node.ready_pods() {
        for line in log_lines(node, &pod) {
            let text = message(&line);
            assert!(
                !text.contains("Failed to parse error data"),
                "{pod}: {line}"
            );
            if text.starts_with("PolicyReport CRDs not installed") {
                said.push(line.clone());
            }
        }
    }
    assert_eq!(said.len(), 1, "said once, by the leader: {said:?}");
    let line = &said[0];
    assert_eq!(line["level"], "WARN");
    assert!(
        message(line).contains("--set policyReports.installCRDs=true"),
        "{line}"
    );
    assert_eq!(
        line["crds"],
        "clusterpolicyreports.wgpolicyk8s.io, policyreports.wgpolicyk8s.io"
    );

    let crds = node::repo().join("charts/meshgate/files/crds/wgpolicyk8s.yaml");
    node.kubectl(&["create", "-f", crds.to_str().expect("UTF-8")], "");
    let created = Instant::now();
    node.wait_for(
        "the legacy report after the CRDs",
        Duration::from_secs(90),
        || {
            // One report per object: any report in legacy.
            let out =
                node.kubectl_output(&["get", "policyreports", "-n", "legacy", "-o", "name"], "");
            out.status.success() && !out.stdout.is_empty()
        },
    );
    figure(
        TEST,
        "report CRDs created to first PolicyReport (s)",
        format!("{:.1}", created.elapsed().as_secs_f64()),
    );
    let found = node
        .ready_pods()
        .iter()
        .flat_map(|pod| log_lines(node, pod))
        .filter(|l| message(l) == "PolicyReport CRDs found")
        .count();
    assert_eq!(found, 1, "the recovery is logged once");
}

/// The Lease's namespace (MESHGATE_NAMESPACE) does not exist: the pods
/// still serve, and the log names the namespace and the Lease.
fn lease_namespace_missing(node: &Node) {
    let deployment = format!("deployment/{RELEASE}");
    node.kubectl(
        &[
            "set",
            "env",
            &deployment,
            "-n",
            NAMESPACE,
            "MESHGATE_NAMESPACE=meshgate-leases",
        ],
        "",
    );
    node.kubectl(
        &[
            "rollout",
            "status",
            &deployment,
            "-n",
            NAMESPACE,
            "--timeout=150s",
        ],
        "",
    );
    let said = |line: &serde_json::Value| {
        let text = line.to_string().to_lowercase();
        text.contains("lease") && text.contains("meshgate-leases")
    };
    node.wait_for(
        "the Lease error in the new pods' logs",
        Duration::from_secs(60),
        || {
            node.ready_pods()
                .iter()
                .all(|pod| log_lines(node, pod).iter().any(said))
        },
    );
    let pod = node.ready_pods().into_iter().next().expect("a ready pod");
    let line = log_lines(node, &pod)
        .into_iter()
        .find(said)
        .expect("the line");
    figure(TEST, "Lease namespace missing: the log says", line);
}

/// `certificates.mode=existingSecret` naming a Secret that does not exist:
/// the new pod waits in ContainerCreating with the kubelet's FailedMount
/// event naming the Secret, the old pods keep answering (maxUnavailable 0),
/// and the rollout finishes once the Secret exists.
fn certificate_secret_missing(node: &Node) {
    let ca = node.kubectl(
        &[
            "get",
            "secret",
            "meshgate-tls",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ],
        "",
    );
    let tls = node.kubectl(
        &[
            "get",
            "secret",
            "meshgate-tls",
            "-n",
            NAMESPACE,
            "-o",
            "json",
        ],
        "",
    );
    let chart = node::repo().join("charts/meshgate");
    node.helm(&[
        "upgrade",
        RELEASE,
        chart.to_str().expect("UTF-8"),
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        "certificates.mode=existingSecret",
        "--set",
        "certificates.existingSecret.name=meshgate-given-tls",
        "--set",
        &format!("certificates.existingSecret.caBundle={ca}"),
    ]);
    node.wait_for(
        "FailedMount naming the Secret",
        Duration::from_secs(90),
        || {
            node.kubectl(
                &[
                    "get",
                    "events",
                    "-n",
                    NAMESPACE,
                    "--field-selector",
                    "reason=FailedMount",
                    "-o",
                    "jsonpath={.items[*].message}",
                ],
                "",
            )
            .contains("secret \"meshgate-given-tls\" not found")
        },
    );
    assert!(!node.ready_pods().is_empty(), "the old pods keep serving");
    // The old pods still answer: an unenrolled namespace is denied.
    let out = node.kubectl_output(
        &["create", "namespace", "unenrolled", "--dry-run=server"],
        "",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("namespace-mesh-enrolled"),
        "{}",
        node::show(&out)
    );
    let mut secret: serde_json::Value = serde_json::from_str(&tls).expect("Secret JSON");
    secret["metadata"] = serde_json::json!({"name": "meshgate-given-tls", "namespace": NAMESPACE});
    node.kubectl(&["create", "-f", "-"], &secret.to_string());
    let created = Instant::now();
    node.kubectl(
        &[
            "rollout",
            "status",
            &format!("deployment/{RELEASE}"),
            "-n",
            NAMESPACE,
            "--timeout=180s",
        ],
        "",
    );
    figure(
        TEST,
        "Secret created to rollout done (s)",
        format!("{:.1}", created.elapsed().as_secs_f64()),
    );
}
