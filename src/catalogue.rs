//! `meshgate rules`: the rule catalogue as a table or JSON, read from the
//! rule table (`rules::RULES`), so it cannot disagree with what runs.

use std::fmt::Write;

use serde_json::json;

use crate::cli::{RulesArgs, RulesOutput};
use crate::rules::RuleId;

/// Where a rule's verdict is reached.
pub fn runs_in(rule: RuleId) -> &'static [&'static str] {
    if rule.row().check.is_none() {
        // The certificate mount: a mutation, not a check.
        &["webhook /mutate"]
    } else if rule.row().native.is_some() {
        // Also compiled into a ValidatingAdmissionPolicy (`crate::native`).
        &[
            "webhook /validate",
            "native policy (API server)",
            "background audit",
            "meshgate audit",
        ]
    } else {
        &["webhook /validate", "background audit", "meshgate audit"]
    }
}

pub fn text() -> String {
    let width = RuleId::ALL
        .iter()
        .map(|r| r.as_str().len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:width$}  {:8}  {:17}  {:11}  DOCS",
        "RULE", "SEVERITY", "CATEGORY", "DEFAULT"
    );
    for rule in RuleId::ALL {
        let _ = writeln!(
            out,
            "{:width$}  {:8}  {:17}  {:11}  {}",
            rule.as_str(),
            rule.severity(),
            rule.category(),
            default_mode(*rule),
            rule.doc_url()
        );
        let _ = writeln!(
            out,
            "{:width$}  {} Runs in: {}.",
            "",
            rule.summary(),
            runs_in(*rule).join(", ")
        );
    }
    out
}

pub fn json() -> String {
    let rules: Vec<_> = RuleId::ALL
        .iter()
        .map(|rule| {
            json!({
                "id": rule.as_str(),
                "summary": rule.summary(),
                "severity": rule.severity(),
                "category": rule.category(),
                "defaultMode": default_mode(*rule),
                "judgesDelete": rule.row().on_delete,
                "readsPosture": rule.reads_posture(),
                "runsIn": runs_in(*rule),
                "docs": rule.doc_url(),
            })
        })
        .collect();
    format!(
        "{}\n",
        serde_json::to_string_pretty(&json!({ "rules": rules })).unwrap_or_default()
    )
}

/// The mode without a config: the global default (enforce), capped.
fn default_mode(rule: RuleId) -> &'static str {
    rule.mode_in(&crate::config::Config::default()).as_str()
}

pub fn run(args: &RulesArgs) -> std::process::ExitCode {
    print!(
        "{}",
        match args.output {
            RulesOutput::Text => text(),
            RulesOutput::Json => json(),
        }
    );
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_listed_with_its_docs() {
        let table = text();
        let parsed: serde_json::Value = serde_json::from_str(&json()).unwrap();
        let listed = parsed["rules"].as_array().unwrap();
        assert_eq!(listed.len(), RuleId::ALL.len());
        for rule in RuleId::ALL {
            assert!(table.contains(&rule.doc_url()), "{rule}");
        }
        let mount = listed
            .iter()
            .find(|r| r["id"] == "workload-certificates")
            .unwrap();
        assert_eq!(mount["runsIn"], json!(["webhook /mutate"]));
        let dsa = listed
            .iter()
            .find(|r| r["id"] == "deny-all-overrides-allow")
            .unwrap();
        assert_eq!(dsa["defaultMode"], "audit", "capped at audit");
    }
}
