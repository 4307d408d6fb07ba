//! `sidecar-egress-locked`: `outboundTrafficPolicy: ALLOW_ANY` lets
//! workloads reach any host that is not in the registry, unmanaged and
//! unobserved.

use crate::istio::Sidecar;
use crate::rules::{Context, Finding, RuleId};

pub fn check(sidecar: &Sidecar, _ctx: &Context) -> Vec<Finding> {
    let mode = sidecar
        .spec
        .outbound_traffic_policy
        .as_ref()
        .and_then(|p| p.mode.as_deref());
    if mode != Some("ALLOW_ANY") {
        return vec![];
    }
    vec![Finding::new(
        RuleId::SidecarEgressLocked,
        "sets outboundTrafficPolicy.mode: ALLOW_ANY, so its workloads may reach any unregistered host",
        "set outboundTrafficPolicy.mode: REGISTRY_ONLY and declare the external hosts needed with ServiceEntries",
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::World;

    fn sidecar(spec: serde_json::Value) -> Sidecar {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "default", "namespace": "shop"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn rejects_allow_any_only() {
        let world = World::enrolled_shop();
        assert_eq!(
            check(
                &sidecar(serde_json::json!({"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}})),
                &world.ctx()
            )
            .len(),
            1
        );
        assert!(check(
            &sidecar(serde_json::json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})),
            &world.ctx()
        )
        .is_empty());
        assert!(check(&sidecar(serde_json::json!({})), &world.ctx()).is_empty());
    }
}
