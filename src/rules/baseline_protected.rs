//! `baseline-protected`: deleting or weakening a namespace's STRICT
//! PeerAuthentication or its deny-by-default AuthorizationPolicy silently
//! re-opens every workload in it. A DELETE or UPDATE that would leave an
//! enrolled namespace without them is a violation; the mesh-wide STRICT
//! policy in the root namespace is always protected.

use crate::istio::{
    AuthorizationPolicy, MtlsMode, PeerAuthentication, StoredAuthorizationPolicy as Stored,
};
use kube::Resource;

use crate::kinds::{Kind, KindSet};
use crate::posture::{find_deny_by_default, mtls};
use crate::rules::{Context, Finding, Operation, RuleId};
use crate::subject::Object;

const ID: RuleId = RuleId::BaselineProtected;

/// The kinds it judges: the two baseline policies.
pub const KINDS: KindSet = KindSet::of(Kind::PeerAuthentication).with(Kind::AuthorizationPolicy);

pub fn check(object: &Object, ctx: &Context) -> Vec<Finding> {
    let (old, new, verb) = match ctx.operation {
        Operation::Delete => (object, None, "deleting it"),
        Operation::Update { old } => (old, Some(object), "this change"),
        Operation::Create => return vec![],
    };
    match old {
        Object::PeerAuthentication(old) => {
            let new = match new {
                Some(Object::PeerAuthentication(p)) => Some(p),
                _ => None,
            };
            peer_authentication(old, new, verb, ctx)
        }
        Object::AuthorizationPolicy(old) => {
            let new = match new {
                Some(Object::AuthorizationPolicy(p)) => Some(p),
                _ => None,
            };
            authorization_policy(old, new, verb, ctx)
        }
        _ => vec![],
    }
}

fn key<T: Resource>(object: &T) -> (&str, &str) {
    let meta = object.meta();
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// The namespace's objects with `old` replaced by `new` (or removed).
fn replaced<'a, T: Resource>(
    current: impl Iterator<Item = &'a T>,
    old: &'a T,
    new: Option<&'a T>,
) -> impl Iterator<Item = &'a T> {
    let (_, name) = key(old);
    current.filter(move |p| key(*p).1 != name).chain(new)
}

/// Unknown namespaces are treated as enrolled: protect rather than guess.
fn enrolled(ctx: &Context, namespace: &str) -> bool {
    ctx.posture
        .namespace(namespace)
        .is_none_or(|ns| ns.is_enrolled())
}

fn peer_authentication(
    old: &PeerAuthentication,
    new: Option<&PeerAuthentication>,
    verb: &str,
    ctx: &Context,
) -> Vec<Finding> {
    let (ns, _) = key(old);
    let root = ctx.config.mesh_root_namespace.as_str();
    let index = &ctx.posture.peer_authentications;
    let strict_baseline = |p: &PeerAuthentication| {
        p.is_namespace_wide() && !p.spec.targets.is_targeted() && p.mode() == MtlsMode::Strict
    };
    if ns == root {
        if strict_baseline(old) && !new.is_some_and(strict_baseline) {
            return vec![Finding::new(
                ID,
                format!("{verb} would remove the mesh-wide STRICT mTLS baseline, which is always protected"),
                "keep the mesh-wide policy STRICT; to relax one namespace or workload, add an exemption with a reason",
            )];
        }
        return vec![];
    }
    if !enrolled(ctx, ns) {
        return vec![];
    }
    let before = mtls::compose(
        index.in_namespace(root),
        replaced(index.in_namespace(ns), old, Some(old)),
        None,
    );
    let after = mtls::compose(
        index.in_namespace(root),
        replaced(index.in_namespace(ns), old, new),
        None,
    );
    if before.workload.mode == MtlsMode::Strict && after.workload.mode != MtlsMode::Strict {
        return vec![Finding::new(
            ID,
            format!("{verb} would leave enrolled namespace \"{ns}\" with mTLS {}", after.workload),
            format!("apply another STRICT PeerAuthentication to \"{ns}\" (or mesh-wide) first, or keep this one STRICT"),
        )];
    }
    vec![]
}

fn authorization_policy(
    old: &AuthorizationPolicy,
    new: Option<&AuthorizationPolicy>,
    verb: &str,
    ctx: &Context,
) -> Vec<Finding> {
    let (ns, name) = key(old);
    let root = ctx.config.mesh_root_namespace.as_str();
    let index = &ctx.posture.authorization_policies;
    let (old, new) = (Stored::of(old), new.map(Stored::of));
    let others = || index.in_namespace(ns).filter(|p| p.name != name);
    let before = find_deny_by_default(others().chain(Some(&old))).is_some();
    let after = find_deny_by_default(others().chain(new.as_ref())).is_some();
    if !before || after {
        return vec![];
    }
    if ns == root {
        return mesh_wide_exposure(verb, ctx).into_iter().collect();
    }
    let covered_by_root = find_deny_by_default(index.in_namespace(root)).is_some();
    if !enrolled(ctx, ns) || covered_by_root {
        return vec![];
    }
    vec![Finding::new(
        ID,
        format!("{verb} would leave enrolled namespace \"{ns}\" without a deny-by-default AuthorizationPolicy"),
        DENY_BY_DEFAULT_FIX,
    )]
}

const DENY_BY_DEFAULT_FIX: &str = "apply another deny-by-default AuthorizationPolicy (spec: {}) to the affected namespaces first, or keep this one";

/// Removing the mesh-wide deny-by-default exposes every enrolled namespace
/// without its own. The index keeps that set sorted; only the root and the
/// exempt namespaces (a short configured list) are taken out here.
fn mesh_wide_exposure(verb: &str, ctx: &Context) -> Option<Finding> {
    let root = ctx.config.mesh_root_namespace.as_str();
    let exposed = ctx.posture.authorization_policies.exposed();
    let left_out = |n: &str| n == root || ctx.config.is_exempt_namespace(n);
    let mut skipped: Vec<&str> = ctx
        .config
        .exempt_namespaces
        .iter()
        .map(String::as_str)
        .chain([root])
        .filter(|n| exposed.contains(*n))
        .collect();
    skipped.sort_unstable();
    skipped.dedup();
    let count = exposed.len() - skipped.len();
    if count == 0 {
        return None;
    }
    let sample: Vec<&str> = exposed
        .iter()
        .map(String::as_str)
        .filter(|n| !left_out(n))
        .take(3)
        .collect();
    Some(Finding::new(
        ID,
        format!(
            "{verb} would remove the mesh-wide deny-by-default from {count} enrolled namespaces without their own ({}{})",
            sample.join(", "),
            if count > 3 { ", ..." } else { "" }
        ),
        DENY_BY_DEFAULT_FIX,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{namespace, object, World};
    use crate::rules::Context;
    use serde_json::json;

    fn world() -> World {
        World::with_namespaces(&[
            namespace("shop", &[("istio-injection", "enabled")]),
            namespace("legacy", &[]),
            namespace("istio-system", &[]),
        ])
    }

    fn run(world: &World, object: &Object, operation: Operation) -> Vec<Finding> {
        let ctx = Context {
            operation,
            ..world.ctx()
        };
        check(object, &ctx)
    }

    #[test]
    fn deleting_the_namespace_strict_policy_is_a_violation() {
        let mut w = world();
        let strict: PeerAuthentication =
            object("shop", "default", json!({"mtls": {"mode": "STRICT"}}));
        w.posture.peer_authentications.apply(strict.clone());
        let f = run(&w, &Object::PeerAuthentication(strict), Operation::Delete);
        assert!(
            f[0].message
                .contains("would leave enrolled namespace \"shop\" with mTLS PERMISSIVE"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn weakening_update_is_a_violation_but_unrelated_updates_are_not() {
        let mut w = world();
        let strict: PeerAuthentication =
            object("shop", "default", json!({"mtls": {"mode": "STRICT"}}));
        w.posture.peer_authentications.apply(strict.clone());
        let old = Object::PeerAuthentication(strict.clone());
        let permissive = Object::PeerAuthentication(object(
            "shop",
            "default",
            json!({"mtls": {"mode": "PERMISSIVE"}}),
        ));
        assert_eq!(
            run(&w, &permissive, Operation::Update { old: &old }).len(),
            1
        );
        assert!(run(&w, &old, Operation::Update { old: &old }).is_empty());
    }

    #[test]
    fn deletion_is_fine_when_another_policy_keeps_the_namespace_strict() {
        let mut w = world();
        w.posture.peer_authentications.apply(object(
            "istio-system",
            "default",
            json!({"mtls": {"mode": "STRICT"}}),
        ));
        let ns_policy: PeerAuthentication =
            object("shop", "default", json!({"mtls": {"mode": "STRICT"}}));
        w.posture.peer_authentications.apply(ns_policy.clone());
        assert!(run(
            &w,
            &Object::PeerAuthentication(ns_policy),
            Operation::Delete
        )
        .is_empty());
        // Unenrolled namespaces are not protected.
        let legacy = object("legacy", "default", json!({"mtls": {"mode": "STRICT"}}));
        assert!(run(&w, &Object::PeerAuthentication(legacy), Operation::Delete).is_empty());
    }

    #[test]
    fn mesh_wide_strict_policy_is_always_protected() {
        let mut w = world();
        let mesh: PeerAuthentication = object(
            "istio-system",
            "default",
            json!({"mtls": {"mode": "STRICT"}}),
        );
        w.posture.peer_authentications.apply(mesh.clone());
        w.posture.peer_authentications.apply(object(
            "shop",
            "default",
            json!({"mtls": {"mode": "STRICT"}}),
        ));
        let f = run(&w, &Object::PeerAuthentication(mesh), Operation::Delete);
        assert!(f[0].message.contains("mesh-wide STRICT mTLS baseline"));
    }

    #[test]
    fn deleting_allow_nothing_leaves_namespace_open_unless_root_covers_it() {
        let mut w = world();
        let baseline: AuthorizationPolicy = object("shop", "allow-nothing", json!({}));
        w.posture.authorization_policies.apply(baseline.clone());
        let f = run(
            &w,
            &Object::AuthorizationPolicy(baseline.clone()),
            Operation::Delete,
        );
        assert!(f[0]
            .message
            .contains("without a deny-by-default AuthorizationPolicy"));
        w.posture
            .authorization_policies
            .apply(object("istio-system", "allow-nothing", json!({})));
        assert!(run(
            &w,
            &Object::AuthorizationPolicy(baseline),
            Operation::Delete
        )
        .is_empty());
    }

    #[test]
    fn deleting_root_allow_nothing_names_exposed_namespaces() {
        let mut w = world();
        let mesh: AuthorizationPolicy = object("istio-system", "allow-nothing", json!({}));
        w.posture.authorization_policies.apply(mesh.clone());
        let f = run(
            &w,
            &Object::AuthorizationPolicy(mesh.clone()),
            Operation::Delete,
        );
        assert!(
            f[0].message
                .contains("from 1 enrolled namespaces without their own (shop)"),
            "{}",
            f[0].message
        );
        w.posture.authorization_policies.apply(object(
            "shop",
            "own",
            json!({"action": "DENY", "rules": [{}]}),
        ));
        assert!(run(&w, &Object::AuthorizationPolicy(mesh), Operation::Delete).is_empty());
    }

    #[test]
    fn creates_are_never_judged_here() {
        let w = world();
        assert!(run(
            &w,
            &Object::AuthorizationPolicy(object("shop", "x", json!({}))),
            Operation::Create
        )
        .is_empty());
    }
}
