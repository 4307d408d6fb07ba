//! The exemption alerts under `promtool test rules`: an active exemption
//! that expires within 7 days, and expired ones still present after an hour.

use super::*;

/// The alert's annotations with its templates filled as Prometheus would.
fn filled(spec: &Value, alert: &str, fills: &[(&str, &str)]) -> Value {
    let mut annotations = annotations(spec, alert);
    for value in annotations.as_object_mut().unwrap().values_mut() {
        let mut text = value.as_str().unwrap().to_owned();
        for (template, filled) in fills {
            text = text.replace(template, filled);
        }
        *value = text.into();
    }
    annotations
}

#[test]
fn the_expiring_soon_alert_fires_under_seven_days_to_the_next_expiry() {
    if !tool_present("promtool", "the chart's alert rules") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    let spec = write_chart_rules(&rules);
    let next = "meshgate_exemption_next_expiry_seconds";
    let six_days = filled(
        &spec,
        "MeshgateExemptionExpiringSoon",
        &[("{{ $value | humanizeDuration }}", "6d 0h 0m 0s")],
    );
    let case = serde_json::json!({
        "interval": "1m",
        "input_series": [
            // Two replicas; the second one's view is the soonest.
            {"series": series(next, "instance=\"a\""), "values": "864000x10"},
            {"series": series(next, "instance=\"b\""), "values": "691200x5 518400x5"},
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "MeshgateExemptionExpiringSoon", "exp_alerts": []},
            {"eval_time": "8m", "alertname": "MeshgateExemptionExpiringSoon", "exp_alerts": [{
                "exp_labels": {"severity": "warning"},
                "exp_annotations": six_days,
            }]},
        ],
    });
    promtool(dir.path(), &rules, case).unwrap();

    // No active exemption: the gauge is NaN (or absent), and nothing fires.
    let none = serde_json::json!({
        "interval": "1m",
        "input_series": [{"series": series(next, "instance=\"a\""), "values": "NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN"}],
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "MeshgateExemptionExpiringSoon", "exp_alerts": []},
        ],
    });
    promtool(dir.path(), &rules, none).unwrap();
}

#[test]
fn the_expired_present_alert_fires_after_an_hour_per_scope() {
    if !tool_present("promtool", "the chart's alert rules") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    let spec = write_chart_rules(&rules);
    let gauge = "meshgate_exemptions";
    let expired = filled(
        &spec,
        "MeshgateExemptionExpiredPresent",
        &[("{{ $value }}", "2"), ("{{ $labels.scope }}", "namespaced")],
    );
    let case = serde_json::json!({
        "interval": "1m",
        "input_series": [
            {"series": series(gauge, "state=\"expired\",scope=\"namespaced\""), "values": "0 2x90"},
            {"series": series(gauge, "state=\"active\",scope=\"cluster\""), "values": "5x90"},
            {"series": series(gauge, "state=\"expired\",scope=\"config\""), "values": "0x90"},
        ],
        "alert_rule_test": [
            {"eval_time": "30m", "alertname": "MeshgateExemptionExpiredPresent", "exp_alerts": []},
            {"eval_time": "75m", "alertname": "MeshgateExemptionExpiredPresent", "exp_alerts": [{
                "exp_labels": {"severity": "info", "scope": "namespaced"},
                "exp_annotations": expired,
            }]},
        ],
    });
    promtool(dir.path(), &rules, case).unwrap();
}
