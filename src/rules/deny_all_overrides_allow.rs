//! `deny-all-overrides-allow` (audit level by default): Istio evaluates
//! CUSTOM, then DENY, then ALLOW policies. A DENY policy with a rule `{}`
//! denies every request before any ALLOW policy is looked at, so ALLOW
//! policies beside it are dead. The allow-nothing pattern (an ALLOW policy
//! with no rules) is the deny-by-default that ALLOW policies can open.

use crate::istio::{AuthorizationPolicy, StoredAuthorizationPolicy as Stored};
use crate::rules::{Context, Finding, RuleId};

const ID: RuleId = RuleId::DenyAllOverridesAllow;
const PATTERN: &str = "use the allow-nothing pattern instead (an AuthorizationPolicy with spec: {}), which ALLOW policies can open; Istio evaluates CUSTOM, then DENY, then ALLOW";

pub fn check(ap: &AuthorizationPolicy, ctx: &Context) -> Vec<Finding> {
    let this = Stored::of(ap);
    let finding = if this.is_live_allow() {
        dead_allow(&this, ctx)
    } else if this.is_deny_all() {
        Some(deny_everything(&this, ctx))
    } else {
        None
    };
    finding.into_iter().collect()
}

/// An ALLOW policy beside a DENY-everything policy (its namespace's or the
/// root's) never takes effect.
fn dead_allow(this: &Stored, ctx: &Context) -> Option<Finding> {
    let index = &ctx.posture.authorization_policies;
    let root = ctx.config.mesh_root_namespace.as_str();
    let deny = index
        .in_namespace(&this.namespace)
        .chain(index.in_namespace(root))
        .filter(|p| !same(p, this))
        .find(|p| p.is_deny_all())?;
    Some(Finding::new(
        ID,
        format!(
            "this ALLOW policy can never take effect: DENY policy {} denies every request first",
            qualified(deny)
        ),
        format!("remove that DENY-everything policy and {PATTERN}"),
    ))
}

/// A DENY-everything policy, naming the ALLOW policies it kills.
fn deny_everything(this: &Stored, ctx: &Context) -> Finding {
    let index = &ctx.posture.authorization_policies;
    let (ns, name) = (this.namespace.as_str(), this.name.as_str());
    // In the root namespace it applies mesh-wide, to every ALLOW policy:
    // counted from the index's summary, the first few named in order.
    let (named, n): (Vec<String>, usize) = if ns == ctx.config.mesh_root_namespace {
        // The indexed version of this policy (an UPDATE) is not covered.
        let indexed_self = index.get(ns, name).is_some_and(Stored::is_live_allow);
        let named = index
            .live_allows()
            .filter(|p| !same(p, this))
            .take(3)
            .map(qualified);
        (
            named.collect(),
            index.live_allow_count() - usize::from(indexed_self),
        )
    } else {
        let mut killed = index
            .in_namespace(ns)
            .filter(|p| !same(p, this))
            .filter(|p| p.is_live_allow());
        let named: Vec<String> = killed.by_ref().take(3).map(qualified).collect();
        let n = named.len() + killed.count();
        (named, n)
    };
    let effect = match n {
        0 => "every request, including those any future ALLOW policy would allow".to_owned(),
        n => format!(
            "every request, so the {n} ALLOW policies it covers ({}{}) can never take effect",
            named.join(", "),
            if n > 3 { ", ..." } else { "" }
        ),
    };
    Finding::new(
        ID,
        format!("this DENY policy has a rule {{}} and denies {effect}"),
        format!("if a deny-by-default baseline was meant, {PATTERN}"),
    )
}

fn same(a: &Stored, b: &Stored) -> bool {
    a.namespace == b.namespace && a.name == b.name
}

fn qualified(p: &Stored) -> String {
    format!("{}/{}", p.namespace, p.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{object, World};

    fn allow_web() -> serde_json::Value {
        serde_json::json!({"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}]}]})
    }

    #[test]
    fn allow_created_beside_deny_everything_is_dead() {
        let mut world = World::enrolled_shop();
        world.posture.authorization_policies.apply(object(
            "shop",
            "deny-all",
            serde_json::json!({"action": "DENY", "rules": [{}]}),
        ));
        let f = check(&object("shop", "allow-web", allow_web()), &world.ctx());
        assert!(
            f[0].message
                .contains("can never take effect: DENY policy shop/deny-all"),
            "{}",
            f[0].message
        );
        assert!(f[0].fix.contains("CUSTOM, then DENY, then ALLOW"));
        // A root-namespace DENY-everything kills ALLOWs everywhere.
        let mut world = World::enrolled_shop();
        world.posture.authorization_policies.apply(object(
            "istio-system",
            "deny-all",
            serde_json::json!({"action": "DENY", "rules": [{}]}),
        ));
        assert_eq!(
            check(&object("shop", "allow-web", allow_web()), &world.ctx()).len(),
            1
        );
    }

    #[test]
    fn deny_everything_names_the_allows_it_kills() {
        let mut world = World::enrolled_shop();
        world
            .posture
            .authorization_policies
            .apply(object("shop", "allow-web", allow_web()));
        world.posture.authorization_policies.apply(object(
            "shop",
            "allow-nothing",
            serde_json::json!({}),
        ));
        let f = check(
            &object(
                "shop",
                "deny-all",
                serde_json::json!({"action": "DENY", "rules": [{}]}),
            ),
            &world.ctx(),
        );
        assert!(
            f[0].message
                .contains("the 1 ALLOW policies it covers (shop/allow-web)"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn allow_without_deny_everything_and_scoped_denies_are_fine() {
        let mut world = World::enrolled_shop();
        world.posture.authorization_policies.apply(object("shop", "deny-some", serde_json::json!({"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["untrusted"]}}]}]})));
        assert!(check(&object("shop", "allow-web", allow_web()), &world.ctx()).is_empty());
        assert!(check(&object("shop", "deny-some-more", serde_json::json!({"action": "DENY", "selector": {"matchLabels": {"app": "x"}}, "rules": [{}]})), &world.ctx()).is_empty());
    }
}
