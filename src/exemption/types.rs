//! MeshExemption and ClusterMeshExemption as meshgate reads them: only the
//! fields it needs, unknown ones tolerated (the CRD's schema is the chart's;
//! `status` is meshgate's own output). Decoded through `crate::strict`, like
//! every other watched type.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use serde::Deserialize;

use crate::kinds::{Kind, TableKind};

/// `spec` of both kinds; `namespaceSelector` is the cluster kind's only
/// (the namespaced CRD has no such field, so it is always `None` there).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExemptionSpec {
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(default, rename = "match")]
    pub object_match: ObjectMatch,
    #[serde(default)]
    pub reason: String,
    pub expires: Option<Time>,
    pub ticket: Option<String>,
    pub owner: Option<String>,
    pub namespace_selector: Option<LabelSelector>,
}

/// `spec.match`: exact names (a trailing `*` matches by prefix) and/or a
/// label selector (for workloads, the pod-template labels).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMatch {
    #[serde(default)]
    pub names: Vec<String>,
    pub selector: Option<LabelSelector>,
}

/// A namespaced exemption: lifts rules for objects of its own namespace.
#[derive(Debug, Clone, Deserialize)]
pub struct MeshExemption {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ExemptionSpec,
}

/// A cluster-scoped exemption, for the platform team.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterMeshExemption {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ExemptionSpec,
}

/// `kube::Resource` from the kinds table, as `kinds::table_resource!` does
/// for the Istio types (that macro is namespaced-only).
macro_rules! exemption_resource {
    ($t:ty, $kind:expr, $scope:ty) => {
        impl TableKind for $t {
            const KIND: Kind = $kind;
        }

        impl kube::Resource for $t {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.as_str().into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.row().group.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.row().versions[0].into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.row().plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

exemption_resource!(
    MeshExemption,
    Kind::MeshExemption,
    kube::core::NamespaceResourceScope
);
exemption_resource!(
    ClusterMeshExemption,
    Kind::ClusterMeshExemption,
    kube::core::ClusterResourceScope
);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn decodes_the_spec_and_tolerates_unknown_fields_and_status() {
        let e: MeshExemption = crate::strict::from_value(serde_json::json!({
            "apiVersion": "meshgate.io/v1alpha1", "kind": "MeshExemption",
            "metadata": {"name": "legacy-billing", "namespace": "shop", "generation": 2},
            "spec": {"rules": ["sidecar-required"], "match": {"names": ["billing", "batch-*"]},
                     "reason": "Vendor image cannot run with a sidecar (SEC-1234)",
                     "expires": "2027-01-31T00:00:00Z", "ticket": "SEC-1234", "future": 1},
            "status": {"state": "Active", "covered": 3}
        }))
        .unwrap();
        assert_eq!(e.spec.object_match.names, ["billing", "batch-*"]);
        assert_eq!(
            e.spec.expires.unwrap().0.to_string(),
            "2027-01-31T00:00:00Z"
        );
        assert_eq!(MeshExemption::plural(&()), "meshexemptions");
        assert_eq!(
            ClusterMeshExemption::api_version(&()),
            "meshgate.io/v1alpha1"
        );
    }

    #[test]
    fn a_spec_given_as_a_sequence_is_refused() {
        let e = crate::strict::from_value::<MeshExemption>(serde_json::json!({
            "metadata": {"name": "x"}, "spec": [["sidecar-required"]]
        }));
        assert!(e.is_err());
    }
}
