//! `strict-mtls-required`: a workload whose effective PeerAuthentication mode
//! is not STRICT on every port accepts plaintext from anything that can reach
//! it, sidecar or not.

use crate::rules::{unverifiable_without_istio, Context, Finding, RuleId};
use crate::subject::Workload;

const ID: RuleId = RuleId::StrictMtlsRequired;

pub fn check(w: &Workload, ctx: &Context) -> Vec<Finding> {
    let root = &ctx.config.mesh_root_namespace;
    if let Some(finding) = unverifiable_without_istio(ID, ctx, "mTLS") {
        return vec![finding];
    }
    let effective = ctx
        .posture
        .effective_mtls(&w.namespace, Some(w.pod_labels()), root);
    if effective.is_strict() {
        return vec![];
    }
    vec![Finding::new(
        ID,
        format!(
            "would accept plaintext: {}",
            effective.weaknesses().join(", ")
        ),
        format!(
            "apply the namespace's baseline first: a PeerAuthentication with mtls.mode: STRICT in \"{}\" (or mesh-wide in \"{root}\"), and no PERMISSIVE/DISABLE override for this workload",
            w.namespace
        ),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::posture::Availability;
    use crate::rules::testing::*;

    #[test]
    fn rejects_workload_without_any_peer_authentication_naming_istios_default() {
        let world = World::enrolled_shop();
        let f = check(&deployment("web"), &world.ctx());
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message
                .contains("PERMISSIVE (no PeerAuthentication applies"),
            "{}",
            f[0].message
        );
        assert!(f[0].fix.contains("apply the namespace's baseline first"));
    }

    #[test]
    fn accepts_mesh_wide_strict_and_names_the_deciding_policy_otherwise() {
        let mut world = World::enrolled_shop();
        world.add_peer_authentication(
            "istio-system",
            "default",
            serde_json::json!({"mtls": {"mode": "STRICT"}}),
        );
        assert!(check(&deployment("web"), &world.ctx()).is_empty());
        world.add_peer_authentication("shop",
            "legacy",
            serde_json::json!({"selector": {"matchLabels": {"app": "web"}}, "portLevelMtls": {"8080": {"mode": "PERMISSIVE"}}}),
        );
        let f = check(&deployment("web").with_label("app", "web"), &world.ctx());
        assert!(
            f[0].message
                .contains("port 8080 is PERMISSIVE (set by PeerAuthentication shop/legacy)"),
            "{}",
            f[0].message
        );
        // Another workload in the namespace is unaffected by that selector.
        assert!(check(&deployment("api").with_label("app", "api"), &world.ctx()).is_empty());
    }

    #[test]
    fn missing_istio_crds_are_unverifiable_not_a_pass() {
        let mut world = World::enrolled_shop();
        world.posture.security_api = Availability::Missing;
        let f = check(&deployment("web"), &world.ctx());
        assert!(f[0].message.contains("cannot be verified"));
    }
}
