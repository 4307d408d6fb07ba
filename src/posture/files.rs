//! The file feeder: the posture index built from manifests, for
//! `serve --state-from` and `meshgate audit`. No API server is contacted.

use k8s_openapi::api::core::v1::Namespace;
use serde::de::DeserializeOwned;

use std::path::PathBuf;

use crate::kinds::Kind;
use crate::manifest::{self, Manifest, ManifestError};

use super::PostureIndex;

/// Builds the index from every cluster-state object among `manifests`;
/// other objects are ignored. Namespaced objects without a namespace belong
/// to `default_namespace`, as `kubectl apply` would place them.
pub fn index(
    manifests: &[Manifest],
    default_namespace: &str,
) -> Result<PostureIndex, ManifestError> {
    let mut index = PostureIndex::default();
    for m in manifests {
        add(&mut index, m.clone(), default_namespace)?;
    }
    Ok(index)
}

/// The index straight from files (`serve --state-from`): each document is
/// parsed, indexed and dropped before the next, so only the index stays in
/// memory, never the whole parsed input.
pub fn index_paths(
    paths: &[PathBuf],
    default_namespace: &str,
) -> Result<PostureIndex, ManifestError> {
    let mut index = PostureIndex::default();
    manifest::visit_paths(paths, &mut |m| add(&mut index, m, default_namespace))?;
    Ok(index)
}

/// Indexes one manifest if it is cluster state. Namespaces are applied one
/// by one: on an index built from scratch that is the same as replacing
/// them all, and a later document of the same name wins.
pub fn add(
    index: &mut PostureIndex,
    m: Manifest,
    default_namespace: &str,
) -> Result<(), ManifestError> {
    let Some(kind) = Kind::known(&m.api_version, &m.kind).filter(|k| k.row().posture) else {
        return Ok(());
    };
    let ns = Some(default_namespace);
    match kind {
        Kind::Namespace => index.apply_namespace(&decode::<Namespace>(m, None)?),
        Kind::PeerAuthentication => index.peer_authentications.apply(decode(m, ns)?),
        Kind::AuthorizationPolicy => index.authorization_policies.apply(decode(m, ns)?),
        Kind::DestinationRule => index.destination_rules.apply(decode(m, ns)?),
        Kind::Sidecar => index.sidecars.apply(decode(m, ns)?),
        Kind::ServiceEntry => index.service_entries.apply(decode(m, ns)?),
        // Exemption objects, as the webhook reads them.
        Kind::MeshExemption => index
            .exemptions
            .apply_namespaced(&decode::<crate::exemption::MeshExemption>(m, ns)?),
        Kind::ClusterMeshExemption => index
            .exemptions
            .apply_cluster(&decode::<crate::exemption::ClusterMeshExemption>(m, None)?),
        // Only the posture kinds above are indexed (`posture` in the table).
        _ => {}
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(
    m: Manifest,
    default_namespace: Option<&str>,
) -> Result<T, ManifestError> {
    let missing_namespace = m.namespace().is_none();
    let Manifest {
        origin,
        kind,
        mut value,
        ..
    } = m;
    if let (Some(ns), true) = (default_namespace, missing_namespace) {
        if let Some(meta) = value.get_mut("metadata").and_then(|v| v.as_object_mut()) {
            meta.insert("namespace".into(), ns.into());
        }
    }
    crate::strict::from_value(value).map_err(|e| ManifestError::Parse {
        file: origin.file,
        document: origin.document,
        problem: format!("cannot decode the {kind}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_text;

    #[test]
    fn indexes_namespaces_and_istio_policies_of_every_version() {
        let m = parse_text(
            "state.yaml",
            concat!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio-injection: enabled}\n---\n",
                "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: default}\nspec: {mtls: {mode: STRICT}}\n---\n",
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: shop}\nspec: {}\n---\n",
                "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: r, namespace: shop}\nspec: {host: reviews}\n---\n",
                "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\nspec: {}\n---\n",
                "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: vm}\nspec: {hosts: [vm.shop.internal], location: MESH_INTERNAL}\n---\n",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
            ),
        )
        .unwrap();
        let index = index(&m, "shop").unwrap();
        assert_eq!(index.namespace_count(), 1);
        assert_eq!(
            index.namespace("shop").unwrap().label("istio-injection"),
            Some("enabled")
        );
        assert_eq!(index.peer_authentications.in_namespace("shop").count(), 1);
        assert_eq!(index.authorization_policies.len(), 1);
        assert_eq!(index.destination_rules.len(), 1);
        assert_eq!(index.sidecars.len(), 1);
        assert_eq!(index.service_entries.in_namespace("shop").count(), 1);
    }

    #[test]
    fn streaming_from_files_builds_the_same_index() {
        let dir = tempfile::tempdir().unwrap();
        let text = concat!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio-injection: enabled}\n---\n",
            "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: security.istio.io/v1, kind: PeerAuthentication, metadata: {name: default}, spec: {mtls: {mode: STRICT}}}\n",
            "- {apiVersion: security.istio.io/v1, kind: AuthorizationPolicy, metadata: {name: allow-nothing, namespace: shop}, spec: {}}\n",
        );
        std::fs::write(dir.path().join("state.yaml"), text).unwrap();
        let streamed = index_paths(&[dir.path().to_owned()], "shop").unwrap();
        assert_eq!(streamed.namespace_count(), 1);
        assert_eq!(
            streamed.peer_authentications.in_namespace("shop").count(),
            1
        );
        assert_eq!(streamed.authorization_policies.len(), 1);
        let e = index_paths(&[dir.path().join("missing.yaml")], "shop").unwrap_err();
        assert!(e.to_string().contains("missing.yaml"), "{e}");
    }

    #[test]
    fn a_malformed_object_is_an_error_naming_file_and_document() {
        let m = parse_text(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [x]\n",
        )
        .unwrap();
        assert!(index(&m, "default")
            .unwrap_err()
            .to_string()
            .contains("ns.yaml, document 1"));
        let m = parse_text("pa.yaml", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x}\nspec: {mtls: {mode: SOMETIMES}}\n").unwrap();
        assert!(index(&m, "default")
            .unwrap_err()
            .to_string()
            .contains("pa.yaml, document 1: cannot decode the PeerAuthentication"));
    }
}
