//! MeshExemptions and ClusterMeshExemptions in the posture index: each kind
//! is one more sink of the shared watches ([`crate::watch`]). Unlike an
//! Istio CRD, a missing exemption CRD is not a posture problem: it means
//! "no exemption objects" (the judging is only stricter), so the index does
//! not report it as missing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::types::{ClusterMeshExemption, MeshExemption};
use crate::kinds::{Kind, TableKind};
use crate::posture::reflector::Indexed;
use crate::posture::{Availability, PostureIndex, Store};

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
