//! The file feeder: the posture index built from manifests, for
//! `serve --state-from` and `meshgate audit`. No API server is contacted.

use k8s_openapi::api::core::v1::Namespace;
use serde::de::DeserializeOwned;

use crate::manifest::{Manifest, ManifestError};

use super::PostureIndex;

/// Builds the index from every cluster-state object among `manifests`;
/// other objects are ignored. Namespaced objects without a namespace belong
/// to `default_namespace`, as `kubectl apply` would place them.
pub fn index(
    manifests: &[Manifest],
    default_namespace: &str,
) -> Result<PostureIndex, ManifestError> {
    let mut index = PostureIndex::default();
    let mut namespaces = Vec::new();
    for m in manifests {
        let group = m.api_version.split_once('/').map_or("", |(g, _)| g);
        match (group, m.kind.as_str()) {
            ("", "Namespace") if m.api_version == "v1" => {
                namespaces.push(decode::<Namespace>(m, None)?)
            }
            ("security.istio.io", "PeerAuthentication") => index
                .peer_authentications
                .apply(decode(m, Some(default_namespace))?),
            ("security.istio.io", "AuthorizationPolicy") => index
                .authorization_policies
                .apply(decode(m, Some(default_namespace))?),
            ("networking.istio.io", "DestinationRule") => index
                .destination_rules
                .apply(decode(m, Some(default_namespace))?),
            ("networking.istio.io", "Sidecar") => {
                index.sidecars.apply(decode(m, Some(default_namespace))?)
            }
            ("networking.istio.io", "ServiceEntry") => index
                .service_entries
                .apply(decode(m, Some(default_namespace))?),
            _ => {}
        }
    }
    index.replace_namespaces(&namespaces);
    Ok(index)
}

fn decode<T: DeserializeOwned>(
    m: &Manifest,
    default_namespace: Option<&str>,
) -> Result<T, ManifestError> {
    let mut value = m.value.clone();
    if let (Some(ns), None) = (default_namespace, m.namespace()) {
        if let Some(meta) = value.get_mut("metadata").and_then(|v| v.as_object_mut()) {
            meta.insert("namespace".into(), ns.into());
        }
    }
    serde_json::from_value(value).map_err(|e| ManifestError::Parse {
        file: m.origin.file.clone(),
        document: m.origin.document,
        problem: format!("cannot decode the {}: {e}", m.kind),
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
