//! `authorization-no-allow-all`: an ALLOW rule `{}` matches every request,
//! undoing deny-by-default. Rules without `from`, or with wildcard principals
//! or namespaces, are reported as advice (audit level): they are sometimes
//! meant, but usually broader than intended.

use super::native_form::{NativeCheck, NativeRule, Target};
use crate::istio::{AuthorizationPolicy, AuthzAction};
use crate::kinds::Kind;
use crate::rules::{Context, Finding, RuleId};

const ID: RuleId = RuleId::AuthorizationNoAllowAll;

pub fn check(ap: &AuthorizationPolicy, _ctx: &Context) -> Vec<Finding> {
    if ap.action() != AuthzAction::Allow {
        return vec![];
    }
    let mut findings = Vec::new();
    for (i, rule) in ap.rules().iter().enumerate() {
        if rule.is_empty() {
            findings.push(Finding::new(
                ID,
                format!("allows every request: rules[{i}] is {{}}, which matches everything"),
                "remove the empty rule; name the callers in from.source.principals and the operations in to",
            ));
            continue;
        }
        if rule.from.is_empty() {
            findings.push(Finding::advisory(
                ID,
                format!("rules[{i}] has no from, so any source, even unauthenticated, matches"),
                "add from.source.principals (or namespaces) naming the callers",
            ));
        }
        for (j, from) in rule.from.iter().enumerate() {
            let Some(source) = &from.source else { continue };
            for (field, values) in [
                ("principals", &source.principals),
                ("namespaces", &source.namespaces),
            ] {
                if values.iter().any(|v| v == "*") {
                    findings.push(Finding::advisory(
                        ID,
                        format!("rules[{i}].from[{j}].source.{field} contains \"*\", which matches any authenticated caller"),
                        format!("replace \"*\" in {field} with the callers' identities"),
                    ));
                }
            }
        }
    }
    findings
}

/// The CEL form (`crate::native`): the empty rule is enforced, the missing
/// `from` and the wildcards are advisory, as above.
pub const NATIVE: NativeRule = NativeRule {
    target: Target::One(Kind::AuthorizationPolicy),
    variables: &[
        ("allow", "object.?spec.?action.orValue('ALLOW') == 'ALLOW'"),
        ("rules", "variables.allow ? object.?spec.?rules.orValue([]) : []"),
        (
            "emptyRules",
            "variables.rules.filter(r, size(r.?from.orValue([])) == 0 && size(r.?to.orValue([])) == 0 && size(r.?when.orValue([])) == 0)",
        ),
    ],
    config: None,
    checks: &[
        NativeCheck {
            expression: "size(variables.emptyRules) == 0",
            message: "'allows every request: a rule is {}, which matches everything'",
            fix: "'remove the empty rule; name the callers in from.source.principals and the operations in to'",
            advisory: false,
        },
        NativeCheck {
            expression: "variables.rules.all(r, size(r.?from.orValue([])) > 0 || (size(r.?to.orValue([])) == 0 && size(r.?when.orValue([])) == 0))",
            message: "'a rule has no from, so any source, even unauthenticated, matches'",
            fix: "'add from.source.principals (or namespaces) naming the callers'",
            advisory: true,
        },
        NativeCheck {
            expression: "variables.rules.all(r, r.?from.orValue([]).all(f, !('*' in f.?source.?principals.orValue([])) && !('*' in f.?source.?namespaces.orValue([]))))",
            message: "'a from.source.principals or namespaces contains \"*\", which matches any authenticated caller'",
            fix: "'replace \"*\" with the callers\\' identities'",
            advisory: true,
        },
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{object, World};

    #[test]
    fn rejects_allow_with_empty_rule() {
        let world = World::enrolled_shop();
        let f = check(
            &object(
                "shop",
                "a",
                serde_json::json!({"action": "ALLOW", "rules": [{}]}),
            ),
            &world.ctx(),
        );
        assert_eq!(f.len(), 1);
        assert!(!f[0].advisory);
        assert!(f[0].message.contains("allows every request"));
        // Default action is ALLOW too.
        assert_eq!(
            check(
                &object("shop", "a", serde_json::json!({"rules": [{}]})),
                &world.ctx()
            )
            .len(),
            1
        );
    }

    #[test]
    fn missing_from_and_wildcards_are_advisory() {
        let world = World::enrolled_shop();
        let f = check(
            &object(
                "shop",
                "a",
                serde_json::json!({"rules": [
                    {"to": [{"operation": {"methods": ["GET"]}}]},
                    {"from": [{"source": {"principals": ["*"], "namespaces": ["*"]}}]}
                ]}),
            ),
            &world.ctx(),
        );
        assert_eq!(f.len(), 3);
        assert!(f.iter().all(|f| f.advisory));
    }

    #[test]
    fn accepts_allow_nothing_specific_rules_and_deny_policies() {
        let world = World::enrolled_shop();
        for spec in [
            serde_json::json!({}),
            serde_json::json!({"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}]}]}),
            serde_json::json!({"action": "DENY", "rules": [{}]}),
        ] {
            assert!(check(&object("shop", "a", spec), &world.ctx()).is_empty());
        }
    }
}
