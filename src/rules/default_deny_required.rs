//! `default-deny-required`: mTLS proves who is calling; without a
//! deny-by-default AuthorizationPolicy every authenticated workload in the
//! mesh may call every other.

use crate::rules::{unverifiable_without_istio, Context, Finding, RuleId};
use crate::subject::Workload;

const ID: RuleId = RuleId::DefaultDenyRequired;

pub fn check(w: &Workload, ctx: &Context) -> Vec<Finding> {
    let root = &ctx.config.mesh_root_namespace;
    if let Some(finding) = unverifiable_without_istio(ID, ctx, "authorization") {
        return vec![finding];
    }
    if ctx.posture.deny_by_default(&w.namespace, root).is_some() {
        return vec![];
    }
    vec![Finding::new(
        ID,
        format!(
            "runs in namespace \"{}\", which has no deny-by-default AuthorizationPolicy (nor has \"{root}\"), so any workload in the mesh may call it",
            w.namespace
        ),
        format!(
            "apply the namespace's baseline first: an AuthorizationPolicy with spec: {{}} (allow-nothing) in \"{}\", then ALLOW policies for its legitimate callers",
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
    fn rejects_namespace_without_deny_by_default() {
        let mut world = World::enrolled_shop();
        world.add_authorization_policy(
            "shop",
            "p",
            serde_json::json!({"selector": {"matchLabels": {"app": "web"}}}),
        );
        let f = check(&deployment("web"), &world.ctx());
        assert!(
            f[0].message
                .contains("no deny-by-default AuthorizationPolicy"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn accepts_allow_nothing_in_namespace_or_root_and_deny_everything() {
        let mut world = World::enrolled_shop();
        world.add_authorization_policy("shop", "p", serde_json::json!({}));
        assert!(check(&deployment("web"), &world.ctx()).is_empty());
        let mut world = World::enrolled_shop();
        world.add_authorization_policy("istio-system", "p", serde_json::json!({}));
        assert!(check(&deployment("web"), &world.ctx()).is_empty());
        let mut world = World::enrolled_shop();
        world.add_authorization_policy(
            "shop",
            "p",
            serde_json::json!({"action": "DENY", "rules": [{}]}),
        );
        assert!(check(&deployment("web"), &world.ctx()).is_empty());
    }

    #[test]
    fn missing_crds_are_unverifiable() {
        let mut world = World::enrolled_shop();
        world.posture.security_api = Availability::Missing;
        assert!(check(&deployment("web"), &world.ctx())[0]
            .message
            .contains("cannot be verified"));
    }
}
