//! The posture index: the cluster state the rules read, indexed for the
//! questions they ask. One type, two feeders: kube-runtime watchers in `serve`
//! (`reflector`), manifest files in `serve --state-from` and `meshgate audit`
//! (`files`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Namespace;

pub mod files;
pub mod reflector;
pub mod watched;

/// Namespace labels that put a namespace in (or out of) the mesh.
pub mod labels {
    pub const ISTIO_INJECTION: &str = "istio-injection";
    pub const ISTIO_REV: &str = "istio.io/rev";
    pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
}

/// How a namespace takes part in the mesh, per Istio's injector selectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrollment {
    /// `istio-injection=enabled`, or `istio.io/rev=<rev>` without `istio-injection`.
    Sidecar,
    /// `istio-injection=disabled`: nothing is injected, whatever the pods say.
    Disabled,
    /// Neither label: only pods that select themselves get a sidecar.
    None,
    /// `istio-injection` with a value the injector does not select on.
    Unrecognised(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub labels: BTreeMap<String, String>,
}

impl NamespaceInfo {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// `istio-injection` takes precedence over `istio.io/rev`: Istio's revision
    /// webhook only selects namespaces without `istio-injection`.
    pub fn sidecar_enrollment(&self) -> Enrollment {
        match self.label(labels::ISTIO_INJECTION) {
            Some("enabled") => Enrollment::Sidecar,
            Some("disabled") => Enrollment::Disabled,
            Some(other) => Enrollment::Unrecognised(other.to_owned()),
            None if self.label(labels::ISTIO_REV).is_some() => Enrollment::Sidecar,
            None => Enrollment::None,
        }
    }

    pub fn is_ambient(&self) -> bool {
        self.label(labels::DATAPLANE_MODE) == Some("ambient")
    }
}

/// The index. Reads are lock-free of I/O; writers replace whole entries.
#[derive(Debug, Default, Clone)]
pub struct PostureIndex {
    namespaces: HashMap<String, NamespaceInfo>,
}

impl PostureIndex {
    pub fn namespace(&self, name: &str) -> Option<&NamespaceInfo> {
        self.namespaces.get(name)
    }

    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    pub fn apply_namespace(&mut self, ns: &Namespace) {
        if let Some(name) = ns.metadata.name.clone() {
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            self.namespaces.insert(name, NamespaceInfo { labels });
        }
    }

    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Replaces every namespace at once: a watcher re-list is a full reset, or
    /// namespaces deleted while the watch was down would linger.
    pub fn replace_namespaces<'a>(&mut self, all: impl IntoIterator<Item = &'a Namespace>) {
        self.namespaces.clear();
        for ns in all {
            self.apply_namespace(ns);
        }
    }
}

/// The index as the server shares it between the watchers and the handlers.
pub type SharedPosture = Arc<RwLock<PostureIndex>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> NamespaceInfo {
        NamespaceInfo {
            labels: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn istio_injection_takes_precedence_over_revision() {
        assert_eq!(
            info(&[("istio-injection", "disabled"), ("istio.io/rev", "canary")])
                .sidecar_enrollment(),
            Enrollment::Disabled
        );
        assert_eq!(
            info(&[("istio.io/rev", "canary")]).sidecar_enrollment(),
            Enrollment::Sidecar
        );
        assert_eq!(
            info(&[("istio-injection", "enabled")]).sidecar_enrollment(),
            Enrollment::Sidecar
        );
        assert_eq!(
            info(&[("istio-injection", "true"), ("istio.io/rev", "x")]).sidecar_enrollment(),
            Enrollment::Unrecognised("true".into())
        );
        assert_eq!(info(&[]).sidecar_enrollment(), Enrollment::None);
    }

    #[test]
    fn relist_removes_namespaces_that_disappeared() {
        let ns = |name: &str| Namespace {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut index = PostureIndex::default();
        index.apply_namespace(&ns("old"));
        index.replace_namespaces(&[ns("new")]);
        assert!(index.namespace("old").is_none());
        assert!(index.namespace("new").is_some());
    }
}
