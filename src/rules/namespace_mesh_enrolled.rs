//! `namespace-mesh-enrolled`: a namespace outside the mesh runs its pods
//! without proxies, and so without mTLS or authorization.

use crate::posture::{labels, NamespaceInfo};
use crate::rules::{Context, Finding, RuleId};
use crate::subject::NamespaceObject;

pub fn check(ns: &NamespaceObject, _ctx: &Context) -> Vec<Finding> {
    let info = NamespaceInfo {
        labels: ns.labels.clone(),
    };
    if info.is_enrolled() {
        return vec![];
    }
    let why = match info.label(labels::ISTIO_INJECTION) {
        Some("disabled") => "is labelled istio-injection=disabled".to_owned(),
        Some(other) => format!("has istio-injection={other}, which the injector ignores"),
        None => "is not enrolled in the mesh".to_owned(),
    };
    vec![Finding::new(
        RuleId::NamespaceMeshEnrolled,
        why,
        "label it istio-injection=enabled (or istio.io/rev=<revision>, or istio.io/dataplane-mode=ambient)",
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::World;

    fn ns(labels: &[(&str, &str)]) -> NamespaceObject {
        NamespaceObject {
            name: "shop".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn rejects_unlabelled_and_disabled_namespaces() {
        let world = World::enrolled_shop();
        assert!(check(&ns(&[]), &world.ctx())[0]
            .message
            .starts_with("is not enrolled"));
        let f = check(
            &ns(&[("istio-injection", "disabled"), ("istio.io/rev", "x")]),
            &world.ctx(),
        );
        assert!(f[0].message.contains("istio-injection=disabled"));
    }

    #[test]
    fn accepts_sidecar_revision_and_ambient_enrollment() {
        let world = World::enrolled_shop();
        for labels in [
            &[("istio-injection", "enabled")][..],
            &[("istio.io/rev", "1-24")],
            &[("istio.io/dataplane-mode", "ambient")],
        ] {
            assert!(check(&ns(labels), &world.ctx()).is_empty(), "{labels:?}");
        }
    }
}
