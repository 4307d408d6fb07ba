//! The chart as a user installs it, on a real node (tests/node/mod.rs):
//! the image built from the Dockerfile, default values, pods under the
//! chart's ServiceAccount, securityContext and probes, admission through the
//! Service, PolicyReports written from inside the pod, a rollout restart and
//! a SIGKILLed replica under a steady apply loop, the leader Lease, `helm
//! upgrade` and `helm uninstall`. One test, one cluster: the steps build on
//! each other, and a cluster start costs 15 s.

mod node;
#[path = "node_chart/under_load.rs"]
mod under_load;

use std::time::{Duration, Instant};

use node::{figure, Node, NAMESPACE, RELEASE};

pub const TEST: &str = "node_chart";

/// What a mesh has before meshgate comes: Istio's and the PolicyReport CRDs
/// (installCRDs is off by default: Kyverno or Policy Reporter own them), a
/// mesh-wide STRICT PeerAuthentication, an enrolled namespace with a
/// deny-by-default policy, and a legacy namespace outside the mesh.
const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: shop}
spec: {}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
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

/// A pod without Istio's proxy in the enrolled namespace (no istiod here to
/// inject one): sidecar-required denies it.
const BARE_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: shop}
spec:
  serviceAccountName: web
  containers: [{name: web, image: "localhost/busybox:local", command: [sleep, "3600"]}]
"#;

#[test]
fn the_chart_on_a_real_node() {
    let Some(node) = node::start(TEST) else {
        return;
    };
    prepare_mesh(&node);

    let installed = Instant::now();
    node.install_chart(&[]);
    node.wait_for("2 meshgate pods Ready", Duration::from_secs(180), || {
        node.ready_pods().len() == 2
    });
    figure(
        TEST,
        "helm install to 2 pods Ready (s)",
        secs(installed.elapsed()),
    );
    for pod in node.ready_pods() {
        check_confined(&node, &pod);
    }
    check_denied_through_service(&node);
    check_reports_from_the_pod(&node, installed);

    under_load::rollout_restart(&node);
    under_load::sigkill_the_leader(&node);
    under_load::leader_lost(&node);
    let logs = node.meshgate_logs();
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "an RBAC error in meshgate's logs:\n{logs}"
    );
    upgrade_to_audit(&node);
    uninstall(&node);
}

pub fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

fn prepare_mesh(node: &Node) {
    let repo = node::repo();
    for crds in [
        "tests/fixtures/istio-crds.yaml",
        "charts/meshgate/files/crds/wgpolicyk8s.yaml",
    ] {
        node.kubectl(
            &["create", "-f", repo.join(crds).to_str().expect("UTF-8")],
            "",
        );
    }
    node.kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ],
        "",
    );
    node.kubectl(&["create", "namespace", "istio-system"], "");
    node.apply(MESH);
}

/// The container runs as the chart says, as the kernel sees it: UID/GID
/// 65532, no capabilities, no_new_privs, seccomp filter, read-only root.
fn check_confined(node: &Node, pod: &str) {
    // Looked for until found: one CI run did not see it on the first scan
    // (the pod's status shows why if it never appears).
    let mut found = None;
    node.wait_for(
        &format!("the meshgate process of {pod}"),
        Duration::from_secs(30),
        || {
            found = node.meshgate_pid(pod);
            found.is_some()
        },
    );
    let pid = found.expect("found");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), "65532 65532 65532 65532", "{pod}");
    assert_eq!(field("Gid:"), "65532 65532 65532 65532", "{pod}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{pod}");
    assert_eq!(field("CapBnd:"), "0000000000000000", "{pod}");
    assert_eq!(field("NoNewPrivs:"), "1", "{pod}");
    assert_eq!(field("Seccomp:"), "2", "{pod}: seccomp filter mode");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root = mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .expect("a root mount");
    assert!(
        root[5].split(',').any(|o| o == "ro"),
        "{pod}: root mounted {}",
        root[5]
    );
}

fn check_denied_through_service(node: &Node) {
    let service = node.kubectl(
        &[
            "get",
            "validatingwebhookconfiguration",
            RELEASE,
            "-o",
            "jsonpath={.webhooks[*].clientConfig.service.name}",
        ],
        "",
    );
    assert_eq!(
        service,
        // Workloads, mesh policies, exemption objects and their deletions.
        [RELEASE; 4].join(" "),
        "the webhooks call the Service"
    );
    // A Namespace is judged by the webhook alone (no native form).
    let out = node.kubectl_output(
        &["create", "namespace", "unenrolled", "--dry-run=server"],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admission webhook \"workloads.validate.meshgate.io\" denied the request")
            && stderr.contains("namespace-mesh-enrolled"),
        "{}",
        node::show(&out)
    );
    // A pod without sidecar: the pod's native policies (applied with its
    // ServiceAccount's rights, on by default) or the webhook refuse it.
    node.wait_for(
        "the native policies applied by the pod",
        Duration::from_secs(60),
        || {
            node.kubectl_text(&[
                "get",
                "validatingadmissionpolicies",
                "-l",
                "meshgate.io/native-policy=true",
                "-o",
                "name",
            ])
            .contains("meshgate-sidecar-required")
        },
    );
    let out = node.kubectl_output(&["apply", "-f", "-"], BARE_POD);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a pod without sidecar was admitted: {}",
        node::show(&out)
    );
    assert!(stderr.contains("[sidecar-required]"), "{stderr}");
}

/// The legacy namespace's report appears, written by the elected pod with
/// the ServiceAccount's RBAC (nothing else in the cluster writes reports).
fn check_reports_from_the_pod(node: &Node, installed: Instant) {
    let fails = || {
        node.kubectl_output(
            &[
                "get",
                "policyreports",
                "-n",
                "legacy",
                "-o",
                "jsonpath={.items[*].summary.fail}",
            ],
            "",
        )
    };
    node.wait_for(
        "the legacy namespace's PolicyReport",
        Duration::from_secs(120),
        || {
            let out = fails();
            out.status.success()
                // One report per object: some object of legacy fails.
                && String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .any(|n| n.parse::<u32>().is_ok_and(|n| n > 0))
        },
    );
    figure(
        TEST,
        "helm install to first PolicyReport (s)",
        secs(installed.elapsed()),
    );
    let account = format!("--as=system:serviceaccount:{NAMESPACE}:{RELEASE}");
    let can = node.kubectl(
        &[
            "auth",
            "can-i",
            "create",
            "policyreports.wgpolicyk8s.io",
            "-n",
            "legacy",
            &account,
        ],
        "",
    );
    assert_eq!(can.trim(), "yes");
    let (holder, _) = node.lease().expect("a Lease holder");
    assert!(
        node.ready_pods()
            .iter()
            .any(|p| holder.starts_with(&format!("{p}-"))),
        "Lease held by {holder}, not a meshgate pod"
    );
}

/// `helm upgrade --set mode=audit`: the validating webhooks fail open, and
/// the pod without sidecar is admitted with a warning.
fn upgrade_to_audit(node: &Node) {
    let chart = node::repo().join("charts/meshgate");
    node.helm(&[
        "upgrade",
        RELEASE,
        chart.to_str().expect("UTF-8"),
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        "mode=audit",
        "--wait",
        "--timeout=150s",
    ]);
    let policies = node.kubectl(
        &[
            "get",
            "validatingwebhookconfiguration",
            RELEASE,
            "-o",
            "jsonpath={.webhooks[*].failurePolicy}",
        ],
        "",
    );
    // Audit mode opens the workload and policy webhooks; exemption objects'
    // creates and updates stay closed (their expiry bound and audit log),
    // their deletions open.
    assert_eq!(policies, "Ignore Ignore Fail Ignore");
    node.wait_for(
        "the upgraded pods admit the bare pod",
        Duration::from_secs(60),
        || {
            let out = node.kubectl_output(&["apply", "--dry-run=server", "-f", "-"], BARE_POD);
            out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("sidecar-required")
        },
    );
}

/// `helm uninstall` runs the pre-delete hook Job, and no webhook
/// configuration is left to call a webhook that is gone.
fn uninstall(node: &Node) {
    node.helm(&[
        "uninstall",
        RELEASE,
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout=120s",
    ]);
    let events = node.kubectl(
        &[
            "get",
            "events",
            "-n",
            NAMESPACE,
            "--field-selector",
            "involvedObject.kind=Job",
            "-o",
            "jsonpath={range .items[*]}{.involvedObject.name} {.reason}{\"\\n\"}{end}",
        ],
        "",
    );
    assert!(
        events.contains(&format!("{RELEASE}-remove-webhooks Completed")),
        "the hook Job did not complete:\n{events}"
    );
    let left = node.kubectl(
        &[
            "get",
            "validatingwebhookconfigurations,mutatingwebhookconfigurations",
            "-o",
            "name",
        ],
        "",
    );
    assert!(!left.contains(RELEASE), "left behind: {left}");
    let out = node.kubectl_output(&["apply", "--dry-run=server", "-f", "-"], BARE_POD);
    assert!(out.status.success(), "{}", node::show(&out));
}
