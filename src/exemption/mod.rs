//! Issue 21: exemptions as Kubernetes objects (MeshExemption,
//! ClusterMeshExemption, group `meshgate.io`). Reasoned, time-boxed, and
//! honoured by the one judging path: `policy::judge` asks
//! [`crate::policy::exemption`] with the context's clock, so the webhook, the
//! background audit and `meshgate audit` agree at every instant.
//!
//! - [`types`]: the objects as read; [`matching`]: their selectors;
//! - [`ExemptionIndex`]: what the posture index holds of them.
//!
//! Elsewhere, above this module: the watchers and gauges in the posture
//! module, `/validate`'s expiry bound in admission, re-judging at expiry in
//! the background audit, the leader's status writer in report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use crate::vocab::RuleId;

pub use crate::config::{ExemptionObjects, DEFAULT_MAX_EXEMPTION_DURATION as DEFAULT_MAX_DURATION};

pub mod matching;
pub mod types;

pub use matching::{ExemptionObject, Source};
pub use types::{ClusterMeshExemption, MeshExemption};

/// Rules a namespaced MeshExemption may never lift: they guard the
/// mesh-root baseline every namespace relies on. The CRD's CEL rule refuses
/// them too; only a ClusterMeshExemption may list them.
pub const BASELINE_GUARDS: &[RuleId] = &[RuleId::BaselineProtected];

/// Namespaces whose exemption objects changed since the background audit
/// last looked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub all: bool,
    pub namespaces: BTreeSet<String>,
}

/// The exemption objects the posture index holds, parsed. Objects that do
/// not pass [`matching`]'s checks are logged and left out.
#[derive(Debug, Clone, Default)]
pub struct ExemptionIndex {
    namespaced: BTreeMap<String, BTreeMap<String, Arc<ExemptionObject>>>,
    cluster: BTreeMap<String, Arc<ExemptionObject>>,
    touched: Touched,
}

impl ExemptionIndex {
    /// The exemption objects that may apply in `namespace`: its own
    /// MeshExemptions, then every ClusterMeshExemption, by name.
    pub fn candidates(&self, namespace: &str) -> impl Iterator<Item = &ExemptionObject> + '_ {
        self.namespaced
            .get(namespace)
            .into_iter()
            .flat_map(|m| m.values())
            .chain(self.cluster.values())
            .map(Arc::as_ref)
    }

    pub fn all(&self) -> impl Iterator<Item = &ExemptionObject> + '_ {
        self.namespaced
            .values()
            .flat_map(|m| m.values())
            .chain(self.cluster.values())
            .map(Arc::as_ref)
    }

    /// The object a `Source` string names (`MeshExemption/<ns>/<name>`,
    /// `ClusterMeshExemption/<name>`).
    pub fn by_source(&self, source: &str) -> Option<&ExemptionObject> {
        let mut parts = source.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("MeshExemption"), Some(ns), Some(name)) => self
                .namespaced
                .get(ns)
                .and_then(|m| m.get(name))
                .map(Arc::as_ref),
            (Some("ClusterMeshExemption"), Some(name), None) => {
                self.cluster.get(name).map(Arc::as_ref)
            }
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.namespaced.values().map(BTreeMap::len).sum::<usize>() + self.cluster.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The earliest expiry after `now` among the exemptions still active.
    pub fn next_expiry(&self, now: Timestamp) -> Option<Timestamp> {
        self.all().map(|e| e.expires).filter(|at| now < *at).min()
    }

    /// What changed since the last call, cleared.
    pub fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }

    fn touch(&mut self, namespace: Option<&str>) {
        match namespace {
            Some(ns) => {
                self.touched.namespaces.insert(ns.to_owned());
            }
            None => self.touched.all = true,
        }
    }

    pub fn apply_namespaced(&mut self, e: &MeshExemption) {
        let (Some(ns), Some(name)) = (e.metadata.namespace.clone(), e.metadata.name.clone()) else {
            return;
        };
        let slot = self.namespaced.entry(ns.clone()).or_default();
        let old = slot.get(&name).cloned();
        let compiled = ExemptionObject::from_namespaced(e);
        if !same_spec(old.as_deref(), compiled.as_ref().ok()) {
            self.touch(Some(&ns));
        }
        let slot = self.namespaced.entry(ns.clone()).or_default();
        match compiled {
            Ok(mut compiled) => {
                carry_over(old.as_deref(), &mut compiled);
                slot.insert(name, Arc::new(compiled));
            }
            Err(problem) => {
                tracing::warn!(namespace = %ns, %name, %problem, "MeshExemption ignored");
                slot.remove(&name);
            }
        }
    }

    pub fn apply_cluster(&mut self, e: &ClusterMeshExemption) {
        let Some(name) = e.metadata.name.clone() else {
            return;
        };
        let old = self.cluster.get(&name).cloned();
        let compiled = ExemptionObject::from_cluster(e);
        if !same_spec(old.as_deref(), compiled.as_ref().ok()) {
            self.touch(None);
        }
        match compiled {
            Ok(mut compiled) => {
                carry_over(old.as_deref(), &mut compiled);
                self.cluster.insert(name, Arc::new(compiled));
            }
            Err(problem) => {
                tracing::warn!(%name, %problem, "ClusterMeshExemption ignored");
                self.cluster.remove(&name);
            }
        }
    }

    pub fn delete_namespaced(&mut self, namespace: &str, name: &str) {
        if let Some(objects) = self.namespaced.get_mut(namespace) {
            objects.remove(name);
            if objects.is_empty() {
                self.namespaced.remove(namespace);
            }
        }
        self.touch(Some(namespace));
    }

    pub fn delete_cluster(&mut self, name: &str) {
        self.cluster.remove(name);
        self.touch(None);
    }
}

/// A status write changes neither the spec nor the generation: nothing to
/// re-judge then (the watch sees meshgate's own status patches).
fn same_spec(old: Option<&ExemptionObject>, new: Option<&ExemptionObject>) -> bool {
    match (old, new) {
        (Some(old), Some(new)) => old.generation.is_some() && old.generation == new.generation,
        _ => false,
    }
}

impl ExemptionIndex {
    /// Replaces every MeshExemption (a watch's relist).
    pub fn replace_namespaced(&mut self, objects: impl IntoIterator<Item = MeshExemption>) {
        for ns in std::mem::take(&mut self.namespaced).into_keys() {
            self.touch(Some(&ns));
        }
        for object in objects {
            self.apply_namespaced(&object);
        }
    }

    /// Replaces every ClusterMeshExemption (a watch's relist).
    pub fn replace_cluster(&mut self, objects: impl IntoIterator<Item = ClusterMeshExemption>) {
        self.cluster.clear();
        self.touch(None);
        for object in objects {
            self.apply_cluster(&object);
        }
    }
}

fn carry_over(old: Option<&ExemptionObject>, new: &mut ExemptionObject) {
    if let Some(old) = old {
        new.last_applied = old.last_applied.clone();
    }
}
