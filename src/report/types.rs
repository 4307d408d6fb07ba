//! The report objects, serialised as the API server stores them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MANAGED_BY_LABEL, SOURCE};

/// Which report API to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum Flavor {
    /// `wgpolicyk8s.io/v1alpha2` PolicyReport / ClusterPolicyReport.
    #[default]
    Wgpolicy,
    /// `openreports.io/v1alpha1` Report / ClusterReport.
    OpenReports,
}

impl Flavor {
    pub fn group(self) -> &'static str {
        match self {
            Flavor::Wgpolicy => "wgpolicyk8s.io",
            Flavor::OpenReports => "openreports.io",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            Flavor::Wgpolicy => "v1alpha2",
            Flavor::OpenReports => "v1alpha1",
        }
    }

    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.version())
    }

    /// The kind, and its plural, for namespaced or cluster-scoped reports.
    pub fn kind(self, cluster_scoped: bool) -> (&'static str, &'static str) {
        match (self, cluster_scoped) {
            (Flavor::Wgpolicy, false) => ("PolicyReport", "policyreports"),
            (Flavor::Wgpolicy, true) => ("ClusterPolicyReport", "clusterpolicyreports"),
            (Flavor::OpenReports, false) => ("Report", "reports"),
            (Flavor::OpenReports, true) => ("ClusterReport", "clusterreports"),
        }
    }
}

/// A PolicyReport, ClusterPolicyReport, Report or ClusterReport about one
/// object (`scope`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    /// The object the report is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ResourceRef>,
    pub summary: Summary,
    #[serde(default)]
    pub results: Vec<ReportResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

/// A `metav1.OwnerReference`. meshgate's are never `controller` and never
/// `blockOwnerDeletion` (Kyverno leaves both unset, which means false): the
/// report must not hold up or claim its object, only go with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default)]
    pub controller: bool,
    #[serde(default)]
    pub block_owner_deletion: bool,
}

/// Counts of the report's results by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(default)]
    pub pass: u64,
    #[serde(default)]
    pub fail: u64,
    #[serde(default)]
    pub warn: u64,
    #[serde(default)]
    pub error: u64,
    #[serde(default)]
    pub skip: u64,
}

/// One entry of `results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportResult {
    pub source: String,
    /// The rule id.
    pub policy: String,
    pub rule: String,
    /// `pass`, `fail`, `warn`, `error` or `skip`.
    pub result: String,
    pub severity: String,
    pub category: String,
    pub scored: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceRef>,
    pub timestamp: Timestamp,
}

/// A `corev1.ObjectReference`, as the report CRDs declare `resources[]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// `metav1.Timestamp`, as the CRDs declare it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: i32,
}

impl Report {
    /// An empty report: `namespace` `None` makes it cluster-scoped.
    pub fn empty(flavor: Flavor, namespace: Option<&str>, name: &str) -> Report {
        let (kind, _) = flavor.kind(namespace.is_none());
        Report {
            api_version: flavor.api_version(),
            kind: kind.to_owned(),
            metadata: Metadata {
                name: name.to_owned(),
                namespace: namespace.map(str::to_owned),
                labels: BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), SOURCE.to_owned())]),
                owner_references: Vec::new(),
            },
            scope: None,
            summary: Summary::default(),
            results: Vec::new(),
        }
    }

    /// The content without timestamps: what decides whether a stored report
    /// needs an update (a re-judge that changes nothing writes nothing).
    pub fn same_content(&self, other: &Report) -> bool {
        self.untimed() == other.untimed()
    }

    /// A hash of [`Self::same_content`]'s content, so the writer can
    /// remember what it wrote without holding every report. Stable within
    /// one process only.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        // Plain data: serialising it cannot fail.
        serde_json::to_vec(&self.untimed())
            .unwrap_or_default()
            .hash(&mut hasher);
        hasher.finish()
    }

    fn untimed(&self) -> Untimed<'_> {
        let mut results = self.results.clone();
        for result in &mut results {
            result.timestamp = Timestamp::default();
        }
        Untimed {
            labels: &self.metadata.labels,
            owner_references: &self.metadata.owner_references,
            scope: self.scope.as_ref(),
            summary: self.summary,
            results,
        }
    }
}

#[derive(PartialEq, Serialize)]
struct Untimed<'a> {
    labels: &'a BTreeMap<String, String>,
    owner_references: &'a [OwnerReference],
    scope: Option<&'a ResourceRef>,
    summary: Summary,
    results: Vec<ReportResult>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::background::ObjectRef;
    use crate::report::{build, ObjectVerdict, Outcome, RuleResult};
    use crate::rules::RuleId;
    use crate::subject::Kind;

    fn built(seconds: i64, outcome: Outcome) -> Report {
        let verdict = ObjectVerdict {
            reference: ObjectRef {
                api_version: "v1".into(),
                kind: Kind::Pod,
                namespace: "shop".into(),
                name: "web".into(),
                uid: "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5".into(),
            },
            results: vec![RuleResult {
                rule: RuleId::SidecarRequired,
                outcome,
                message: String::new(),
                fix: String::new(),
                exemption: None,
            }],
        };
        build::report(&verdict, Flavor::Wgpolicy, Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn a_stored_report_read_back_has_the_fingerprint_of_the_one_written() {
        let report = built(100, Outcome::Pass);
        // What the API server returns: the same content plus its own fields.
        let mut stored = serde_json::to_value(&report).unwrap();
        let metadata = &mut stored["metadata"];
        metadata["uid"] = "5e6f7081-92a3-4b4c-8d5e-6f708192a3b4".into();
        metadata["resourceVersion"] = "4711".into();
        metadata["creationTimestamp"] = "2026-12-07T14:00:00Z".into();
        metadata["managedFields"] = serde_json::json!([{"manager": "meshgate"}]);
        let read: Report = serde_json::from_value(stored).unwrap();
        assert_eq!(read.fingerprint(), report.fingerprint());

        // Only the time differs: the same; an outcome differs: not.
        assert_eq!(
            built(200, Outcome::Pass).fingerprint(),
            report.fingerprint()
        );
        assert!(built(200, Outcome::Pass).same_content(&report));
        assert_ne!(
            built(100, Outcome::Fail).fingerprint(),
            report.fingerprint()
        );
        assert!(!built(100, Outcome::Fail).same_content(&report));
    }
}
