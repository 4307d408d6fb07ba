//! The one table of the kinds meshgate knows: for each, its API group, served
//! versions, plural, scope, whether the posture index watches it, on which
//! operations `/validate` and `/mutate` judge it, and where a workload keeps
//! its pod spec. Kind parsing, the webhook rules (`admission::resources`),
//! the RBAC lists (`posture::watched`), the reflectors, the background
//! audit's watches, `audit --cluster`'s lists, the metric labels and the
//! `kube::Resource` impls of the Istio and cert-manager types all read it.
//!
//! Adding a kind is exactly: its row in [`TABLE`] and its [`Kind`]
//! variant (rows in the variants' order: checked when the crate compiles),
//! named in `typed_kinds!` with its type if it is decoded into a type of
//! its own (`crate::istio`, `crate::certmanager`), else in the plain list;
//! its resources in the chart's `files/resources.yaml`
//! (`tests/chart/drift.rs` fails until they match the table); and a feeder
//! in the posture module only if the posture index stores it. The webhook
//! rules, RBAC lists, watches, `subject::Object` and the test API server
//! follow from the table and the list.

use std::fmt;

use kube::api::ApiResource;
use kube::core::admission::Operation;
use strum::{EnumCount, IntoStaticStr, VariantArray};

mod row;
mod set;
pub use set::KindSet;

/// The kinds decoded into a type of their own (Istio, cert-manager), named
/// once: `typed_kinds!(m! { ... })` calls `m!` with what it was given and
/// then this list. It ends [`Kind`] below, and `subject` makes an `Object`
/// variant of each.
macro_rules! typed_kinds {
    ($then:ident! { $($before:tt)* }) => {
        $then! { $($before)*
            PeerAuthentication = crate::istio::PeerAuthentication,
            AuthorizationPolicy = crate::istio::AuthorizationPolicy,
            DestinationRule = crate::istio::DestinationRule,
            Sidecar = crate::istio::Sidecar,
            ServiceEntry = crate::istio::ServiceEntry,
            Certificate = crate::certmanager::Certificate,
        }
    };
}
pub(crate) use typed_kinds;

macro_rules! kind_enum {
    ($($plain:ident,)* ; $($typed:ident = $path:path,)*) => {
        /// The kinds meshgate knows: judged, watched, or both. The
        /// discriminant is the kind's row in [`TABLE`]; the variant's name
        /// is the kind's name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr, VariantArray, EnumCount)]
        pub enum Kind {
            $($plain,)*
            $($typed,)*
        }
    };
}

typed_kinds!(kind_enum! {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
    ReplicationController,
    Namespace,
    MeshExemption,
    ClusterMeshExemption,
    ;
});

/// One row of [`TABLE`].
#[derive(Debug)]
pub struct KindRow {
    pub kind: Kind,
    pub group: &'static str,
    /// Served versions, newest first; watches use the first one the cluster
    /// serves, RBAC and `kube::Resource` the first.
    pub versions: &'static [&'static str],
    pub plural: &'static str,
    /// How readiness, logs and metrics name the resource: `plural.group`, or
    /// the plural alone in the core group.
    pub resource: &'static str,
    pub namespaced: bool,
    /// Watched by the posture index (and granted get/list/watch for it).
    pub posture: bool,
    /// Operations `/validate` judges; empty for a kind only watched.
    pub judged_on: &'static [Operation],
    /// Operations `/mutate` judges.
    pub mutated_on: &'static [Operation],
    /// Subresources `/validate` judges too.
    pub subresources: &'static [&'static str],
    /// Where a workload keeps the pod spec its pods get; `None` for kinds
    /// that are not workloads.
    pub pod_spec: Option<&'static [&'static str]>,
}

const V1: &[&str] = &["v1"];
const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];
const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const CREATE_UPDATE: &[Operation] = &[Operation::Create, Operation::Update];
/// DELETE too: deleting a baseline policy can re-open a namespace.
const CREATE_UPDATE_DELETE: &[Operation] =
    &[Operation::Create, Operation::Update, Operation::Delete];
const TEMPLATE_SPEC: &[&str] = &["spec", "template", "spec"];

/// A workload: judged on CREATE and UPDATE, not watched by the index.
const fn workload(
    kind: Kind,
    group: &'static str,
    (plural, resource): (&'static str, &'static str),
    pod_spec: &'static [&'static str],
) -> KindRow {
    KindRow {
        kind,
        group,
        versions: V1,
        plural,
        resource,
        namespaced: true,
        posture: false,
        judged_on: CREATE_UPDATE,
        mutated_on: &[],
        subresources: &[],
        pod_spec: Some(pod_spec),
    }
}

/// An Istio or cert-manager kind: namespaced, not a workload.
const fn policy(
    kind: Kind,
    (group, versions): (&'static str, &'static [&'static str]),
    (plural, resource): (&'static str, &'static str),
    posture: bool,
    judged_on: &'static [Operation],
) -> KindRow {
    KindRow {
        kind,
        group,
        versions,
        plural,
        resource,
        namespaced: true,
        posture,
        judged_on,
        mutated_on: &[],
        subresources: &[],
        pod_spec: None,
    }
}

const SECURITY: (&str, &[&str]) = ("security.istio.io", SECURITY_VERSIONS);
const NETWORKING: (&str, &[&str]) = ("networking.istio.io", NETWORKING_VERSIONS);
const EXEMPTIONS: (&str, &[&str]) = ("meshgate.io", &["v1alpha1"]);

/// Every kind, in the order of [`Kind`]'s discriminants.
pub const TABLE: &[KindRow] = &[
    KindRow {
        mutated_on: &[Operation::Create],
        subresources: &["ephemeralcontainers"],
        ..workload(Kind::Pod, "", ("pods", "pods"), &["spec"])
    },
    workload(
        Kind::Deployment,
        "apps",
        ("deployments", "deployments.apps"),
        TEMPLATE_SPEC,
    ),
    workload(
        Kind::StatefulSet,
        "apps",
        ("statefulsets", "statefulsets.apps"),
        TEMPLATE_SPEC,
    ),
    workload(
        Kind::DaemonSet,
        "apps",
        ("daemonsets", "daemonsets.apps"),
        TEMPLATE_SPEC,
    ),
    workload(
        Kind::ReplicaSet,
        "apps",
        ("replicasets", "replicasets.apps"),
        TEMPLATE_SPEC,
    ),
    workload(Kind::Job, "batch", ("jobs", "jobs.batch"), TEMPLATE_SPEC),
    workload(
        Kind::CronJob,
        "batch",
        ("cronjobs", "cronjobs.batch"),
        &["spec", "jobTemplate", "spec", "template", "spec"],
    ),
    workload(
        Kind::ReplicationController,
        "",
        ("replicationcontrollers", "replicationcontrollers"),
        TEMPLATE_SPEC,
    ),
    KindRow {
        kind: Kind::Namespace,
        group: "",
        versions: V1,
        plural: "namespaces",
        resource: "namespaces",
        namespaced: false,
        posture: true,
        judged_on: CREATE_UPDATE,
        mutated_on: &[],
        subresources: &[],
        pod_spec: None,
    },
    // meshgate's exemption objects: watched into the posture index;
    // /validate checks their expiry bound and logs who changed them, no
    // rule judges them (`Kind::is_exemption`).
    policy(
        Kind::MeshExemption,
        EXEMPTIONS,
        ("meshexemptions", "meshexemptions.meshgate.io"),
        true,
        CREATE_UPDATE_DELETE,
    ),
    KindRow {
        namespaced: false,
        ..policy(
            Kind::ClusterMeshExemption,
            EXEMPTIONS,
            ("clustermeshexemptions", "clustermeshexemptions.meshgate.io"),
            true,
            CREATE_UPDATE_DELETE,
        )
    },
    policy(
        Kind::PeerAuthentication,
        SECURITY,
        (
            "peerauthentications",
            "peerauthentications.security.istio.io",
        ),
        true,
        CREATE_UPDATE_DELETE,
    ),
    policy(
        Kind::AuthorizationPolicy,
        SECURITY,
        (
            "authorizationpolicies",
            "authorizationpolicies.security.istio.io",
        ),
        true,
        CREATE_UPDATE_DELETE,
    ),
    policy(
        Kind::DestinationRule,
        NETWORKING,
        ("destinationrules", "destinationrules.networking.istio.io"),
        true,
        CREATE_UPDATE,
    ),
    policy(
        Kind::Sidecar,
        NETWORKING,
        ("sidecars", "sidecars.networking.istio.io"),
        true,
        CREATE_UPDATE,
    ),
    // Watched, never judged: destination-rule-mtls reads which hosts are in
    // the mesh.
    policy(
        Kind::ServiceEntry,
        NETWORKING,
        ("serviceentries", "serviceentries.networking.istio.io"),
        true,
        &[],
    ),
    policy(
        Kind::Certificate,
        ("cert-manager.io", V1),
        ("certificates", "certificates.cert-manager.io"),
        false,
        CREATE_UPDATE,
    ),
];

impl Kind {
    /// The kind's resource at the newest version the API server serves, or
    /// `None` when every version answers 404 (the CRDs are not installed).
    pub async fn served_resource(
        self,
        client: &kube::Client,
    ) -> Result<Option<ApiResource>, kube::Error> {
        for version in self.row().versions {
            let resource = self.api_resource(version);
            let api: kube::Api<kube::api::DynamicObject> =
                kube::Api::all_with(client.clone(), &resource);
            match api
                .list_metadata(&kube::api::ListParams::default().limit(1))
                .await
            {
                Ok(_) => return Ok(Some(resource)),
                Err(kube::Error::Api(status)) if status.code == 404 => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lowercase, as kubectl names objects ("deployment shop/web").
        f.write_str(&self.as_str().to_ascii_lowercase())
    }
}

/// A typed object of a kind in the table (its impls are made by
/// `subject`'s `typed_objects!`).
pub trait TableKind {
    const KIND: Kind;
}

// A variant without its row, rows out of order, or more kinds than a
// KindSet holds, do not compile.
const _: () = {
    assert!(TABLE.len() == Kind::COUNT && Kind::COUNT <= 32);
    let mut index = 0;
    while index < TABLE.len() {
        assert!(TABLE[index].kind as usize == index);
        index += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_row_in_discriminant_order() {
        assert_eq!(TABLE.len(), Kind::ALL.len());
        for (index, kind) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, index);
            assert_eq!(TABLE[index].kind, kind);
        }
    }

    #[test]
    fn resource_names_are_plural_dot_group() {
        for row in TABLE {
            let expected = if row.group.is_empty() {
                row.plural.to_owned()
            } else {
                format!("{}.{}", row.plural, row.group)
            };
            assert_eq!(row.resource, expected);
        }
    }

    #[test]
    fn judged_kinds_parse_and_watched_only_kinds_do_not() {
        assert_eq!(
            Kind::from_api_version("apps/v1", "Deployment"),
            Some(Kind::Deployment)
        );
        assert_eq!(
            Kind::from_api_version("networking.istio.io/v1alpha3", "Sidecar"),
            Some(Kind::Sidecar)
        );
        assert_eq!(Kind::from_api_version("apps/v1beta1", "Deployment"), None);
        assert_eq!(
            Kind::from_api_version("networking.istio.io/v1", "ServiceEntry"),
            None
        );
        assert!(Kind::PeerAuthentication.is_judged_on(&Operation::Delete));
        assert!(!Kind::DestinationRule.is_judged_on(&Operation::Delete));
        assert!(Kind::CronJob.is_workload() && !Kind::Namespace.is_workload());
    }
}
