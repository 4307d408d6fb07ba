//! Verdicts to reports: pure, deterministic (same verdicts, same reports,
//! so the writer sees no change) and bounded in size.
//!
//! Size bound: etcd refuses objects over 1.5 MiB, and a namespace can hold
//! thousands of pods. So:
//! - `pass` results are one per rule, listing at most
//!   [`Bounds::resources_per_result`] objects (the count is in
//!   `properties.objects`);
//! - `fail`, `warn` and `skip` results are one per object and rule for the
//!   first [`Bounds::detailed_results`] (fail first, then warn, then skip;
//!   by rule and object within), and the rest one per rule and outcome, each
//!   listing at most [`Bounds::resources_per_result`] objects with the count
//!   in `properties.objects`;
//! - `summary` always counts every object and rule, cut or not.
//!
//! With the defaults a 10,000-pod namespace in which every pod fails every
//! rule stays under 0.5 MiB (tested below).

use std::collections::BTreeMap;

use super::types::{Flavor, Report, ReportResult, ResourceRef, Summary, Timestamp};
use super::verdict::{ObjectVerdict, Outcome, RuleResult};
use super::SOURCE;
use crate::background::ObjectRef;
use crate::rules::RuleId;

#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub detailed_results: usize,
    pub resources_per_result: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            detailed_results: 500,
            resources_per_result: 50,
        }
    }
}

/// One report per namespace with judged objects, and a cluster-scoped one
/// for Namespaces (if any were judged). Sorted: cluster report first, then
/// by namespace.
pub fn reports<'a>(
    verdicts: impl IntoIterator<Item = &'a ObjectVerdict>,
    flavor: Flavor,
    now: Timestamp,
    bounds: Bounds,
) -> Vec<Report> {
    let mut by_namespace: BTreeMap<&str, Vec<(&ObjectRef, &RuleResult)>> = BTreeMap::new();
    for verdict in verdicts {
        for result in &verdict.results {
            by_namespace
                .entry(verdict.reference.namespace.as_str())
                .or_default()
                .push((&verdict.reference, result));
        }
    }
    by_namespace
        .into_iter()
        .map(|(namespace, results)| {
            let scope = (!namespace.is_empty()).then_some(namespace);
            report(flavor, scope, results, now, bounds)
        })
        .collect()
}

fn report(
    flavor: Flavor,
    namespace: Option<&str>,
    mut results: Vec<(&ObjectRef, &RuleResult)>,
    now: Timestamp,
    bounds: Bounds,
) -> Report {
    let mut report = Report::empty(flavor, namespace);
    report.summary = summary(&results);
    results.sort_by(|(a_ref, a), (b_ref, b)| {
        (
            order(a.outcome),
            a.rule,
            a_ref.kind.as_str(),
            &a_ref.name,
            &a.message,
        )
            .cmp(&(
                order(b.outcome),
                b.rule,
                b_ref.kind.as_str(),
                &b_ref.name,
                &b.message,
            ))
    });
    let (passes, findings): (Vec<_>, Vec<_>) = results
        .into_iter()
        .partition(|(_, r)| r.outcome == Outcome::Pass);

    let detailed = findings.len().min(bounds.detailed_results);
    for (object, result) in &findings[..detailed] {
        let mut entry = entry(result.rule, result.outcome, now);
        entry.message = result.message.clone();
        if !result.fix.is_empty() {
            entry.properties.insert("fix".into(), result.fix.clone());
        }
        entry.resources.push(reference(object));
        report.results.push(entry);
    }
    report.results.extend(aggregated(
        &findings[detailed..],
        now,
        bounds,
        "more objects, not listed one by one to bound the report's size",
    ));
    report
        .results
        .extend(aggregated(&passes, now, bounds, "objects pass"));
    report
}

/// One result per rule and outcome for `results` (already sorted).
fn aggregated(
    results: &[(&ObjectRef, &RuleResult)],
    now: Timestamp,
    bounds: Bounds,
    what: &str,
) -> Vec<ReportResult> {
    let mut groups: Vec<ReportResult> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for (object, result) in results {
        let same = groups.last().is_some_and(|g| {
            g.policy == result.rule.as_str() && g.result == result.outcome.as_str()
        });
        if !same {
            groups.push(entry(result.rule, result.outcome, now));
            counts.push(0);
        }
        if let (Some(group), Some(count)) = (groups.last_mut(), counts.last_mut()) {
            *count += 1;
            if group.resources.len() < bounds.resources_per_result {
                group.resources.push(reference(object));
            }
        }
    }
    for (group, count) in groups.iter_mut().zip(counts) {
        group.properties.insert("objects".into(), count.to_string());
        group.message = if count > group.resources.len() {
            format!(
                "{count} {what} (the first {} listed)",
                group.resources.len()
            )
        } else {
            format!("{count} {what}")
        };
    }
    groups
}

fn entry(rule: RuleId, outcome: Outcome, now: Timestamp) -> ReportResult {
    ReportResult {
        source: SOURCE.to_owned(),
        policy: rule.as_str().to_owned(),
        rule: rule.as_str().to_owned(),
        result: outcome.as_str().to_owned(),
        severity: rule.severity().to_owned(),
        category: rule.category().to_owned(),
        scored: true,
        message: String::new(),
        properties: BTreeMap::new(),
        resources: Vec::new(),
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

fn summary(results: &[(&ObjectRef, &RuleResult)]) -> Summary {
    let mut summary = Summary::default();
    for (_, result) in results {
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
    use crate::subject::Kind;

    fn object(namespace: &str, kind: Kind, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: if kind == Kind::Namespace {
                "v1"
            } else {
                "apps/v1"
            }
            .into(),
            kind,
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("0000-{name}"),
        }
    }

    fn result(rule: RuleId, outcome: Outcome) -> RuleResult {
        RuleResult {
            rule,
            outcome,
            message: format!("{rule} is {} for this object", outcome.as_str()),
            fix: format!("fix {rule}"),
        }
    }

    const NOW: Timestamp = Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    };

    #[test]
    fn one_report_per_namespace_and_one_for_the_cluster_with_the_findings_in_full() {
        let verdicts = vec![
            ObjectVerdict {
                reference: object("", Kind::Namespace, "shop"),
                results: vec![result(RuleId::NamespaceMeshEnrolled, Outcome::Fail)],
            },
            ObjectVerdict {
                reference: object("shop", Kind::Deployment, "web"),
                results: vec![
                    result(RuleId::SidecarRequired, Outcome::Pass),
                    result(RuleId::StrictMtlsRequired, Outcome::Warn),
                    result(RuleId::NoHostNetwork, Outcome::Skip),
                ],
            },
        ];
        let reports = reports(&verdicts, Flavor::Wgpolicy, NOW, Bounds::default());
        assert_eq!(reports.len(), 2);
        let (cluster, shop) = (&reports[0], &reports[1]);
        assert_eq!(cluster.kind, "ClusterPolicyReport");
        assert_eq!(cluster.metadata.namespace, None);
        assert_eq!(cluster.summary.fail, 1);
        assert_eq!(shop.kind, "PolicyReport");
        assert_eq!(shop.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(
            shop.summary,
            Summary {
                pass: 1,
                warn: 1,
                skip: 1,
                ..Summary::default()
            }
        );
        let warn = &shop.results[0];
        assert_eq!(
            (
                warn.policy.as_str(),
                warn.result.as_str(),
                warn.source.as_str()
            ),
            ("strict-mtls-required", "warn", "meshgate")
        );
        assert_eq!(warn.properties["fix"], "fix strict-mtls-required");
        assert_eq!(warn.resources[0].name, "web");
        assert_eq!(warn.resources[0].uid, "0000-web");
        assert_eq!(shop.results.last().map(|r| r.result.as_str()), Some("pass"));
        assert_eq!(
            shop.metadata.labels["app.kubernetes.io/managed-by"],
            "meshgate"
        );

        let open = super::reports(&verdicts, Flavor::OpenReports, NOW, Bounds::default());
        assert_eq!(open[1].api_version, "openreports.io/v1alpha1");
        assert_eq!(
            (open[0].kind.as_str(), open[1].kind.as_str()),
            ("ClusterReport", "Report")
        );
    }

    #[test]
    fn a_ten_thousand_pod_namespace_stays_far_below_the_etcd_limit() {
        let failing = [
            RuleId::SidecarRequired,
            RuleId::StrictMtlsRequired,
            RuleId::DefaultDenyRequired,
        ];
        let verdicts: Vec<ObjectVerdict> = (0..10_000)
            .map(|i| ObjectVerdict {
                reference: ObjectRef {
                    api_version: "v1".into(),
                    kind: Kind::Pod,
                    namespace: "big".into(),
                    name: format!("web-7d9c8b6f5-{i:05}"),
                    uid: format!("3f0c1d2e-0000-4000-8000-{i:012}"),
                },
                results: failing
                    .iter()
                    .map(|rule| result(*rule, Outcome::Fail))
                    .chain([
                        result(RuleId::NoHostNetwork, Outcome::Pass),
                        result(RuleId::DedicatedServiceAccount, Outcome::Pass),
                    ])
                    .collect(),
            })
            .collect();
        let reports = reports(&verdicts, Flavor::Wgpolicy, NOW, Bounds::default());
        let big = &reports[0];
        let size = serde_json::to_vec(big).unwrap().len();
        eprintln!("10,000-pod report: {size} bytes");
        assert!(size < 512 * 1024, "{size} bytes");
        assert_eq!(big.summary.fail, 30_000);
        assert_eq!(big.summary.pass, 20_000);
        // 500 detailed, the rest of the 3 rules aggregated, 2 pass rules.
        assert_eq!(big.results.len(), 500 + 3 + 2);
        let objects: u64 = big
            .results
            .iter()
            .filter(|r| r.result == "fail")
            .map(|r| {
                r.properties
                    .get("objects")
                    .map_or(1, |n| n.parse().unwrap())
            })
            .sum();
        assert_eq!(objects, 30_000);
    }

    #[test]
    fn same_verdicts_give_the_same_reports_whatever_their_order_and_time() {
        let verdicts: Vec<ObjectVerdict> = ["b", "a", "c"]
            .iter()
            .map(|name| ObjectVerdict {
                reference: object("shop", Kind::Deployment, name),
                results: vec![result(RuleId::SidecarRequired, Outcome::Fail)],
            })
            .collect();
        let first = reports(&verdicts, Flavor::Wgpolicy, NOW, Bounds::default());
        let reversed: Vec<_> = verdicts.iter().rev().cloned().collect();
        let later = Timestamp {
            seconds: NOW.seconds + 60,
            nanos: 0,
        };
        let second = reports(&reversed, Flavor::Wgpolicy, later, Bounds::default());
        assert_ne!(first, second);
        assert!(first[0].same_content(&second[0]));
        assert_eq!(first[0].results[0].resources[0].name, "a");
    }
}
