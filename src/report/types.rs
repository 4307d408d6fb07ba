//! The report objects, serialised as the API server stores them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MANAGED_BY_LABEL, REPORT_NAME, SOURCE};

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

/// A PolicyReport, ClusterPolicyReport, Report or ClusterReport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub summary: Summary,
    #[serde(default)]
    pub results: Vec<ReportResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Counts of results by outcome, over every judged object and rule (also
/// those aggregated or cut from `results`, see [`super::build`]).
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
    pub fn empty(flavor: Flavor, namespace: Option<&str>) -> Report {
        let (kind, _) = flavor.kind(namespace.is_none());
        Report {
            api_version: flavor.api_version(),
            kind: kind.to_owned(),
            metadata: Metadata {
                name: REPORT_NAME.to_owned(),
                namespace: namespace.map(str::to_owned),
                labels: BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), SOURCE.to_owned())]),
            },
            summary: Summary::default(),
            results: Vec::new(),
        }
    }

    /// The content without timestamps: what decides whether a stored report
    /// needs an update (a re-judge that changes nothing writes nothing).
    pub fn same_content(&self, other: &Report) -> bool {
        let untimed = |r: &Report| {
            let mut r = r.clone();
            for result in &mut r.results {
                result.timestamp = Timestamp::default();
            }
            (r.summary, r.results, r.metadata.labels)
        };
        untimed(self) == untimed(other)
    }
}
