//! Audit output: text for people (grouped by object, with the fix), JSON for
//! scripts, SARIF 2.1.0 for code-scanning UIs.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde_json::json;

use super::{NamespacePosture, Report, Reported};
use crate::config::Mode;
use crate::rules::RuleId;

/// How the text output looks.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextStyle {
    /// ANSI colours: DENY red, WARN yellow, objects bold.
    pub color: bool,
    /// Findings only: no namespace posture, no summary line.
    pub quiet: bool,
}

impl TextStyle {
    pub fn of(args: &crate::cli::AuditArgs) -> Self {
        use crate::cli::ColorChoice;
        use std::io::IsTerminal;
        let color = match args.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            // https://no-color.org
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        };
        TextStyle {
            color,
            quiet: args.quiet,
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

pub fn text(report: &Report, style: TextStyle) -> String {
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
                "{} ({}:{}, document {})",
                style.paint("1", &object),
                f.file,
                f.line,
                f.document
            );
            current = Some(key);
        }
        let mark = if f.mode == Mode::Enforce {
            style.paint("1;31", "DENY")
        } else {
            style.paint("1;33", "WARN")
        };
        let _ = writeln!(out, "  {mark} [{}] {}", f.rule, f.message);
        let _ = writeln!(out, "        fix: {}", f.fix);
    }
    if style.quiet {
        return out;
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
    let base = std::env::current_dir().ok();
    let used: BTreeSet<RuleId> = report.findings.iter().map(|f| f.rule).collect();
    let rules: Vec<_> = RuleId::ALL.iter().map(|r| sarif_rule(*r)).collect();
    let results: Vec<_> = report
        .findings
        .iter()
        .map(|f| sarif_result(f, base.as_deref()))
        .collect();
    let value = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "meshgate",
                "version": env!("CARGO_PKG_VERSION"),
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/meshgate/meshgate",
                "rules": rules,
            }},
            "results": results,
            "originalUriBaseIds": {"%SRCROOT%": {"uri": base.as_deref().map(|b| format!("file://{}/", b.display()))}},
            "properties": {"rulesWithFindings": used.iter().map(|r| r.as_str()).collect::<Vec<_>>()}
        }]
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    )
}

/// A rule of SARIF's `tool.driver.rules`.
fn sarif_rule(r: RuleId) -> serde_json::Value {
    json!({
        "id": r.as_str(),
        "name": r.as_str(),
        "shortDescription": {"text": r.summary()},
        "helpUri": r.doc_url(),
        "defaultConfiguration": {"level": sarif_level(r.default_cap())},
        "properties": {
            // GitHub code scanning ranks alerts by this CVSS-like score.
            "security-severity": security_severity(r.row().severity),
            "tags": ["security", r.category()],
            "problem.severity": r.severity(),
        },
    })
}

/// One finding as a SARIF result, located in its file and as an object.
fn sarif_result(f: &Reported, base: Option<&std::path::Path>) -> serde_json::Value {
    json!({
        "ruleId": f.rule.as_str(),
        "ruleIndex": RuleId::ALL.iter().position(|r| *r == f.rule),
        "level": if f.mode == Mode::Enforce { "error" } else { "warning" },
        "message": {"text": format!("{} Fix: {}", f.message, f.fix)},
        "locations": [{
            "physicalLocation": {
                "artifactLocation": artifact(&f.file, base),
                "region": {"startLine": f.line}
            },
            "logicalLocations": [{
                "fullyQualifiedName": format!("{}/{}/{}", f.kind, f.namespace, f.name),
                "kind": "object"
            }]
        }]
    })
}

fn sarif_level(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "error",
        Mode::Audit => "warning",
        Mode::Off => "none",
    }
}

/// GitHub's `security-severity` bands: over 7.0 high, 4.0 to 6.9 medium,
/// under 4.0 low.
fn security_severity(severity: crate::vocab::Severity) -> &'static str {
    match severity {
        crate::vocab::Severity::High => "8.0",
        crate::vocab::Severity::Medium => "5.5",
        crate::vocab::Severity::Low => "3.0",
    }
}

/// A file as code-scanning UIs want it: relative to the checkout (the
/// working directory) when it lies under it, with `%SRCROOT%` as its base;
/// stdin and `cluster:` origins as they are.
fn artifact(file: &str, base: Option<&std::path::Path>) -> serde_json::Value {
    let path = std::path::Path::new(file);
    let relative = match base {
        Some(base) if path.is_absolute() => path.strip_prefix(base).ok(),
        _ if path.is_relative() && !file.contains(':') && file != "-" => Some(path),
        _ => None,
    };
    match relative {
        Some(rel) => {
            let uri = rel.to_string_lossy().trim_start_matches("./").to_owned();
            json!({"uri": uri, "uriBaseId": "%SRCROOT%"})
        }
        None => json!({"uri": file}),
    }
}
