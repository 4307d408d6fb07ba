//! MeshExemptions and ClusterMeshExemptions in the posture index: each kind
//! is one more sink of the shared watches ([`crate::watch`]). Unlike an
//! Istio CRD, a missing exemption CRD is not a posture problem: it means
//! "no exemption objects" (the judging is only stricter), so the index does
//! not report it as missing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::reflector::Indexed;
use super::{Availability, PostureIndex, Store};
use crate::exemption::{ClusterMeshExemption, ExemptionIndex, MeshExemption};
use crate::kinds::{Kind, TableKind};

impl Indexed for MeshExemption {
    fn kind() -> Kind {
        <Self as TableKind>::KIND
    }
    fn apply(index: &mut PostureIndex, object: Self) {
        Store::apply(&mut index.exemptions, object);
    }
    fn delete(index: &mut PostureIndex, meta: &ObjectMeta) {
        if let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) {
            Store::<Self>::delete(&mut index.exemptions, ns, name);
        }
    }
    fn replace(index: &mut PostureIndex, all: Vec<Self>) {
        index.exemptions.replace_from(&mut all.into_iter());
    }
    fn when_missing() -> Availability {
        Availability::Present
    }
}

impl Indexed for ClusterMeshExemption {
    fn kind() -> Kind {
        <Self as TableKind>::KIND
    }
    fn apply(index: &mut PostureIndex, object: Self) {
        Store::apply(&mut index.exemptions, object);
    }
    // Cluster-scoped: no namespace.
    fn delete(index: &mut PostureIndex, meta: &ObjectMeta) {
        if let Some(name) = meta.name.as_deref() {
            Store::<Self>::delete(&mut index.exemptions, "", name);
        }
    }
    fn replace(index: &mut PostureIndex, all: Vec<Self>) {
        index.exemptions.replace_from(&mut all.into_iter());
    }
    fn when_missing() -> Availability {
        Availability::Present
    }
}

impl Store<MeshExemption> for ExemptionIndex {
    fn apply(&mut self, object: MeshExemption) {
        self.apply_namespaced(&object)
    }
    fn delete(&mut self, namespace: &str, name: &str) {
        self.delete_namespaced(namespace, name)
    }
    fn replace_from(&mut self, objects: &mut dyn Iterator<Item = MeshExemption>) {
        self.replace_namespaced(objects)
    }
}

impl Store<ClusterMeshExemption> for ExemptionIndex {
    fn apply(&mut self, object: ClusterMeshExemption) {
        self.apply_cluster(&object)
    }
    /// Cluster-scoped: the namespace is empty.
    fn delete(&mut self, _namespace: &str, name: &str) {
        self.delete_cluster(name)
    }
    fn replace_from(&mut self, objects: &mut dyn Iterator<Item = ClusterMeshExemption>) {
        self.replace_cluster(objects)
    }
}
