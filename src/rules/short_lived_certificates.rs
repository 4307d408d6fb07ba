//! `short-lived-certificates`: a stolen workload certificate is valid until it
//! expires. cert-manager Certificates must be short-lived (default at most
//! 24h; cert-manager's own default of 90 days counts as too long) and never
//! for a bare `*`. Wildcard names and a `renewBefore` missing or over half the
//! duration are reported as advice.

use std::time::Duration;

use crate::certmanager::Certificate;
use crate::duration::{format_duration, parse_go_duration};
use crate::rules::{Context, Finding, RuleId};

const ID: RuleId = RuleId::ShortLivedCertificates;
/// cert-manager's default `duration`.
const CERT_MANAGER_DEFAULT: Duration = Duration::from_secs(90 * 24 * 3600);

pub fn check(cert: &Certificate, ctx: &Context) -> Vec<Finding> {
    let subject = format!(
        "certificate {}/{}",
        cert.metadata.namespace.as_deref().unwrap_or_default(),
        cert.metadata.name.as_deref().unwrap_or_default()
    );
    let max = ctx.config.max_certificate_duration;
    let max_text = format_duration(max);
    let mut findings = Vec::new();
    let duration = match cert.spec.duration.as_deref() {
        None => {
            findings.push(Finding::new(
                ID,
                format!("{subject} sets no duration, so cert-manager issues it for 90 days (2160h), over the {max_text} maximum"),
                format!("set spec.duration to {max_text} or less"),
            ));
            CERT_MANAGER_DEFAULT
        }
        Some(text) => match parse_go_duration(text) {
            Ok(d) => {
                if d > max {
                    findings.push(Finding::new(
                        ID,
                        format!("{subject} is valid for {text}, over the {max_text} maximum"),
                        format!("set spec.duration to {max_text} or less"),
                    ));
                }
                d
            }
            Err(e) => {
                findings.push(Finding::new(
                    ID,
                    format!("{subject} has an unreadable spec.duration: {e}"),
                    format!("set spec.duration to a Go duration of at most {max_text}, e.g. 24h"),
                ));
                return findings;
            }
        },
    };
    for name in &cert.spec.dns_names {
        if name.trim() == "*" {
            findings.push(Finding::new(
                ID,
                format!("{subject} is issued for the bare name \"*\", which matches every host"),
                "list the workload's own DNS names in spec.dnsNames",
            ));
        } else if name.starts_with("*.") {
            findings.push(Finding::advisory(
                ID,
                format!("{subject} is issued for the wildcard {name}, valid for every service it covers"),
                "list the workload's own DNS names instead of a wildcard",
            ));
        }
    }
    match cert.spec.renew_before.as_deref().map(parse_go_duration) {
        None => findings.push(Finding::advisory(
            ID,
            format!("{subject} sets no renewBefore"),
            format!(
                "set spec.renewBefore to at most half the duration ({})",
                format_duration(duration / 2)
            ),
        )),
        Some(Ok(renew)) if renew > duration / 2 => findings.push(Finding::advisory(
            ID,
            format!(
                "{subject} renews {} before expiry, more than half its {} lifetime",
                format_duration(renew),
                format_duration(duration)
            ),
            format!(
                "set spec.renewBefore to at most {}",
                format_duration(duration / 2)
            ),
        )),
        Some(Err(e)) => findings.push(Finding::advisory(
            ID,
            format!("{subject} has an unreadable spec.renewBefore: {e}"),
            format!(
                "set spec.renewBefore to at most {}",
                format_duration(duration / 2)
            ),
        )),
        Some(Ok(_)) => {}
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::World;

    fn cert(spec: serde_json::Value) -> Certificate {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": spec}),
        )
        .unwrap()
    }

    fn run(spec: serde_json::Value) -> Vec<Finding> {
        check(&cert(spec), &World::enrolled_shop().ctx())
    }

    #[test]
    fn accepts_a_short_lived_certificate_renewed_in_time() {
        assert!(run(serde_json::json!({"duration": "24h", "renewBefore": "8h", "dnsNames": ["web.shop.svc"]})).is_empty());
        assert!(run(serde_json::json!({"duration": "1h30m", "renewBefore": "45m"})).is_empty());
    }

    #[test]
    fn rejects_long_and_default_durations() {
        let f = run(serde_json::json!({"duration": "8760h", "renewBefore": "1h"}));
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message
                .contains("valid for 8760h, over the 24h maximum"),
            "{}",
            f[0].message
        );
        assert!(!f[0].advisory);
        let f = run(serde_json::json!({"renewBefore": "1h"}));
        assert!(f[0].message.contains("90 days"));
        let f = run(serde_json::json!({"duration": "two days"}));
        assert!(f[0].message.contains("unreadable"));
    }

    #[test]
    fn bare_star_is_a_violation_and_wildcards_are_advice() {
        let f = run(
            serde_json::json!({"duration": "1h", "renewBefore": "20m", "dnsNames": ["*", "*.shop.svc.cluster.local"]}),
        );
        assert_eq!(f.len(), 2);
        assert!(!f[0].advisory && f[0].message.contains("bare name \"*\""));
        assert!(f[1].advisory && f[1].message.contains("wildcard *.shop.svc.cluster.local"));
    }

    #[test]
    fn renew_before_missing_or_over_half_is_advice() {
        let f = run(serde_json::json!({"duration": "24h"}));
        assert!(f[0].advisory && f[0].message.contains("no renewBefore"));
        let f = run(serde_json::json!({"duration": "24h", "renewBefore": "13h"}));
        assert!(
            f[0].advisory && f[0].message.contains("more than half its 24h lifetime"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn the_maximum_is_configurable() {
        let mut world = World::enrolled_shop();
        world.config =
            crate::config::Config::from_yaml("certificates: {maxDuration: 2160h}\n").unwrap();
        assert!(check(
            &cert(serde_json::json!({"duration": "720h", "renewBefore": "240h"})),
            &world.ctx()
        )
        .is_empty());
    }
}
