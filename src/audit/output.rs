//! Audit output: text for people (grouped by object, with the fix), JSON for
//! scripts, SARIF 2.1.0 for code-scanning UIs.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde_json::json;

use super::{NamespacePosture, Report, Reported};
use crate::config::Mode;
use crate::rules::RuleId;

pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let mut current: Option<(&str, usize, &str, &str, &str)> = None;
    for f in &report.findings {
        let key = (
            f.file.as_str(),
            f.document,
            f.kind.as_str(),
            f.namespace.as_str(),
            f.name.as_str(),
        );
        if current != Some(key) {
            if current.is_some() {
                out.push('\n');
            }
            let object = if f.kind == "Namespace" {
                format!("Namespace {}", f.name)
            } else {
                format!("{} {}/{}", f.kind, f.namespace, f.name)
            };
            let _ = writeln!(
                out,
                "{object} ({}:{}, document {})",
                f.file, f.line, f.document
            );
            current = Some(key);
        }
        let mark = if f.mode == Mode::Enforce {
            "DENY "
        } else {
            "WARN "
        };
        let _ = writeln!(out, "  {mark}[{}] {}", f.rule, f.message);
        let _ = writeln!(out, "        fix: {}", f.fix);
    }
    if !report.findings.is_empty() {
        out.push('\n');
    }
    namespace_posture_text(&report.namespaces, &mut out);
    let _ = writeln!(
        out,
        "{} objects checked: {} enforce-level findings, {} audit-level findings, {} exempted",
        report.objects_checked,
        report.count(Mode::Enforce),
        report.count(Mode::Audit),
        report.exempted
    );
    out
}

/// One aligned line per namespace, weak ones marked.
fn namespace_posture_text(namespaces: &[NamespacePosture], out: &mut String) {
    if namespaces.is_empty() {
        return;
    }
    let _ = writeln!(out, "Namespace posture:");
    let width = namespaces.iter().map(|n| n.name.len()).max().unwrap_or(0);
    for ns in namespaces {
        let _ = writeln!(
            out,
            "  {:width$}  {} enrolled: {:7} mTLS: {}  deny-by-default: {}",
            ns.name,
            if ns.is_weak() { "WEAK" } else { "ok  " },
            ns.enrolled.as_str(),
            ns.mtls,
            ns.deny_by_default.as_deref().unwrap_or("none"),
        );
    }
    out.push('\n');
}

pub fn json(report: &Report) -> String {
    let value = json!({
        "findings": report.findings.iter().map(finding_json).collect::<Vec<_>>(),
        "namespaces": report.namespaces.iter().map(|ns| json!({
            "name": ns.name,
            "enrolled": ns.enrolled.as_str(),
            "mtls": ns.mtls.mode.as_str(),
            "mtlsDecidedBy": ns.mtls.by.as_ref().map(|p| p.to_string()),
            "denyByDefault": ns.deny_by_default,
            "weak": ns.is_weak(),
        })).collect::<Vec<_>>(),
        "summary": {
            "objectsChecked": report.objects_checked,
            "findings": report.findings.len(),
            "enforce": report.count(Mode::Enforce),
            "audit": report.count(Mode::Audit),
            "exempted": report.exempted,
            "weakNamespaces": report.namespaces.iter().filter(|n| n.is_weak()).count(),
        }
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    )
}

fn finding_json(f: &Reported) -> serde_json::Value {
    json!({
        "rule": f.rule.as_str(),
        "mode": f.mode.as_str(),
        "apiVersion": f.api_version,
        "kind": f.kind,
        "namespace": f.namespace,
        "name": f.name,
        "message": f.message,
        "fix": f.fix,
        "file": f.file,
        "document": f.document,
        "line": f.line,
    })
}

pub fn sarif(report: &Report) -> String {
    let used: BTreeSet<RuleId> = report.findings.iter().map(|f| f.rule).collect();
    let rules: Vec<_> = RuleId::ALL
        .iter()
        .map(|r| {
            json!({
                "id": r.as_str(),
                "name": r.as_str(),
                "shortDescription": {"text": r.summary()},
                "helpUri": format!("https://github.com/meshgate/meshgate#{}", r.as_str()),
            })
        })
        .collect();
    let results: Vec<_> = report
        .findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": f.rule.as_str(),
                "ruleIndex": RuleId::ALL.iter().position(|r| *r == f.rule),
                "level": if f.mode == Mode::Enforce { "error" } else { "warning" },
                "message": {"text": format!("{} Fix: {}", f.message, f.fix)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.file},
                        "region": {"startLine": f.line}
                    },
                    "logicalLocations": [{
                        "fullyQualifiedName": format!("{}/{}/{}", f.kind, f.namespace, f.name),
                        "kind": "object"
                    }]
                }]
            })
        })
        .collect();
    let value = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "meshgate",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/meshgate/meshgate",
                "rules": rules,
            }},
            "results": results,
            "properties": {"rulesWithFindings": used.iter().map(|r| r.as_str()).collect::<Vec<_>>()}
        }]
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    )
}
