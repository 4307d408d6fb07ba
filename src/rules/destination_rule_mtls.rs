//! `destination-rule-mtls`: client-side TLS settings override Istio's
//! automatic mTLS. DISABLE sends plaintext; SIMPLE and MUTUAL replace the
//! workload's mesh identity with other certificates. To an in-mesh host the
//! mode must stay ISTIO_MUTUAL (or be left out).

use crate::istio::{ClientTls, DestinationRule, TrafficPolicy};
use crate::rules::{Context, Finding, RuleId};

const ID: RuleId = RuleId::DestinationRuleMtls;

pub fn check(dr: &DestinationRule, ctx: &Context) -> Vec<Finding> {
    let host = dr.spec.host.as_str();
    if !is_in_mesh(host, &ctx.config.trust_domain) {
        return vec![];
    }
    let subject = format!(
        "destinationrule {}/{}",
        dr.metadata.namespace.as_deref().unwrap_or_default(),
        dr.metadata.name.as_deref().unwrap_or_default()
    );
    let mut findings = Vec::new();
    let mut check_policy = |policy: &TrafficPolicy, place: &str| {
        let mut check_tls = |tls: &Option<ClientTls>, at: String| {
            let Some(mode) = tls.as_ref().and_then(|t| t.mode.as_deref()) else {
                return;
            };
            if matches!(mode, "DISABLE" | "SIMPLE" | "MUTUAL") {
                findings.push(Finding::new(
                    ID,
                    format!("{subject} sets {at}tls.mode: {mode} for in-mesh host {host}, replacing the mesh's mTLS"),
                    format!("set {at}tls.mode: ISTIO_MUTUAL, or remove it to keep Istio's automatic mTLS"),
                ));
            }
        };
        check_tls(&policy.tls, format!("{place}trafficPolicy."));
        for (i, port) in policy.port_level_settings.iter().enumerate() {
            let number = port
                .port
                .as_ref()
                .and_then(|p| p.number)
                .map(|n| format!(" (port {n})"))
                .unwrap_or_default();
            check_tls(
                &port.tls,
                format!("{place}trafficPolicy.portLevelSettings[{i}]{number}."),
            );
        }
    };
    if let Some(policy) = &dr.spec.traffic_policy {
        check_policy(policy, "");
    }
    for subset in &dr.spec.subsets {
        if let Some(policy) = &subset.traffic_policy {
            check_policy(policy, &format!("subset {} ", subset.name));
        }
    }
    findings
}

/// Short names, `*.svc`, `*.svc.<trust domain>`, `*.<trust domain>` and
/// wildcards that cover them are in the mesh; anything else is external.
pub fn is_in_mesh(host: &str, trust_domain: &str) -> bool {
    let host = host.trim().trim_end_matches('.');
    if host == "*" || !host.contains('.') {
        return true;
    }
    let cluster_suffix = format!(".svc.{trust_domain}");
    if let Some(wildcard) = host.strip_prefix('*') {
        // "*.local" covers "reviews.shop.svc.cluster.local".
        return cluster_suffix.ends_with(wildcard)
            || wildcard.ends_with(".svc")
            || wildcard.ends_with(&format!(".{trust_domain}"));
    }
    host.ends_with(".svc")
        || host.ends_with(&cluster_suffix)
        || host.ends_with(&format!(".{trust_domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::World;

    fn dr(spec: serde_json::Value) -> DestinationRule {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "r", "namespace": "shop"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn in_mesh_hosts() {
        for host in [
            "reviews",
            "reviews.shop.svc",
            "reviews.shop.svc.cluster.local",
            "*.shop.svc.cluster.local",
            "*.local",
            "*",
        ] {
            assert!(is_in_mesh(host, "cluster.local"), "{host}");
        }
        for host in ["api.stripe.com", "*.example.com", "reviews.shop"] {
            assert!(!is_in_mesh(host, "cluster.local"), "{host}");
        }
        assert!(is_in_mesh(
            "reviews.shop.svc.corp.internal",
            "corp.internal"
        ));
    }

    #[test]
    fn rejects_disable_simple_mutual_at_every_level() {
        let world = World::enrolled_shop();
        let f = check(
            &dr(serde_json::json!({
                "host": "reviews.bookinfo.svc.cluster.local",
                "trafficPolicy": {"tls": {"mode": "DISABLE"}, "portLevelSettings": [{"port": {"number": 9080}, "tls": {"mode": "SIMPLE"}}]},
                "subsets": [{"name": "v2", "trafficPolicy": {"tls": {"mode": "MUTUAL"}}}, {"name": "v3", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}]
            })),
            &world.ctx(),
        );
        assert_eq!(f.len(), 3);
        assert!(f[0].message.contains("sets trafficPolicy.tls.mode: DISABLE for in-mesh host reviews.bookinfo.svc.cluster.local"), "{}", f[0].message);
        assert!(
            f[1].message
                .contains("portLevelSettings[0] (port 9080).tls.mode: SIMPLE"),
            "{}",
            f[1].message
        );
        assert!(
            f[2].message
                .contains("subset v2 trafficPolicy.tls.mode: MUTUAL"),
            "{}",
            f[2].message
        );
    }

    #[test]
    fn accepts_istio_mutual_no_tls_and_external_hosts() {
        let world = World::enrolled_shop();
        assert!(check(&dr(serde_json::json!({"host": "reviews", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}})), &world.ctx()).is_empty());
        assert!(check(&dr(serde_json::json!({"host": "reviews"})), &world.ctx()).is_empty());
        assert!(check(&dr(serde_json::json!({"host": "api.stripe.com", "trafficPolicy": {"tls": {"mode": "SIMPLE"}}})), &world.ctx()).is_empty());
    }
}
