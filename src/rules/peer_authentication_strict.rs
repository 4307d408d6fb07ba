//! `peer-authentication-strict`: a PERMISSIVE or DISABLE PeerAuthentication,
//! at any level, lets a client downgrade to plaintext.

use super::native_form::{NativeCheck, NativeRule, Target};
use crate::istio::{MtlsMode, PeerAuthentication};
use crate::kinds::Kind;
use crate::rules::{Context, Finding, RuleId};

const ID: RuleId = RuleId::PeerAuthenticationStrict;

fn weak(mode: MtlsMode) -> bool {
    matches!(mode, MtlsMode::Permissive | MtlsMode::Disable)
}

pub fn check(pa: &PeerAuthentication, _ctx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    if weak(pa.mode()) {
        findings.push(Finding::new(
            ID,
            format!(
                "sets mtls.mode: {}, which accepts plaintext",
                pa.mode().as_str()
            ),
            "set mtls.mode: STRICT (or UNSET to inherit a STRICT parent)",
        ));
    }
    for (port, mtls) in &pa.spec.port_level_mtls {
        if weak(mtls.mode()) {
            findings.push(Finding::new(
                ID,
                format!(
                    "sets portLevelMtls[{port}].mode: {}, which accepts plaintext on port {port}",
                    mtls.mode().as_str()
                ),
                format!("set portLevelMtls[{port}].mode: STRICT or remove the port override"),
            ));
        }
    }
    findings
}

/// The CEL form (`crate::native`): the same two levels.
pub const NATIVE: NativeRule = NativeRule {
    target: Target::One(Kind::PeerAuthentication),
    variables: &[
        ("weak", "['PERMISSIVE', 'DISABLE']"),
        ("ports", "object.?spec.?portLevelMtls.orValue({})"),
        (
            "weakPorts",
            "variables.ports.filter(p, variables.ports[p].?mode.orValue('UNSET') in variables.weak)",
        ),
    ],
    config: None,
    checks: &[
        NativeCheck {
            expression: "!(object.?spec.?mtls.?mode.orValue('UNSET') in variables.weak)",
            message: "'sets mtls.mode: ' + object.spec.mtls.mode + ', which accepts plaintext'",
            fix: "'set mtls.mode: STRICT (or UNSET to inherit a STRICT parent)'",
            advisory: false,
        },
        NativeCheck {
            expression: "size(variables.weakPorts) == 0",
            message: "'sets portLevelMtls[' + variables.weakPorts.join(', ') + '].mode to PERMISSIVE or DISABLE, which accepts plaintext on those ports'",
            fix: "'set portLevelMtls[<port>].mode: STRICT or remove the port override'",
            advisory: false,
        },
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{object, World};

    #[test]
    fn rejects_permissive_and_disable_at_every_level() {
        let world = World::enrolled_shop();
        let f = check(
            &object(
                "shop",
                "p",
                serde_json::json!({"mtls": {"mode": "PERMISSIVE"}, "portLevelMtls": {"9080": {"mode": "DISABLE"}, "9090": {"mode": "STRICT"}}}),
            ),
            &world.ctx(),
        );
        assert_eq!(f.len(), 2);
        assert_eq!(
            f[0].message,
            "sets mtls.mode: PERMISSIVE, which accepts plaintext"
        );
        assert!(f[1].message.contains("portLevelMtls[9080].mode: DISABLE"));
    }

    #[test]
    fn accepts_strict_unset_and_empty() {
        let world = World::enrolled_shop();
        for spec in [
            serde_json::json!({"mtls": {"mode": "STRICT"}}),
            serde_json::json!({"mtls": {"mode": "UNSET"}}),
            serde_json::json!({}),
        ] {
            assert!(check(&object("shop", "p", spec), &world.ctx()).is_empty());
        }
    }
}
