//! `no-host-network`: a pod on the host's network namespace shares the node's
//! interfaces; no sidecar intercepts its traffic and no mTLS protects it.

use super::native_form::{NativeCheck, NativeRule, Target};
use crate::rules::{Context, Finding, RuleId};
use crate::subject::Workload;

pub fn check(w: &Workload, _ctx: &Context) -> Vec<Finding> {
    if w.spec.host_network != Some(true) {
        return vec![];
    }
    vec![Finding::new(
        RuleId::NoHostNetwork,
        "uses hostNetwork: true, so its traffic never passes through a sidecar",
        "remove hostNetwork: true (or add an exemption with a reason, for node agents)",
    )]
}

/// The CEL form (`crate::native`): the same field.
pub const NATIVE: NativeRule = NativeRule {
    target: Target::Workloads,
    variables: &[],
    config: None,
    checks: &[NativeCheck {
        expression: "!variables.spec.?hostNetwork.orValue(false)",
        message: "'uses hostNetwork: true, so its traffic never passes through a sidecar'",
        fix: "'remove hostNetwork: true (or add an exemption with a reason, for node agents)'",
        advisory: false,
    }],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::*;

    #[test]
    fn rejects_host_network() {
        let world = World::enrolled_shop();
        let f = check(&deployment("agent").host_network(), &world.ctx());
        assert_eq!(rule_ids(&f), [RuleId::NoHostNetwork]);
        assert_eq!(
            f[0].message,
            "uses hostNetwork: true, so its traffic never passes through a sidecar"
        );
    }

    #[test]
    fn accepts_pod_network() {
        let world = World::enrolled_shop();
        assert!(check(&injected(pod("web")), &world.ctx()).is_empty());
        let mut explicit_false = pod("web");
        explicit_false.spec.host_network = Some(false);
        assert!(check(&explicit_false, &world.ctx()).is_empty());
    }
}
