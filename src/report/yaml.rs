//! `meshgate audit --output policyreport|openreports`: the reports as multi-document
//! YAML a user can `kubectl apply`.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use crate::background::ObjectRef;
use crate::config::Config;
use crate::policy::Judgement;
use crate::subject::{Kind, Object};

use super::{build, writer, Flavor, ObjectVerdict};

/// The verdict of one object read from a manifest.
pub fn verdict(
    api_version: &str,
    uid: &str,
    object: &Object,
    judgement: &Judgement,
    config: &Config,
) -> ObjectVerdict {
    let kind = object.kind();
    let reference = ObjectRef {
        api_version: api_version.to_owned(),
        kind,
        // Namespaces are cluster-scoped: their reports are
        // ClusterPolicyReports.
        namespace: if kind == Kind::Namespace {
            String::new()
        } else {
            object.namespace().to_owned()
        },
        name: object.name().to_owned(),
        uid: uid.to_owned(),
    };
    ObjectVerdict::from_judgement(reference, judgement, config)
}

/// The reports of `flavor` for `verdicts`, as YAML documents.
pub fn policy_reports(verdicts: &[ObjectVerdict], flavor: Flavor) -> String {
    let reports = build::reports(&one_per_object(verdicts), flavor, writer::now());
    let mut text = String::new();
    for report in reports {
        text.push_str("---\n");
        // Plain data: serialising it cannot fail.
        text.push_str(&serde_yaml_ng::to_string(&report).unwrap_or_default());
    }
    text
}

/// Several manifests can hold the same object (a base and its overlay, a
/// Deployment before and after `istioctl kube-inject`): it gets one report,
/// with every manifest's results (per rule, the most severe).
fn one_per_object(verdicts: &[ObjectVerdict]) -> Vec<ObjectVerdict> {
    let mut by_report: BTreeMap<(String, String), ObjectVerdict> = BTreeMap::new();
    for verdict in verdicts {
        let key = (
            verdict.reference.namespace.clone(),
            build::report_name(&verdict.reference),
        );
        match by_report.entry(key) {
            Entry::Occupied(mut same) => same.get_mut().results.extend_from_slice(&verdict.results),
            Entry::Vacant(new) => {
                new.insert(verdict.clone());
            }
        }
    }
    by_report.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Outcome, RuleResult};
    use crate::rules::RuleId;

    #[test]
    fn one_object_in_two_manifests_makes_one_report_with_both_results() {
        let reference = ObjectRef {
            api_version: "apps/v1".into(),
            kind: Kind::Deployment,
            namespace: "shop".into(),
            name: "web".into(),
            uid: String::new(),
        };
        let verdict = |outcome| ObjectVerdict {
            reference: reference.clone(),
            results: vec![RuleResult {
                rule: RuleId::SidecarRequired,
                outcome,
                message: String::new(),
                fix: String::new(),
                exemption: None,
            }],
        };
        let yaml = policy_reports(
            &[verdict(Outcome::Pass), verdict(Outcome::Fail)],
            Flavor::Wgpolicy,
        );
        assert_eq!(yaml.matches("kind: PolicyReport").count(), 1, "{yaml}");
        assert!(yaml.contains("result: fail"), "{yaml}");
        assert!(!yaml.contains("result: pass"), "{yaml}");
    }
}
