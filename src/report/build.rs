//! Verdicts to reports, the way Kyverno (1.10 and later) writes them and
//! Policy Reporter reads them: pure and deterministic (same verdicts, same
//! reports, so the writer sees no change).
//!
//! - **One report per judged object**: a `PolicyReport` in the object's
//!   namespace, a `ClusterPolicyReport` for a Namespace. Named from the
//!   object's uid (`meshgate-<uid>`: Kyverno names its report the bare uid,
//!   so the prefix keeps the two apart on a cluster running both).
//! - **`scope`** is the object; an **owner reference** to it lets the
//!   garbage collector delete the report with the object.
//! - **One result per rule**, listing the object as its single resource:
//!   Policy Reporter reads the first resource of a result (the `scope` when
//!   there is none), so every result counts exactly one object.
//! - `summary` counts the results. A report has one result per rule that
//!   judges the object's kind, so its size is bounded by the catalogue.

use std::collections::BTreeMap;

use super::types::{Flavor, OwnerReference, Report, ReportResult, ResourceRef, Summary, Timestamp};
use super::verdict::{ObjectVerdict, Outcome, RuleResult};
use super::{REPORT_NAME_PREFIX, SOURCE};
use crate::background::ObjectRef;

/// One report per verdict with results (objects in exempt namespaces have
/// none), sorted by namespace (cluster reports first) and name.
pub fn reports<'a>(
    verdicts: impl IntoIterator<Item = &'a ObjectVerdict>,
    flavor: Flavor,
    now: Timestamp,
) -> Vec<Report> {
    let mut reports: Vec<Report> = verdicts
        .into_iter()
        .filter(|verdict| !verdict.results.is_empty())
        .map(|verdict| report(verdict, flavor, now))
        .collect();
    reports.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    reports
}

/// The report about one object.
pub fn report(verdict: &ObjectVerdict, flavor: Flavor, now: Timestamp) -> Report {
    let object = &verdict.reference;
    let namespace = (!object.namespace.is_empty()).then_some(object.namespace.as_str());
    let mut report = Report::empty(flavor, namespace, &report_name(object));
    report.scope = Some(reference(object));
    // The API server refuses an owner reference without a uid (an object
    // read from a file has none): such a report has no owner.
    if !object.uid.is_empty() {
        report.metadata.owner_references.push(OwnerReference {
            api_version: object.api_version.clone(),
            kind: object.kind.as_str().to_owned(),
            name: object.name.clone(),
            uid: object.uid.clone(),
            controller: false,
            block_owner_deletion: false,
        });
    }
    let merged = per_rule(&verdict.results);
    report.summary = summary(&merged);
    report.results = merged
        .iter()
        .map(|result| entry(object, result, now))
        .collect();
    report
}

/// `meshgate-<uid>`; for an object without a uid (read from a file), a
/// hash of its kind, namespace and name, so the name stays deterministic.
pub fn report_name(object: &ObjectRef) -> String {
    if !object.uid.is_empty() {
        return format!("{REPORT_NAME_PREFIX}{}", object.uid.to_ascii_lowercase());
    }
    let identity = format!(
        "{}/{}/{}",
        object.kind.as_str(),
        object.namespace,
        object.name
    );
    format!("{REPORT_NAME_PREFIX}{:016x}", fnv1a(identity.as_bytes()))
}

/// FNV-1a, 64 bits: stable across Rust releases, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A rule can find several things wrong with one object: they make one
/// result, with the most severe outcome and every message. Sorted by
/// outcome (fail first), then rule.
fn per_rule(results: &[RuleResult]) -> Vec<RuleResult> {
    let mut by_rule: BTreeMap<_, RuleResult> = BTreeMap::new();
    for result in results {
        by_rule
            .entry(result.rule)
            .and_modify(|merged| merge(merged, result))
            .or_insert_with(|| result.clone());
    }
    let mut merged: Vec<RuleResult> = by_rule.into_values().collect();
    merged.sort_by_key(|r| (order(r.outcome), r.rule));
    merged
}

fn merge(into: &mut RuleResult, other: &RuleResult) {
    if order(other.outcome) < order(into.outcome) {
        into.outcome = other.outcome;
    }
    for (text, more) in [
        (&mut into.message, &other.message),
        (&mut into.fix, &other.fix),
    ] {
        if !more.is_empty() && !text.split("; ").any(|part| part == more) {
            if !text.is_empty() {
                text.push_str("; ");
            }
            text.push_str(more);
        }
    }
}

fn entry(object: &ObjectRef, result: &RuleResult, now: Timestamp) -> ReportResult {
    let rule = result.rule;
    let mut properties = BTreeMap::new();
    if !result.fix.is_empty() {
        properties.insert("fix".to_owned(), result.fix.clone());
    }
    // Issue 21: which exemption lifted a skipped finding, why, and until when.
    if let Some(note) = result
        .exemption
        .as_ref()
        .filter(|_| result.outcome == Outcome::Skip)
    {
        properties.insert("exemption".to_owned(), note.source.clone());
        properties.insert("reason".to_owned(), note.reason.clone());
        if let Some(expires) = &note.expires {
            properties.insert("expires".to_owned(), expires.clone());
        }
    }
    ReportResult {
        source: SOURCE.to_owned(),
        policy: rule.as_str().to_owned(),
        rule: rule.as_str().to_owned(),
        result: result.outcome.as_str().to_owned(),
        severity: rule.severity().to_owned(),
        category: rule.category().to_owned(),
        scored: true,
        message: result.message.clone(),
        properties,
        resources: vec![reference(object)],
        timestamp: now,
    }
}

fn reference(object: &ObjectRef) -> ResourceRef {
    ResourceRef {
        api_version: object.api_version.clone(),
        kind: object.kind.as_str().to_owned(),
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        uid: object.uid.clone(),
    }
}

fn summary(results: &[RuleResult]) -> Summary {
    let mut summary = Summary::default();
    for result in results {
        match result.outcome {
            Outcome::Pass => summary.pass += 1,
            Outcome::Fail => summary.fail += 1,
            Outcome::Warn => summary.warn += 1,
            Outcome::Skip => summary.skip += 1,
        }
    }
    summary
}

fn order(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Fail => 0,
        Outcome::Warn => 1,
        Outcome::Skip => 2,
        Outcome::Pass => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleId;
    use crate::subject::Kind;

    fn object(namespace: &str, kind: Kind, name: &str, uid: &str) -> ObjectRef {
        ObjectRef {
            api_version: if kind == Kind::Deployment {
                "apps/v1"
            } else {
                "v1"
            }
            .into(),
            kind,
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn result(rule: RuleId, outcome: Outcome) -> RuleResult {
        RuleResult {
            rule,
            outcome,
            message: format!("{rule} is {} for this object", outcome.as_str()),
            fix: format!("fix {rule}"),
            exemption: None,
        }
    }

    const NOW: Timestamp = Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    };
    const WEB_UID: &str = "6f1c2a3b-0d4e-4f50-9a61-7b8c9d0e1f2a";

    fn web() -> ObjectVerdict {
        ObjectVerdict {
            reference: object("shop", Kind::Deployment, "web", WEB_UID),
            results: vec![
                result(RuleId::SidecarRequired, Outcome::Pass),
                result(RuleId::StrictMtlsRequired, Outcome::Warn),
                result(RuleId::NoHostNetwork, Outcome::Skip),
                result(RuleId::DefaultDenyRequired, Outcome::Fail),
            ],
        }
    }

    #[test]
    fn a_skip_names_its_exemption_reason_and_expiry() {
        let mut verdict = web();
        verdict.results = vec![RuleResult {
            exemption: Some(crate::report::verdict::ExemptionNote {
                source: "ClusterMeshExemption/legacy-agents".into(),
                reason: "node agents need the host network".into(),
                expires: Some("2027-01-31T00:00:00Z".into()),
            }),
            ..result(RuleId::NoHostNetwork, Outcome::Skip)
        }];
        let report = report(&verdict, Flavor::Wgpolicy, NOW);
        let p = &report.results[0].properties;
        assert_eq!(report.results[0].result, "skip");
        assert_eq!(p["exemption"], "ClusterMeshExemption/legacy-agents");
        assert_eq!(p["reason"], "node agents need the host network");
        assert_eq!(p["expires"], "2027-01-31T00:00:00Z");
    }

    #[test]
    fn one_report_per_object_with_one_result_per_rule_about_that_object() {
        let namespace = ObjectVerdict {
            reference: object(
                "",
                Kind::Namespace,
                "shop",
                "1d2e3f40-5a6b-4c7d-8e9f-a0b1c2d3e4f5",
            ),
            results: vec![result(RuleId::NamespaceMeshEnrolled, Outcome::Fail)],
        };
        let reports = reports(&[web(), namespace], Flavor::Wgpolicy, NOW);
        assert_eq!(reports.len(), 2);
        let (cluster, shop) = (&reports[0], &reports[1]);
        assert_eq!(cluster.kind, "ClusterPolicyReport");
        assert_eq!(cluster.metadata.namespace, None);
        assert_eq!(cluster.summary.fail, 1);
        assert_eq!(shop.kind, "PolicyReport");
        assert_eq!(shop.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(
            shop.metadata.labels["app.kubernetes.io/managed-by"],
            "meshgate"
        );
        assert_eq!(
            shop.summary,
            Summary {
                pass: 1,
                fail: 1,
                warn: 1,
                skip: 1,
                error: 0,
            }
        );
        let outcomes: Vec<(&str, &str)> = shop
            .results
            .iter()
            .map(|r| (r.policy.as_str(), r.result.as_str()))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("default-deny-required", "fail"),
                ("strict-mtls-required", "warn"),
                ("no-host-network", "skip"),
                ("sidecar-required", "pass"),
            ]
        );
        let scope = shop.scope.clone().unwrap();
        assert_eq!(
            (scope.api_version.as_str(), scope.kind.as_str()),
            ("apps/v1", "Deployment")
        );
        assert_eq!(
            (scope.namespace.as_str(), scope.name.as_str()),
            ("shop", "web")
        );
        assert_eq!(scope.uid, WEB_UID);
        for result in &shop.results {
            // Exactly the report's object: what Policy Reporter counts.
            assert_eq!(result.resources, std::slice::from_ref(&scope));
            assert_eq!(result.source, "meshgate");
        }
        assert_eq!(
            shop.results[0].properties["fix"],
            "fix default-deny-required"
        );
    }

    #[test]
    fn the_report_is_named_from_the_uid_and_owned_by_its_object() {
        let report = report(&web(), Flavor::Wgpolicy, NOW);
        assert_eq!(report.metadata.name, format!("meshgate-{WEB_UID}"));
        assert_eq!(
            report.metadata.owner_references,
            [OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                uid: WEB_UID.into(),
                controller: false,
                block_owner_deletion: false,
            }]
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
            false
        );
        assert_eq!(json["scope"]["uid"], WEB_UID);

        // Read from a file, without a uid: a stable name from the object's
        // identity, and no owner (the API server would refuse one).
        let mut from_file = web();
        from_file.reference.uid.clear();
        let first = super::report(&from_file, Flavor::Wgpolicy, NOW);
        let again = super::report(&from_file, Flavor::Wgpolicy, NOW);
        assert_eq!(first.metadata.name, again.metadata.name);
        let hash = first.metadata.name.strip_prefix("meshgate-").unwrap();
        assert_eq!(hash.len(), 16);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
        assert!(first.metadata.owner_references.is_empty());
        from_file.reference.name = "api".into();
        let other = super::report(&from_file, Flavor::Wgpolicy, NOW);
        assert_ne!(other.metadata.name, first.metadata.name);
    }

    #[test]
    fn several_findings_of_one_rule_make_one_result_with_the_worst_outcome() {
        let mut verdict = web();
        verdict.results = vec![
            result(RuleId::DedicatedServiceAccount, Outcome::Warn),
            RuleResult {
                message: "second finding".into(),
                ..result(RuleId::DedicatedServiceAccount, Outcome::Fail)
            },
        ];
        let report = report(&verdict, Flavor::Wgpolicy, NOW);
        assert_eq!(report.results.len(), 1);
        assert_eq!(report.results[0].result, "fail");
        assert_eq!(
            report.results[0].message,
            "dedicated-service-account is warn for this object; second finding"
        );
        assert_eq!(
            report.results[0].properties["fix"],
            "fix dedicated-service-account"
        );
        assert_eq!(report.summary.fail, 1);
    }

    #[test]
    fn objects_without_results_get_no_report_and_openreports_has_its_kinds() {
        let mut exempt = web();
        exempt.results.clear();
        assert!(reports(&[exempt], Flavor::Wgpolicy, NOW).is_empty());
        let open = reports(&[web()], Flavor::OpenReports, NOW);
        assert_eq!(open[0].api_version, "openreports.io/v1alpha1");
        assert_eq!(open[0].kind, "Report");
    }

    #[test]
    fn same_verdicts_give_the_same_reports_whatever_their_order_and_time() {
        let verdicts: Vec<ObjectVerdict> = ["b", "a", "c"]
            .iter()
            .map(|name| ObjectVerdict {
                reference: object("shop", Kind::Pod, name, &format!("uid-{name}")),
                results: vec![result(RuleId::SidecarRequired, Outcome::Fail)],
            })
            .collect();
        let first = reports(&verdicts, Flavor::Wgpolicy, NOW);
        let reversed: Vec<_> = verdicts.iter().rev().cloned().collect();
        let later = Timestamp {
            seconds: NOW.seconds + 60,
            nanos: 0,
        };
        let second = reports(&reversed, Flavor::Wgpolicy, later);
        assert_ne!(first, second);
        assert!(first.iter().zip(&second).all(|(a, b)| a.same_content(b)));
        assert_eq!(first[0].metadata.name, "meshgate-uid-a");
    }
}
