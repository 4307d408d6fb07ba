//! What `meshgate audit` reports.

use crate::config::Mode;
use crate::manifest;
use crate::posture::{Enrollment, NamespaceInfo};
use crate::rules::RuleId;

/// One finding on one object, with where the object came from.
#[derive(Debug, Clone)]
pub struct Reported {
    pub rule: RuleId,
    pub mode: Mode,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub message: String,
    pub fix: String,
    pub file: String,
    pub document: usize,
    pub line: usize,
}

/// How a namespace of the input is in the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Sidecar,
    Ambient,
    No,
    /// The namespace is not in the input.
    Unknown,
}

impl Membership {
    pub(super) fn of(namespace: Option<&NamespaceInfo>) -> Self {
        match namespace {
            None => Membership::Unknown,
            Some(ns) if ns.sidecar_enrollment() == Enrollment::Sidecar => Membership::Sidecar,
            Some(ns) if ns.is_enrolled() => Membership::Ambient,
            Some(_) => Membership::No,
        }
    }

    pub fn is_enrolled(self) -> bool {
        matches!(self, Membership::Sidecar | Membership::Ambient)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Membership::Sidecar => "sidecar",
            Membership::Ambient => "ambient",
            Membership::No => "no",
            Membership::Unknown => "unknown",
        }
    }
}

/// The mesh posture of one namespace, as the input describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePosture {
    pub name: String,
    pub enrolled: Membership,
    pub mtls: crate::posture::mtls::Decided,
    pub deny_by_default: Option<String>,
}

impl NamespacePosture {
    pub fn is_weak(&self) -> bool {
        !self.enrolled.is_enrolled()
            || self.mtls.mode != crate::istio::MtlsMode::Strict
            || self.deny_by_default.is_none()
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Reported>,
    pub objects_checked: usize,
    pub exempted: usize,
    pub namespaces: Vec<NamespacePosture>,
    /// Every judged object's per-rule results, for PolicyReports.
    pub verdicts: Vec<crate::report::ObjectVerdict>,
    /// Inputs skipped while reading directories, shown on stderr.
    pub skipped: Vec<manifest::Note>,
}

impl Report {
    pub fn count(&self, mode: Mode) -> usize {
        self.findings.iter().filter(|f| f.mode == mode).count()
    }
}
