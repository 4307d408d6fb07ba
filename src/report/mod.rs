//! PolicyReports: meshgate's verdicts in the shape Kyverno writes them and
//! Policy Reporter reads them.
//!
//! ```text
//! policy::Judgement ─▶ ObjectVerdict (per object, per rule: pass/fail/warn/skip)
//!                          │ build::reports (pure)
//!                          ▼
//!          one PolicyReport per object (ClusterPolicyReport per Namespace)
//!                          │ writer (leader only, writes only what changed)
//!                          ▼
//!                     API server
//! ```
//!
//! Two APIs carry the same content: `wgpolicyk8s.io/v1alpha2`
//! (`PolicyReport` / `ClusterPolicyReport`, what Kyverno writes by default)
//! and `openreports.io/v1alpha1` (`Report` / `ClusterReport`, its successor,
//! which Policy Reporter reads too). [`Flavor`] picks one.

pub mod build;
pub mod exemption_status;
pub mod serve;
pub mod types;
pub mod verdict;
pub mod writer;
pub mod yaml;

pub use build::reports;
pub use types::{Flavor, Report, ReportResult, Summary};
pub use verdict::{ObjectVerdict, Outcome, RuleResult};

/// `source` of every result, and the managed-by label value.
pub const SOURCE: &str = "meshgate";
/// Label on every report meshgate writes: how the writer finds its own.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Every report meshgate writes is named this followed by its object's uid.
pub const REPORT_NAME_PREFIX: &str = "meshgate-";
