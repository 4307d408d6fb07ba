//! The posture index: the cluster state the rules read, indexed by namespace
//! so every question costs the same whatever the cluster's size. One type,
//! two feeders: the shared watches in `serve` (`reflector`), manifest files
//! in `serve --state-from` and `meshgate audit` (`files`).

use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::istio::{
    AuthorizationPolicy, DestinationRule, PeerAuthentication, ServiceEntry, Sidecar,
    StoredAuthorizationPolicy,
};

pub mod authz;
pub mod confirm;
pub mod exemption_metrics;
mod exemptions;
pub mod files;
pub mod mtls;
pub mod reflector;
pub mod watched;

pub use authz::AuthzIndex;
pub use mtls::{EffectiveMtls, PolicyRef};

pub use crate::istio::names::labels;
pub use crate::istio::{Enrollment, NamespaceInfo};

/// Whether an Istio API group is served by the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Availability {
    /// Served (or the state came from files, which cannot tell).
    #[default]
    Present,
    /// The API server answered 404: the CRDs are not installed.
    Missing,
}

/// Objects of one kind, by namespace then name.
#[derive(Debug, Clone)]
pub struct ByNamespace<T> {
    by_namespace: HashMap<String, BTreeMap<String, Arc<T>>>,
    len: usize,
}

impl<T> Default for ByNamespace<T> {
    fn default() -> Self {
        ByNamespace {
            by_namespace: HashMap::new(),
            len: 0,
        }
    }
}

impl<T: Resource> ByNamespace<T> {
    pub fn in_namespace(&self, namespace: &str) -> impl Iterator<Item = &T> + '_ {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flat_map(|m| m.values().map(Arc::as_ref))
    }

    pub fn all(&self) -> impl Iterator<Item = &T> + '_ {
        self.by_namespace
            .values()
            .flat_map(|m| m.values().map(Arc::as_ref))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn apply(&mut self, mut object: T) {
        slim(object.meta_mut());
        let meta = object.meta();
        let (Some(ns), Some(name)) = (meta.namespace.clone(), meta.name.clone()) else {
            return;
        };
        if self
            .by_namespace
            .entry(ns)
            .or_default()
            .insert(name, Arc::new(object))
            .is_none()
        {
            self.len += 1;
        }
    }

    pub fn delete(&mut self, namespace: &str, name: &str) {
        if let Some(objects) = self.by_namespace.get_mut(namespace) {
            if objects.remove(name).is_some() {
                self.len -= 1;
            }
            if objects.is_empty() {
                self.by_namespace.remove(namespace);
            }
        }
    }

    /// A re-list: the new content replaces everything.
    pub fn replace(&mut self, objects: impl IntoIterator<Item = T>) {
        *self = Self::default();
        for object in objects {
            self.apply(object);
        }
    }
}

/// Where a watcher or feeder puts objects of one kind.
pub trait Store<T> {
    fn apply(&mut self, object: T);
    fn delete(&mut self, namespace: &str, name: &str);
    /// A re-list: the new content replaces everything.
    fn replace_from(&mut self, objects: &mut dyn Iterator<Item = T>);
}

impl<T: Resource> Store<T> for ByNamespace<T> {
    fn apply(&mut self, object: T) {
        ByNamespace::apply(self, object)
    }
    fn delete(&mut self, namespace: &str, name: &str) {
        ByNamespace::delete(self, namespace, name)
    }
    fn replace_from(&mut self, objects: &mut dyn Iterator<Item = T>) {
        self.replace(objects)
    }
}

impl Store<AuthorizationPolicy> for AuthzIndex {
    fn apply(&mut self, object: AuthorizationPolicy) {
        AuthzIndex::apply(self, object)
    }
    fn delete(&mut self, namespace: &str, name: &str) {
        AuthzIndex::delete(self, namespace, name)
    }
    fn replace_from(&mut self, objects: &mut dyn Iterator<Item = AuthorizationPolicy>) {
        self.replace(objects)
    }
}

/// Only name, namespace and creation time matter to the rules; dropping the
/// rest (managedFields, last-applied annotations) keeps a large cluster's
/// index small.
fn slim(meta: &mut ObjectMeta) {
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        creation_timestamp: meta.creation_timestamp.take(),
        ..ObjectMeta::default()
    };
}

/// The index. Reads never do I/O; writers replace whole entries.
#[derive(Debug, Clone, Default)]
pub struct PostureIndex {
    namespaces: HashMap<String, NamespaceInfo>,
    pub peer_authentications: ByNamespace<PeerAuthentication>,
    /// Slim, with the summaries the root-namespace reviews read; namespace
    /// changes go through `PostureIndex` so it knows which are enrolled.
    pub authorization_policies: AuthzIndex,
    pub destination_rules: ByNamespace<DestinationRule>,
    pub sidecars: ByNamespace<Sidecar>,
    /// Read by `destination-rule-mtls`: MESH_INTERNAL hosts are in the mesh.
    pub service_entries: ByNamespace<ServiceEntry>,
    /// `security.istio.io` (PeerAuthentication, AuthorizationPolicy).
    pub security_api: Availability,
    /// MeshExemption and ClusterMeshExemption objects.
    pub exemptions: crate::exemption::ExemptionIndex,
}

impl PostureIndex {
    pub fn namespace(&self, name: &str) -> Option<&NamespaceInfo> {
        self.namespaces.get(name)
    }

    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&str, &NamespaceInfo)> + '_ {
        self.namespaces.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn apply_namespace(&mut self, ns: &Namespace) {
        if let Some(name) = ns.metadata.name.clone() {
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            self.set_namespace(name, NamespaceInfo { labels });
        }
    }

    /// Every namespace write goes here: the AuthorizationPolicy summaries
    /// track which namespaces are enrolled.
    pub(crate) fn set_namespace(&mut self, name: String, info: NamespaceInfo) {
        self.authorization_policies
            .set_enrolled(&name, info.is_enrolled());
        self.namespaces.insert(name, info);
    }

    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
        self.authorization_policies.set_enrolled(name, false);
    }

    /// Replaces every namespace at once: a watcher re-list is a full reset, or
    /// namespaces deleted while the watch was down would linger.
    pub fn replace_namespaces<'a>(&mut self, all: impl IntoIterator<Item = &'a Namespace>) {
        self.namespaces.clear();
        self.authorization_policies.clear_enrolled();
        for ns in all {
            self.apply_namespace(ns);
        }
    }

    /// The effective mTLS mode for a workload with `labels` in `namespace`
    /// (or for the namespace as a whole when `labels` is `None`).
    pub fn effective_mtls(
        &self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
        root: &str,
    ) -> EffectiveMtls {
        mtls::compose(
            self.peer_authentications.in_namespace(root),
            self.peer_authentications.in_namespace(namespace),
            labels,
        )
    }

    /// The policy that makes `namespace` deny-by-default: one in the namespace
    /// itself, else one in the root namespace (which applies mesh-wide).
    pub fn deny_by_default(&self, namespace: &str, root: &str) -> Option<PolicyRef> {
        find_deny_by_default(self.authorization_policies.in_namespace(namespace))
            .or_else(|| find_deny_by_default(self.authorization_policies.in_namespace(root)))
            .map(|p| PolicyRef {
                kind: "AuthorizationPolicy",
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            })
    }
}

/// The oldest namespace-wide deny-by-default policy among `policies`.
pub fn find_deny_by_default<'a>(
    policies: impl Iterator<Item = &'a StoredAuthorizationPolicy>,
) -> Option<&'a StoredAuthorizationPolicy> {
    policies
        .filter(|p| p.is_deny_by_default())
        .reduce(|a, b| if b.is_older_than(a) { b } else { a })
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
        assert!(info(&[("istio.io/dataplane-mode", "ambient")]).is_enrolled());
        assert!(!info(&[]).is_enrolled());
    }

    #[test]
    fn relist_removes_namespaces_that_disappeared() {
        let ns = |name: &str| Namespace {
            metadata: ObjectMeta {
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

    fn ap(ns: &str, name: &str, spec: serde_json::Value) -> AuthorizationPolicy {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn objects_are_slimmed_counted_and_deleted() {
        let mut by_ns = ByNamespace::default();
        by_ns.apply(ap("shop", "a", serde_json::json!({})));
        by_ns.apply(ap("shop", "a", serde_json::json!({})));
        by_ns.apply(ap("shop", "b", serde_json::json!({})));
        assert_eq!(by_ns.len(), 2);
        assert!(by_ns
            .in_namespace("shop")
            .all(|p| p.metadata.managed_fields.is_none()));
        by_ns.delete("shop", "a");
        by_ns.delete("shop", "zzz");
        assert_eq!(by_ns.len(), 1);
        by_ns.replace(vec![ap("other", "c", serde_json::json!({}))]);
        assert_eq!(by_ns.in_namespace("shop").count(), 0);
        assert_eq!(by_ns.len(), 1);
    }

    #[test]
    fn deny_by_default_in_namespace_or_root_only_without_selector() {
        let mut index = PostureIndex::default();
        index.authorization_policies.apply(ap(
            "shop",
            "scoped",
            serde_json::json!({"selector": {"matchLabels": {"app": "x"}}}),
        ));
        assert_eq!(index.deny_by_default("shop", "istio-system"), None);
        index
            .authorization_policies
            .apply(ap("istio-system", "mesh-deny", serde_json::json!({})));
        assert_eq!(
            index
                .deny_by_default("shop", "istio-system")
                .unwrap()
                .to_string(),
            "AuthorizationPolicy istio-system/mesh-deny"
        );
        index.authorization_policies.apply(ap(
            "shop",
            "deny-all",
            serde_json::json!({"action": "DENY", "rules": [{}]}),
        ));
        assert_eq!(
            index
                .deny_by_default("shop", "istio-system")
                .unwrap()
                .to_string(),
            "AuthorizationPolicy shop/deny-all"
        );
    }
}
