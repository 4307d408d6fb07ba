//! Which exemption lifts a finding, at a given instant: the one code path
//! the webhook, the background audit and `meshgate audit` share (through
//! `policy::judge`). Config-file exemptions are looked at first, then the
//! object's namespace's MeshExemptions, then ClusterMeshExemptions; each
//! applies only while `now < expires`.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::jiff::Timestamp;
use kube::core::{Selector, SelectorExt};

use super::types::{ClusterMeshExemption, ExemptionSpec, MeshExemption};
use super::BASELINE_GUARDS;
use crate::subject::Object;
use crate::vocab::RuleId;

/// Where an exemption comes from, as PolicyReport properties name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Config(usize),
    Namespaced { namespace: String, name: String },
    Cluster { name: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Config(i) => write!(f, "config:exemptions[{i}]"),
            Source::Namespaced { namespace, name } => {
                write!(f, "MeshExemption/{namespace}/{name}")
            }
            Source::Cluster { name } => write!(f, "ClusterMeshExemption/{name}"),
        }
    }
}

/// Which namespaces an exemption object reaches.
#[derive(Debug, Clone)]
pub enum Scope {
    /// A MeshExemption: its own namespace only.
    Namespace(String),
    /// A ClusterMeshExemption: namespaces whose labels match (`None`: all).
    Cluster(Option<Selector>),
}

/// An exemption object, checked and parsed once when it is indexed.
#[derive(Debug, Clone)]
pub struct ExemptionObject {
    pub source: Source,
    pub scope: Scope,
    pub rules: Vec<RuleId>,
    pub names: Vec<String>,
    pub selector: Option<Selector>,
    pub reason: String,
    pub expires: Timestamp,
    pub generation: Option<i64>,
    /// When the webhook last lifted a finding with it (Unix seconds, 0:
    /// never), for `status.lastApplied`; kept across updates of the object.
    pub last_applied: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl ExemptionObject {
    pub fn from_namespaced(e: &MeshExemption) -> Result<Self, String> {
        let namespace = e.metadata.namespace.clone().unwrap_or_default();
        let name = e.metadata.name.clone().unwrap_or_default();
        let source = Source::Namespaced {
            namespace: namespace.clone(),
            name,
        };
        compile(
            source,
            Scope::Namespace(namespace),
            &e.spec,
            e.metadata.generation,
        )
    }

    pub fn from_cluster(e: &ClusterMeshExemption) -> Result<Self, String> {
        let source = Source::Cluster {
            name: e.metadata.name.clone().unwrap_or_default(),
        };
        let namespaces = e
            .spec
            .namespace_selector
            .clone()
            .map(crate::config::exemption::parse_selector)
            .transpose()
            .map_err(|p| format!("spec.namespaceSelector: {p}"))?;
        compile(
            source,
            Scope::Cluster(namespaces),
            &e.spec,
            e.metadata.generation,
        )
    }

    /// It applies strictly before its `expires` instant.
    pub fn is_active(&self, now: Timestamp) -> bool {
        now < self.expires
    }

    /// Whether it lifts `rule` for `object`, whose namespace has the labels
    /// `namespace_labels` (`None`: the namespace is unknown).
    pub fn covers(
        &self,
        rule: RuleId,
        object: &Object,
        namespace_labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        let in_scope = match &self.scope {
            Scope::Namespace(ns) => ns == object.namespace(),
            Scope::Cluster(None) => true,
            Scope::Cluster(Some(selector)) => {
                selector.matches(namespace_labels.unwrap_or(&BTreeMap::new()))
            }
        };
        in_scope
            && self.rules.contains(&rule)
            && (self.names.is_empty() || self.names.iter().any(|n| name_matches(n, object.name())))
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(object.selector_labels()))
    }
}

/// Checks what the CRD's schema and CEL check too, so an object read from a
/// file (`meshgate audit`) or a cluster without the CEL rules never lifts
/// more than the API would have let it.
fn compile(
    source: Source,
    scope: Scope,
    spec: &ExemptionSpec,
    generation: Option<i64>,
) -> Result<ExemptionObject, String> {
    let expires = spec.expires.as_ref().ok_or("spec.expires is required")?.0;
    if spec.reason.trim().chars().count() < 20 {
        return Err("spec.reason must say why, in at least 20 characters".into());
    }
    let mut rules = Vec::new();
    for (i, id) in spec.rules.iter().enumerate() {
        let rule: RuleId = id
            .parse()
            .map_err(|_| format!("spec.rules[{i}]: unknown rule `{id}`"))?;
        if matches!(scope, Scope::Namespace(_)) && BASELINE_GUARDS.contains(&rule) {
            return Err(format!(
                "spec.rules[{i}]: `{id}` guards the mesh-root baseline; only a ClusterMeshExemption may lift it"
            ));
        }
        rules.push(rule);
    }
    if rules.is_empty() {
        return Err("spec.rules must list at least one rule".into());
    }
    let m = &spec.object_match;
    if m.names.is_empty() && m.selector.is_none() {
        return Err("spec.match needs names or a selector".into());
    }
    if m.names.iter().any(|n| n.is_empty() || n == "*") {
        return Err("spec.match.names: a name may not be empty or a bare `*`".into());
    }
    let selector = m
        .selector
        .clone()
        .map(crate::config::exemption::parse_selector)
        .transpose()
        .map_err(|p| format!("spec.match.selector: {p}"))?;
    Ok(ExemptionObject {
        source,
        scope,
        rules,
        names: m.names.clone(),
        selector,
        reason: spec.reason.trim().to_owned(),
        expires,
        generation,
        last_applied: Default::default(),
    })
}

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
#[path = "matching_tests.rs"]
mod tests;
