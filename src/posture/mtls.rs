//! Istio's PeerAuthentication precedence, as a pure function over policies:
//! workload-selector policy > namespace-wide policy > mesh-wide policy in the
//! root namespace > Istio's default, PERMISSIVE. `UNSET` inherits from the
//! level above; `portLevelMtls` only counts on a workload-selector policy;
//! when several policies match at one level, the oldest wins.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::istio::{older, MtlsMode, PeerAuthentication};

/// A policy that decided something, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl PolicyRef {
    pub fn of(kind: &'static str, meta: &ObjectMeta) -> Self {
        PolicyRef {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The resolved mode and who decided it (`None`: Istio's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub mode: MtlsMode,
    pub by: Option<PolicyRef>,
}

impl fmt::Display for Decided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.by {
            Some(policy) => write!(f, "{} (set by {policy})", self.mode.as_str()),
            None => write!(
                f,
                "{} (no PeerAuthentication applies: Istio's default)",
                self.mode.as_str()
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveMtls {
    /// The mode of every port without a port-level override.
    pub workload: Decided,
    /// Port-level overrides of the deciding workload policy, resolved.
    pub ports: Vec<(String, Decided)>,
}

impl EffectiveMtls {
    /// STRICT on every port.
    pub fn is_strict(&self) -> bool {
        self.workload.mode == MtlsMode::Strict
            && self.ports.iter().all(|(_, d)| d.mode == MtlsMode::Strict)
    }

    /// Each place where the mode is not STRICT, described.
    pub fn weaknesses(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.workload.mode != MtlsMode::Strict {
            out.push(format!("mTLS is {}", self.workload));
        }
        for (port, decided) in &self.ports {
            if decided.mode != MtlsMode::Strict {
                out.push(format!("port {port} is {decided}"));
            }
        }
        out
    }
}

fn oldest<'a>(
    policies: impl Iterator<Item = &'a PeerAuthentication>,
) -> Option<&'a PeerAuthentication> {
    policies.reduce(|a, b| {
        if older(&b.metadata, &a.metadata) {
            b
        } else {
            a
        }
    })
}

/// Composes the effective mode. `labels: None` asks for the namespace-level
/// posture (no workload policy considered).
pub fn compose<'a>(
    root: impl Iterator<Item = &'a PeerAuthentication>,
    namespace: impl Iterator<Item = &'a PeerAuthentication>,
    labels: Option<&BTreeMap<String, String>>,
) -> EffectiveMtls {
    // Policies that target gateways or waypoints do not set a pod's mode.
    let usable = |p: &&PeerAuthentication| !p.spec.targets.is_targeted();
    let mesh = oldest(root.filter(usable).filter(|p| p.is_namespace_wide()));
    let mut ns_wide = Vec::new();
    let mut selected = Vec::new();
    for policy in namespace.filter(usable) {
        if policy.is_namespace_wide() {
            ns_wide.push(policy);
        } else if let (Some(labels), Some(selector)) = (labels, &policy.spec.selector) {
            if selector.matches(labels) {
                selected.push(policy);
            }
        }
    }
    let namespace_policy = oldest(ns_wide.into_iter());
    let workload_policy = oldest(selected.into_iter());

    let mut decided = Decided {
        mode: MtlsMode::Permissive,
        by: None,
    };
    for policy in [mesh, namespace_policy, workload_policy]
        .into_iter()
        .flatten()
    {
        if policy.mode() != MtlsMode::Unset {
            decided = Decided {
                mode: policy.mode(),
                by: Some(PolicyRef::of("PeerAuthentication", &policy.metadata)),
            };
        }
    }
    let ports = workload_policy
        .map(|policy| port_modes(policy, &decided))
        .unwrap_or_default();
    EffectiveMtls {
        workload: decided,
        ports,
    }
}

/// The workload policy's port-level modes; an unset one keeps `decided`.
fn port_modes(policy: &PeerAuthentication, decided: &Decided) -> Vec<(String, Decided)> {
    policy
        .spec
        .port_level_mtls
        .iter()
        .map(|(port, mtls)| {
            let port_decided = match mtls.mode() {
                MtlsMode::Unset => decided.clone(),
                mode => Decided {
                    mode,
                    by: Some(PolicyRef::of("PeerAuthentication", &policy.metadata)),
                },
            };
            (port.clone(), port_decided)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pa(ns: &str, name: &str, created: &str, spec: Value) -> PeerAuthentication {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": spec
        }))
        .unwrap()
    }

    /// The mesh-wide policy in the root namespace.
    fn mesh_wide(mode: &str) -> [PeerAuthentication; 1] {
        [pa(
            "istio-system",
            "default",
            T1,
            json!({"mtls": {"mode": mode}}),
        )]
    }

    const T1: &str = "2026-01-01T00:00:00Z";
    const T2: &str = "2026-02-01T00:00:00Z";

    fn labels(app: &str) -> BTreeMap<String, String> {
        [("app".to_owned(), app.to_owned())].into()
    }

    fn mode(
        root: &[PeerAuthentication],
        ns: &[PeerAuthentication],
        app: Option<&str>,
    ) -> EffectiveMtls {
        let l = app.map(labels);
        compose(root.iter(), ns.iter(), l.as_ref())
    }

    #[test]
    fn default_is_permissive_when_nothing_applies() {
        let m = mode(&[], &[], Some("web"));
        assert_eq!(
            m.workload,
            Decided {
                mode: MtlsMode::Permissive,
                by: None
            }
        );
        assert!(!m.is_strict());
        assert!(m.weaknesses()[0].contains("Istio's default"));
    }

    #[test]
    fn mesh_wide_strict_applies_everywhere() {
        let root = mesh_wide("STRICT");
        let m = mode(&root, &[], Some("web"));
        assert!(m.is_strict());
        assert_eq!(
            m.workload.by.unwrap().to_string(),
            "PeerAuthentication istio-system/default"
        );
    }

    #[test]
    fn root_namespace_policy_with_selector_is_not_mesh_wide() {
        let root = [pa(
            "istio-system",
            "gw",
            T1,
            json!({"selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "STRICT"}}),
        )];
        assert!(!mode(&root, &[], Some("web")).is_strict());
    }

    #[test]
    fn namespace_overrides_mesh_and_workload_overrides_namespace() {
        let root = mesh_wide("STRICT");
        let ns = [
            pa("shop", "ns", T1, json!({"mtls": {"mode": "PERMISSIVE"}})),
            pa(
                "shop",
                "web",
                T1,
                json!({"selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "STRICT"}}),
            ),
        ];
        assert_eq!(
            mode(&root, &ns, Some("other")).workload.mode,
            MtlsMode::Permissive
        );
        assert_eq!(
            mode(&root, &ns, Some("web")).workload.mode,
            MtlsMode::Strict
        );
        // Namespace-level posture ignores workload policies.
        assert_eq!(mode(&root, &ns, None).workload.mode, MtlsMode::Permissive);
    }

    #[test]
    fn unset_and_missing_mtls_inherit_from_the_parent() {
        let root = mesh_wide("STRICT");
        let ns = [
            pa("shop", "ns", T1, json!({"mtls": {"mode": "UNSET"}})),
            pa(
                "shop",
                "web",
                T1,
                json!({"selector": {"matchLabels": {"app": "web"}}}),
            ),
        ];
        let m = mode(&root, &ns, Some("web"));
        assert!(m.is_strict());
        assert_eq!(m.workload.by.unwrap().namespace, "istio-system");
    }

    #[test]
    fn port_level_overrides_apply_only_with_a_selector() {
        let ns = [
            pa(
                "shop",
                "ns",
                T1,
                json!({"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}}),
            ),
            pa(
                "shop",
                "web",
                T1,
                json!({"selector": {"matchLabels": {"app": "web"}},
                "portLevelMtls": {"9080": {"mode": "DISABLE"}, "9090": {"mode": "UNSET"}}}),
            ),
        ];
        // Without a matching selector the namespace's port map is ignored.
        assert!(mode(&[], &ns, Some("other")).is_strict());
        let m = mode(&[], &ns, Some("web"));
        assert!(!m.is_strict());
        assert_eq!(m.workload.mode, MtlsMode::Strict);
        let ports: Vec<_> = m.ports.iter().map(|(p, d)| (p.as_str(), d.mode)).collect();
        assert_eq!(
            ports,
            [("9080", MtlsMode::Disable), ("9090", MtlsMode::Strict)]
        );
        assert!(m.weaknesses()[0]
            .starts_with("port 9080 is DISABLE (set by PeerAuthentication shop/web)"));
    }

    #[test]
    fn oldest_wins_among_policies_at_one_level() {
        let ns = [
            pa("shop", "newer", T2, json!({"mtls": {"mode": "STRICT"}})),
            pa("shop", "older", T1, json!({"mtls": {"mode": "PERMISSIVE"}})),
        ];
        let m = mode(&[], &ns, Some("web"));
        assert_eq!(m.workload.mode, MtlsMode::Permissive);
        assert_eq!(m.workload.by.unwrap().name, "older");
        let workload = [
            pa(
                "shop",
                "b",
                T1,
                json!({"selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "STRICT"}}),
            ),
            pa(
                "shop",
                "a",
                T1,
                json!({"selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "DISABLE"}}),
            ),
        ];
        // Same timestamp: the name breaks the tie.
        assert_eq!(
            mode(&[], &workload, Some("web")).workload.by.unwrap().name,
            "a"
        );
    }

    #[test]
    fn target_ref_policies_are_ignored_for_workload_mode() {
        let ns = [pa(
            "shop",
            "gw",
            T1,
            json!({"targetRef": {"kind": "Gateway", "name": "g"}, "mtls": {"mode": "STRICT"}}),
        )];
        assert!(!mode(&[], &ns, Some("web")).is_strict());
    }
}
