//! The chart with every knob set (tests/fixtures/chart/knobs-values.yaml),
//! sent to a real kube-apiserver (v1.36) as a server-side dry run: the API
//! server's own validation of the Deployment, HPA, NetworkPolicy,
//! ResourceQuota and webhook configurations (including compiling the CEL of
//! the matchConditions) accepts what the chart renders. kubernetes-validate
//! (tests/chart/knobs.rs) checks shapes; this checks what only the API server
//! knows, such as a liveness probe's successThreshold or a CEL expression.

mod envtest;

use std::path::Path;
use std::process::Command;

const RELEASE_NAMESPACE: &str = "meshgate";
const KUBE_VERSION: &str = "1.36.2";
const KNOBS: &str = include_str!("fixtures/chart/knobs-values.yaml");
/// API groups of CRDs envtest does not have (the ServiceMonitor).
const CRD_GROUPS: [&str; 1] = ["monitoring.coreos.com/"];

fn with_condition(expression: &str) -> String {
    let condition = format!(
        "  annotations: {{example.com/owner: platform}}\n  matchConditions:\n    - name: extra\n      expression: {expression:?}\n"
    );
    let spliced = KNOBS.replace("  annotations: {example.com/owner: platform}\n", &condition);
    assert_ne!(spliced, KNOBS, "the knobs file sets webhook.annotations");
    spliced
}

/// `helm template` of the whole chart, minus the objects of absent CRDs.
fn render(values: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, values).unwrap();
    let out = Command::new("helm")
        .args(["template", "meshgate"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/meshgate"))
        .args(["--namespace", RELEASE_NAMESPACE])
        .args(["--kube-version", KUBE_VERSION, "--values"])
        .arg(&values_file)
        .output()
        .expect("helm is needed (scripts/install-test-tools.sh installs it)");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split("\n---\n")
        .filter(|doc| {
            !CRD_GROUPS
                .iter()
                .any(|g| doc.contains(&format!("apiVersion: {g}")))
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// `kubectl apply --dry-run=server`: (success, output).
fn dry_run(env: &envtest::Envtest, manifests: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args([
            "--request-timeout=30s",
            "apply",
            "--dry-run=server",
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl on PATH");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifests.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("kubectl ran");
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), output)
}

#[test]
fn every_knob_passes_the_api_servers_validation() {
    let Some(env) = envtest::start("every_knob_passes_the_api_servers_validation") else {
        return;
    };
    env.kubectl(&["create", "namespace", RELEASE_NAMESPACE], "");

    let manifests = render(&with_condition(
        "!request.userInfo.groups.exists(g, g == 'ci:robots')",
    ));
    let (ok, output) = dry_run(&env, &manifests);
    assert!(ok, "the API server refused the chart:\n{output}");
    for object in [
        "deployment.apps/meshgate",
        "horizontalpodautoscaler.autoscaling/meshgate",
        "networkpolicy.networking.k8s.io/meshgate",
        "resourcequota/meshgate-critical-pods",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/meshgate",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/meshgate",
    ] {
        assert!(
            output.contains(&format!("{object} created (server dry run)")),
            "{object} not accepted:\n{output}"
        );
    }

    // The dry run really validates: a CEL expression that does not compile is
    // refused by the same API server.
    let (ok, output) = dry_run(&env, &render(&with_condition("request.nosuchfield ==")));
    assert!(!ok, "a broken CEL expression was accepted:\n{output}");
    assert!(output.contains("matchConditions"), "{output}");
}
