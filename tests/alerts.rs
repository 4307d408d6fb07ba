//! The chart's alerts can fire: the error and failure series they watch exist
//! at 0 from start-up (`increase()` cannot see the first increment of a series
//! that appears at 1), the rules are tested with `promtool test rules`, and a
//! certificate file that disappears counts as a failed reload.
//!
//! promtool comes from Debian's `prometheus` package, which
//! `scripts/install-test-tools.sh` installs; without it the promtool tests
//! skip with a message.

mod common;
// The exemption alerts' promtool tests.
#[path = "alerts/exemptions.rs"]
mod exemptions;

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
        ("meshgate_events_dropped_total", &[("reason", "queue_full")]),
        (
            "meshgate_events_dropped_total",
            &[("reason", "rate_limited")],
        ),
        (
            "meshgate_events_dropped_total",
            &[("reason", "write_failed")],
        ),
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

// ---------------------------------------------------------- latency, runbooks

/// The `le` bounds of the validate endpoint's latency histogram.
fn latency_bounds(metrics: &Metrics) -> Vec<f64> {
    metrics
        .0
        .lines()
        .filter(|l| l.starts_with("meshgate_admission_duration_seconds_bucket{"))
        .filter(|l| l.contains("endpoint=\"validate\""))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .filter(|le| *le != "+Inf")
        .map(|le| le.parse().unwrap())
        .collect()
}

/// The webhook timeout can be 30 s: the histogram must still tell 5 s from
/// 25 s, and keep its resolution where reviews are (well under 1 ms).
#[tokio::test]
async fn the_latency_histogram_reaches_the_longest_webhook_timeout() {
    let server = Server::start(Options::default());
    server.review(fixture("pod-create-plain.json")).await;
    let bounds = latency_bounds(&server.metrics().await);
    assert_eq!(bounds.last(), Some(&30.0), "{bounds:?}");
    assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
    let sub_millisecond = bounds.iter().filter(|b| **b < 0.001).count();
    assert!(sub_millisecond >= 5, "{bounds:?}");
    // Every timeout the chart allows above 1 s (1..=30) has a bound at most
    // 5 s below it, so "close to the timeout" is measurable.
    for timeout in 2..=30 {
        let timeout = f64::from(timeout);
        assert!(
            bounds.iter().any(|b| *b < timeout && timeout - *b <= 5.0),
            "no bound near {timeout}s: {bounds:?}"
        );
    }
}

/// GitHub's heading anchor: lower case, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every alert links to a runbook section that exists, and every section
/// says what the alert means, what it breaks, how to diagnose and mitigate.
#[test]
fn every_alert_has_a_runbook_url_to_a_section_of_docs_runbooks_md() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_chart_rules(&dir.path().join("rules.json"));
    let runbooks = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/operations/runbooks.md"),
    )
    .unwrap();
    let sections: Vec<(String, &str)> = runbooks
        .split("\n## ")
        .skip(1)
        .map(|s| {
            let (heading, body) = s.split_once('\n').unwrap();
            (anchor(heading), body)
        })
        .collect();
    let rules = spec["groups"][0]["rules"].as_array().unwrap();
    assert!(rules.len() >= 8, "{rules:?}");
    for rule in rules {
        let alert = rule["alert"].as_str().unwrap();
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{alert} has no runbook_url"));
        let (page, fragment) = url.split_once('#').unwrap();
        assert_eq!(
            page,
            format!("{}/operations/runbooks.html", meshgate::rules::DOCS_URL),
            "{alert}: {url}"
        );
        assert_eq!(fragment, alert.to_lowercase(), "{alert}: {url}");
        let (_, body) = sections
            .iter()
            .find(|(a, _)| a == fragment)
            .unwrap_or_else(|| {
                panic!("{alert}: no section #{fragment} in docs/src/operations/runbooks.md")
            });
        for part in [
            "**Meaning.**",
            "**Impact.**",
            "**Diagnosis.**",
            "**Mitigation.**",
        ] {
            assert!(body.contains(part), "{alert}'s runbook has no {part}");
        }
    }
}

/// Latency histogram samples (one a minute, `minutes + 1` of them) of
/// `per_minute` reviews each, all in the bucket whose upper bound is `upper`.
fn latency_series(upper: f64, per_minute: u32, minutes: u32) -> Vec<Value> {
    const BOUNDS: [&str; 6] = ["0.0005", "0.001", "2", "3", "30", "+Inf"];
    BOUNDS
        .iter()
        .map(|le| {
            let holds = le.parse::<f64>().unwrap_or(f64::INFINITY) >= upper;
            let values: Vec<String> = (0..=minutes)
                .map(|m| if holds { m * per_minute } else { 0 }.to_string())
                .collect();
            serde_json::json!({
                "series": series(
                    "meshgate_admission_duration_seconds_bucket",
                    &format!("endpoint=\"validate\",le=\"{le}\""),
                ),
                "values": values.join(" "),
            })
        })
        .collect()
}

#[test]
fn the_latency_alert_fires_when_p99_nears_the_webhook_timeout() {
    if !tool_present("promtool", "the chart's alert rules") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    // webhook.timeoutSeconds 5 (the default), ratio 0.5: fires above 2.5 s.
    let spec = write_chart_rules(&rules);
    let mut expected = annotations(&spec, "MeshgateAdmissionLatencyHigh");
    // Every review in (2 s, 3 s]: p99 interpolates to 2.99 s.
    let description = expected["description"]
        .as_str()
        .unwrap()
        .replace("{{ $value | humanizeDuration }}", "2.99s");
    expected["description"] = description.into();
    let slow = serde_json::json!({
        "interval": "1m",
        "input_series": latency_series(3.0, 60, 30),
        "alert_rule_test": [{
            // Pending: above the limit for less than 10 minutes.
            "eval_time": "5m",
            "alertname": "MeshgateAdmissionLatencyHigh",
            "exp_alerts": [],
        }, {
            "eval_time": "20m",
            "alertname": "MeshgateAdmissionLatencyHigh",
            "exp_alerts": [{
                "exp_labels": {"severity": "critical"},
                "exp_annotations": expected,
            }],
        }],
    });
    promtool(dir.path(), &rules, slow).unwrap();
    // Reviews in (0.5 ms, 1 ms]: far from the timeout, silent.
    let fast = serde_json::json!({
        "interval": "1m",
        "input_series": latency_series(0.001, 6000, 30),
        "alert_rule_test": [{
            "eval_time": "30m",
            "alertname": "MeshgateAdmissionLatencyHigh",
            "exp_alerts": [],
        }],
    });
    promtool(dir.path(), &rules, fast).unwrap();
}
