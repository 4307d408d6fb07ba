//! The file feeder: the posture index built from manifests, for
//! `serve --state-from` and `meshgate audit`. No API server is contacted.

use k8s_openapi::api::core::v1::Namespace;

use crate::manifest::{Manifest, ManifestError};

use super::PostureIndex;

/// Builds the index from every cluster-state object among `manifests`;
/// other objects are ignored.
pub fn index(manifests: &[Manifest]) -> Result<PostureIndex, ManifestError> {
    let mut namespaces = Vec::new();
    for m in manifests {
        if m.api_version == "v1" && m.kind == "Namespace" {
            let ns: Namespace =
                serde_json::from_value(m.value.clone()).map_err(|e| ManifestError::Parse {
                    file: m.origin.file.clone(),
                    document: m.origin.document,
                    problem: format!("cannot decode the Namespace: {e}"),
                })?;
            namespaces.push(ns);
        }
    }
    let mut index = PostureIndex::default();
    index.replace_namespaces(&namespaces);
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_text;

    #[test]
    fn indexes_namespaces_with_labels() {
        let m = parse_text(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio-injection: enabled}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
        )
        .unwrap();
        let index = index(&m).unwrap();
        assert_eq!(index.namespace_count(), 1);
        assert_eq!(
            index.namespace("shop").unwrap().label("istio-injection"),
            Some("enabled")
        );
    }

    #[test]
    fn a_malformed_namespace_is_an_error() {
        let m = parse_text(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [x]\n",
        )
        .unwrap();
        assert!(index(&m)
            .unwrap_err()
            .to_string()
            .contains("ns.yaml, document 1"));
    }
}
