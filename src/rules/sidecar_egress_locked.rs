//! `sidecar-egress-locked`: `outboundTrafficPolicy: ALLOW_ANY` lets
//! workloads reach any host that is not in the registry, unmanaged and
//! unobserved.

use super::native_form::{NativeCheck, NativeRule, Target};
use crate::istio::{OutboundTrafficMode, Sidecar};
use crate::kinds::Kind;
use crate::rules::{Context, Finding, RuleId};

pub fn check(sidecar: &Sidecar, _ctx: &Context) -> Vec<Finding> {
    let mode = sidecar
        .spec
        .outbound_traffic_policy
        .as_ref()
        .and_then(|p| p.mode);
    let setting = match mode {
        None | Some(OutboundTrafficMode::RegistryOnly) => return vec![],
        Some(OutboundTrafficMode::AllowAny) => "outboundTrafficPolicy.mode: ALLOW_ANY",
        // Never a silent pass: what Istio would make of it is not known.
        Some(OutboundTrafficMode::Unknown) => {
            "outboundTrafficPolicy.mode to a value Istio does not define, counted as ALLOW_ANY"
        }
    };
    vec![Finding::new(
        RuleId::SidecarEgressLocked,
        format!("sets {setting}, so its workloads may reach any unregistered host"),
        "set outboundTrafficPolicy.mode: REGISTRY_ONLY and declare the external hosts needed with ServiceEntries",
    )]
}

/// The CEL form (`crate::native`): anything but REGISTRY_ONLY (or no mode).
pub const NATIVE: NativeRule = NativeRule {
    target: Target::One(Kind::Sidecar),
    variables: &[],
    config: None,
    checks: &[NativeCheck {
        expression: "object.?spec.?outboundTrafficPolicy.?mode.orValue('REGISTRY_ONLY') == 'REGISTRY_ONLY'",
        message: "'sets outboundTrafficPolicy.mode: ' + string(object.spec.outboundTrafficPolicy.mode) + ', so its workloads may reach any unregistered host'",
        fix: "'set outboundTrafficPolicy.mode: REGISTRY_ONLY and declare the external hosts needed with ServiceEntries'",
        advisory: false,
    }],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{object, World};

    #[test]
    fn rejects_allow_any_and_modes_istio_does_not_define() {
        let world = World::enrolled_shop();
        assert_eq!(
            check(
                &object(
                    "shop",
                    "default",
                    serde_json::json!({"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}})
                ),
                &world.ctx()
            )
            .len(),
            1
        );
        assert!(check(
            &object(
                "shop",
                "default",
                serde_json::json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})
            ),
            &world.ctx()
        )
        .is_empty());
        assert!(check(
            &object("shop", "default", serde_json::json!({})),
            &world.ctx()
        )
        .is_empty());
        let unknown = check(
            &object(
                "shop",
                "default",
                serde_json::json!({"outboundTrafficPolicy": {"mode": "allow_any"}}),
            ),
            &world.ctx(),
        );
        assert_eq!(unknown.len(), 1);
        assert!(
            unknown[0].message.contains("counted as ALLOW_ANY"),
            "{}",
            unknown[0].message
        );
    }
}
