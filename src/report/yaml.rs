//! `meshgate audit --output policyreport|openreports`: the reports as multi-document
//! YAML a user can `kubectl apply`.

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
    let reports = build::reports(verdicts, flavor, writer::now());
    let mut text = String::new();
    for report in reports {
        text.push_str("---\n");
        // Plain data: serialising it cannot fail.
        text.push_str(&serde_yaml_ng::to_string(&report).unwrap_or_default());
    }
    text
}
