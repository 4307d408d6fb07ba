//! The chart's alerts can fire: the error and failure series they watch exist
//! at 0 from start-up (`increase()` cannot see the first increment of a series
//! that appears at 1), the rules are tested with `promtool test rules`, and a
//! certificate file that disappears counts as a failed reload.
//!
//! promtool comes from Debian's `prometheus` package, which
//! `scripts/install-test-tools.sh` installs; without it the promtool tests
//! skip with a message.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::prometheus::{tool_present, write_chart_rules, NAMESPACE, RELEASE};
use common::*;
use serde_json::Value;

const POD: &str = "meshgate-5d8f7c9b4-x2x7q";

/// Whether the exposition has a sample `name{...labels...} 0`.
fn zero_sample(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> bool {
    metrics.0.lines().any(|line| {
        let Some(rest) = line.strip_prefix(name) else {
            return false;
        };
        rest.starts_with('{')
            && rest.ends_with("} 0")
            && labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
    })
}

#[tokio::test]
async fn a_fresh_server_exposes_its_error_series_at_zero() {
    let server = Server::start(Options::default().config(
        r#"
exemptions:
  - rules: [no-host-network]
    namespace: monitoring
    reason: node exporter needs the host network
"#,
    ));
    let metrics = server.metrics().await;
    let expected: &[(&str, &[(&str, &str)])] = &[
        ("meshgate_tls_reloads_total", &[("result", "failure")]),
        ("meshgate_tls_reloads_total", &[("result", "success")]),
        (
            "meshgate_admission_requests_total",
            &[("endpoint", "validate"), ("decision", "error")],
        ),
        (
            "meshgate_admission_requests_total",
            &[("endpoint", "mutate"), ("decision", "error")],
        ),
        (
            "meshgate_violations_total",
            &[("rule", "sidecar-required"), ("mode", "audit")],
        ),
        (
            "meshgate_violations_total",
            &[("rule", "short-lived-certificates"), ("mode", "enforce")],
        ),
        (
            "meshgate_exemptions_applied_total",
            &[("rule", "no-host-network")],
        ),
        ("meshgate_connections_shed_total", &[("reason", "evicted")]),
        (
            "meshgate_connections_shed_total",
            &[("reason", "idle_timeout")],
        ),
        (
            "meshgate_connections_shed_total",
            &[("reason", "request_timeout")],
        ),
    ];
    for (name, labels) in expected {
        assert!(
            zero_sample(&metrics, name, labels),
            "no {name}{labels:?} at 0 in:\n{}",
            metrics.0
        );
    }
}

#[tokio::test]
async fn a_deleted_key_file_counts_as_one_failed_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("alerts CA");
    let serving = ca.issue();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &serving.cert_pem).unwrap();
    std::fs::write(&key, &serving.key_pem).unwrap();
    let server = Server::start(Options::default().tls(TlsFiles {
        cert,
        key: key.clone(),
        ca_pem: ca.pem.clone(),
    }));
    let failures = || async {
        server
            .metrics()
            .await
            .value("meshgate_tls_reloads_total", &[("result", "failure")])
    };
    assert_eq!(failures().await, 0.0);

    std::fs::remove_file(&key).unwrap();
    eventually("the missing key to be counted", PROMPTLY, || async {
        (failures().await == 1.0).then_some(())
    })
    .await;
    // Polled every 200 ms: still one failure, not one per poll.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(failures().await, 1.0);
    // And the old certificate keeps serving.
    assert_eq!(server.get("/healthz").await.0, hyper::StatusCode::OK);
}

// ---------------------------------------------------------------- promtool

fn annotations(spec: &Value, alert: &str) -> Value {
    let rule = spec["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == alert)
        .unwrap_or_else(|| panic!("no alert {alert}"));
    let mut annotations = rule["annotations"].clone();
    for value in annotations.as_object_mut().unwrap().values_mut() {
        *value = value
            .as_str()
            .unwrap()
            .replace("{{ $labels.pod }}", POD)
            .into();
    }
    annotations
}

/// Runs `promtool test rules` on one test case; returns its output on failure.
fn promtool(dir: &Path, rules: &Path, case: Value) -> Result<(), String> {
    let tests = serde_json::json!({
        "rule_files": [rules],
        "evaluation_interval": "1m",
        "tests": [case],
    });
    let path = dir.join("tests.json");
    std::fs::write(&path, serde_json::to_vec(&tests).unwrap()).unwrap();
    let output = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&path)
        .output()
        .expect("run promtool");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn series(name: &str, labels: &str) -> String {
    format!("{name}{{job=\"{RELEASE}\",namespace=\"{NAMESPACE}\",pod=\"{POD}\",{labels}}}")
}

/// The reload alert for one series of samples (one a minute).
fn reload_case(spec: &Value, values: &str, fires: bool) -> Value {
    let expected = if fires {
        serde_json::json!([{
            "exp_labels": {
                "severity": "warning", "job": RELEASE, "namespace": NAMESPACE,
                "pod": POD, "result": "failure",
            },
            "exp_annotations": annotations(spec, "MeshgateTLSReloadFailing"),
        }])
    } else {
        serde_json::json!([])
    };
    serde_json::json!({
        "interval": "1m",
        "input_series": [{
            "series": series("meshgate_tls_reloads_total", "result=\"failure\""),
            "values": values,
        }],
        "alert_rule_test": [{
            "eval_time": "5m",
            "alertname": "MeshgateTLSReloadFailing",
            "exp_alerts": expected,
        }],
    })
}

#[test]
fn the_tls_reload_alert_fires_on_the_first_failure() {
    if !tool_present("promtool", "the chart's alert rules") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    let spec = write_chart_rules(&rules);
    // Created at 0 at start-up, then the first failure.
    promtool(dir.path(), &rules, reload_case(&spec, "0 0 0 1 1 1", true)).unwrap();
    // No failure, no alert.
    promtool(dir.path(), &rules, reload_case(&spec, "0 0 0 0 0 0", false)).unwrap();
    // Why the series must exist at 0: one that appears at 1 has no increase,
    // and the alert stays silent.
    promtool(dir.path(), &rules, reload_case(&spec, "_ _ _ 1 1 1", false)).unwrap();
}

#[test]
fn the_connection_cap_alert_fires_when_connections_are_shed() {
    if !tool_present("promtool", "the chart's alert rules") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    let spec = write_chart_rules(&rules);
    let case = serde_json::json!({
        "interval": "1m",
        "input_series": [{
            "series": series("meshgate_connections_shed_total", "reason=\"evicted\""),
            "values": "0 0 0 40 90 90",
        }, {
            "series": series("meshgate_connections_shed_total", "reason=\"idle_timeout\""),
            "values": "0 5 10 15 20 25",
        }],
        "alert_rule_test": [{
            "eval_time": "5m",
            "alertname": "MeshgateConnectionCapReached",
            "exp_alerts": [{
                "exp_labels": {"severity": "warning", "pod": POD},
                "exp_annotations": annotations(&spec, "MeshgateConnectionCapReached"),
            }],
        }, {
            "eval_time": "2m",
            "alertname": "MeshgateConnectionCapReached",
            "exp_alerts": [],
        }],
    });
    promtool(dir.path(), &rules, case).unwrap();
}
