//! The chart's alert rules and the Prometheus tools that test them
//! (`promtool`, `prometheus`: Debian's `prometheus` package, installed by
//! `scripts/install-test-tools.sh`).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The release and namespace the chart is rendered for.
pub const RELEASE: &str = "meshgate";
pub const NAMESPACE: &str = "meshgate";

/// Whether `tool` runs here. Absent, the test skips with a message, unless
/// `MESHGATE_REQUIRE_PROMETHEUS=1` (CI) makes that a failure.
pub fn tool_present(tool: &str, tests: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("MESHGATE_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
            "{tool} not found although MESHGATE_REQUIRE_PROMETHEUS=1"
        );
        eprintln!(
            "SKIPPED: {tool} not found; run scripts/install-test-tools.sh \
             (Debian package `prometheus`) to test {tests}"
        );
    }
    found
}

/// The chart's alert rules (the PrometheusRule's `spec`, rendered by helm),
/// also written to `path` as a Prometheus rule file.
pub fn write_chart_rules(path: &Path) -> Value {
    let output = Command::new("helm")
        .args([
            "template",
            RELEASE,
            "charts/meshgate",
            "--namespace",
            NAMESPACE,
        ])
        .args(["--set", "metrics.prometheusRule.enabled=true"])
        .args(["--show-only", "templates/prometheusrule.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run helm (scripts/install-test-tools.sh installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rule: Value = serde_yaml_ng::from_slice(&output.stdout).expect("rendered YAML");
    std::fs::write(path, serde_json::to_vec(&rule["spec"]).unwrap()).unwrap();
    rule["spec"].clone()
}
