//! `short-lived-certificates`: a stolen workload certificate is valid until it
//! expires. Workload certificates must be short-lived (default at most 24h;
//! cert-manager's own default of 90 days counts as too long) and never for a
//! bare `*`. Wildcard names and a `renewBefore` missing or over half the
//! duration are reported as advice.
//!
//! Only the Certificates the mesh uses for workload identity are judged (see
//! [`workload_identity`]): an ingress certificate from an ACME issuer cannot
//! choose its lifetime, so asking it for a short `duration` would be a fix
//! nobody can apply.

use std::time::Duration;

use super::native_form::quote;
use super::native_form::{NativeCheck, NativeRule, Target};
use crate::certmanager::Certificate;
use crate::config::{CertificateSource, Config};
use crate::duration::{format_duration, parse_go_duration};
use crate::kinds::Kind;
use crate::rules::{Context, Finding, RuleId};

const ID: RuleId = RuleId::ShortLivedCertificates;
/// cert-manager's default `duration`.
const CERT_MANAGER_DEFAULT: Duration = Duration::from_secs(90 * 24 * 3600);

pub fn check(cert: &Certificate, ctx: &Context) -> Vec<Finding> {
    if workload_identity(cert, ctx.config).is_none() {
        return Vec::new();
    }
    let mut findings = Vec::new();
    let Some(duration) = lifetime(cert, ctx.config.max_certificate_duration, &mut findings) else {
        return findings;
    };
    findings.extend(
        cert.spec
            .dns_names
            .iter()
            .map(String::as_str)
            .filter_map(wildcard),
    );
    findings.extend(renewal(cert, duration));
    findings
}

/// The certificate's lifetime, reporting one over `max`; `None` when
/// `spec.duration` is unreadable, which leaves nothing else to judge.
fn lifetime(cert: &Certificate, max: Duration, findings: &mut Vec<Finding>) -> Option<Duration> {
    let max_text = format_duration(max);
    let shorten = || format!("set spec.duration to {max_text} or less");
    let Some(text) = cert.spec.duration.as_deref() else {
        if CERT_MANAGER_DEFAULT > max {
            findings.push(Finding::new(
                ID,
                format!("sets no duration, so cert-manager issues it for 90 days (2160h), over the {max_text} maximum"),
                shorten(),
            ));
        }
        return Some(CERT_MANAGER_DEFAULT);
    };
    match parse_go_duration(text) {
        Ok(duration) => {
            if duration > max {
                findings.push(Finding::new(
                    ID,
                    format!("is valid for {text}, over the {max_text} maximum"),
                    shorten(),
                ));
            }
            Some(duration)
        }
        Err(e) => {
            findings.push(Finding::new(
                ID,
                format!("has an unreadable spec.duration: {e}"),
                format!("set spec.duration to a Go duration of at most {max_text}, e.g. 24h"),
            ));
            None
        }
    }
}

/// A bare `*` is a violation; a wildcard name is advice.
fn wildcard(name: &str) -> Option<Finding> {
    if name.trim() == "*" {
        Some(Finding::new(
            ID,
            "is issued for the bare name \"*\", which matches every host",
            "list the workload's own DNS names in spec.dnsNames",
        ))
    } else if name.starts_with("*.") {
        Some(Finding::advisory(
            ID,
            format!("is issued for the wildcard {name}, valid for every service it covers"),
            "list the workload's own DNS names instead of a wildcard",
        ))
    } else {
        None
    }
}

/// Advice when `renewBefore` is missing, unreadable or over half `duration`.
fn renewal(cert: &Certificate, duration: Duration) -> Option<Finding> {
    let half = format_duration(duration / 2);
    let message = match cert.spec.renew_before.as_deref().map(parse_go_duration) {
        None => {
            return Some(Finding::advisory(
                ID,
                "sets no renewBefore",
                format!("set spec.renewBefore to at most half the duration ({half})"),
            ))
        }
        Some(Ok(renew)) if renew > duration / 2 => format!(
            "renews {} before expiry, more than half its {} lifetime",
            format_duration(renew),
            format_duration(duration)
        ),
        Some(Err(e)) => format!("has an unreadable spec.renewBefore: {e}"),
        Some(Ok(_)) => return None,
    };
    Some(Finding::advisory(
        ID,
        message,
        format!("set spec.renewBefore to at most {half}"),
    ))
}

/// Why `cert` is a mesh workload certificate, or `None` when it is not one
/// (and so not this rule's business): it comes from a configured issuer, it
/// fills the Secret `/mutate` mounts as the workload certificate, or it
/// carries a SPIFFE identity of the mesh's trust domain.
pub fn workload_identity(cert: &Certificate, config: &Config) -> Option<String> {
    if let Some(issuer) = cert.issuer() {
        if config.certificate_issuers.contains(&issuer) {
            return Some(format!("issued by {issuer}"));
        }
    }
    if let (CertificateSource::Secret(mounted), Some(secret)) = (
        &config.workload_certificates.source,
        cert.spec.secret_name.as_deref(),
    ) {
        if mounted == secret {
            return Some(format!("fills Secret {secret}, the workload certificate"));
        }
    }
    let spiffe = format!("spiffe://{}/", config.trust_domain);
    cert.spec
        .uris
        .iter()
        .find(|uri| uri.to_ascii_lowercase().starts_with(&spiffe))
        .map(|uri| format!("carries the mesh identity {uri}"))
}

/// CEL for [`parse_go_duration`] of the (trimmed) text in variable `$text`,
/// in seconds before the `Duration::MAX` check, or -1.0 when it is not one.
macro_rules! seconds {
    ($text:literal) => {
        concat!(
            "variables.",
            $text,
            " in ['0', '+'] ? 0.0 : ",
            "!variables.",
            $text,
            ".matches('^[+]?(([0-9]+[.]?[0-9]*|[.][0-9]+)(ns|us|µs|μs|ms|s|m|h))+$') ? -1.0 : ",
            "variables.",
            $text,
            ".findAll('([0-9]+[.]?[0-9]*|[.][0-9]+)(ns|us|µs|μs|ms|s|m|h)')",
            ".map(c, double(c.find('^[0-9.]+')) * (c.endsWith('ns') ? 1e-9 : ",
            "c.endsWith('us') || c.endsWith('µs') || c.endsWith('μs') ? 1e-6 : ",
            "c.endsWith('ms') ? 1e-3 : c.endsWith('s') ? 1.0 : c.endsWith('m') ? 60.0 : 3600.0))",
            ".sum()"
        )
    };
}

/// `Duration::try_from_secs_f64` refuses 2^64 seconds and more.
macro_rules! in_range {
    ($sum:literal) => {
        concat!(
            "variables.",
            $sum,
            " < 18446744073709551616.0 ? variables.",
            $sum,
            " : -1.0"
        )
    };
}

/// The CEL form (`crate::native`), with the configured issuers, mounted
/// Secret, trust domain and maximum compiled in. Durations are parsed the
/// way [`parse_go_duration`] parses them (trimmed, no sign but `+`, each
/// number an f64 times its unit, summed in order), not with CEL's
/// `duration()`, which is Go's parser: that one takes `-1h` and refuses
/// ` 24h` and anything over 2562047h, all of which the Rust rule reads
/// differently. An unreadable duration is -1.
pub const NATIVE: NativeRule = NativeRule {
    target: Target::One(Kind::Certificate),
    variables: &[
        ("spec", "object.?spec.orValue({})"),
        (
            "issuer",
            "has(variables.spec.issuerRef) ? [[variables.spec.issuerRef.?name.orValue(''), variables.spec.issuerRef.?kind.orValue('') == '' ? 'Issuer' : variables.spec.issuerRef.kind, variables.spec.issuerRef.?group.orValue('') == '' ? 'cert-manager.io' : variables.spec.issuerRef.group]] : []",
        ),
        (
            "inScope",
            "variables.issuer.exists(i, i in variables.issuers) || (has(variables.spec.secretName) && variables.spec.secretName in variables.mountedSecrets) || variables.spec.?uris.orValue([]).exists(u, u.lowerAscii().startsWith(variables.spiffePrefix))",
        ),
        ("durationText", "variables.spec.?duration.orValue('').trim()"),
        (
            "durationSum",
            concat!("!has(variables.spec.duration) ? 7776000.0 : ", seconds!("durationText")),
        ),
        ("durationSeconds", in_range!("durationSum")),
        ("renewText", "variables.spec.?renewBefore.orValue('').trim()"),
        ("renewSum", seconds!("renewText")),
        ("renewSeconds", in_range!("renewSum")),
        ("dnsNames", "variables.spec.?dnsNames.orValue([])"),
    ],
    config: Some(configured),
    checks: &[
        NativeCheck {
            expression: "!variables.inScope || has(variables.spec.duration) || 7776000.0 <= variables.maxSeconds",
            message: "'sets no duration, so cert-manager issues it for 90 days (2160h), over the ' + variables.maxText + ' maximum'",
            fix: "'set spec.duration to ' + variables.maxText + ' or less'",
            advisory: false,
        },
        NativeCheck {
            expression: "!variables.inScope || variables.durationSeconds >= 0.0 || variables.newDuration != variables.spec.duration",
            message: "'has an unreadable spec.duration: `' + variables.spec.duration + '` is not a duration like 24h, 90m or 1h30m'",
            fix: "'set spec.duration to a Go duration of at most ' + variables.maxText + ', e.g. 24h'",
            advisory: false,
        },
        NativeCheck {
            expression: "!variables.inScope || !has(variables.spec.duration) || variables.durationSeconds <= variables.maxSeconds || variables.newDuration != variables.spec.duration",
            message: "'is valid for ' + variables.spec.duration + ', over the ' + variables.maxText + ' maximum'",
            fix: "'set spec.duration to ' + variables.maxText + ' or less'",
            advisory: false,
        },
        NativeCheck {
            expression: "!variables.inScope || variables.durationSeconds < 0.0 || !variables.dnsNames.exists(n, n.trim() == '*')",
            message: "'is issued for the bare name \"*\", which matches every host'",
            fix: "\"list the workload's own DNS names in spec.dnsNames\"",
            advisory: false,
        },
        NativeCheck {
            expression: "!variables.inScope || variables.durationSeconds < 0.0 || !variables.dnsNames.exists(n, n.startsWith('*.'))",
            message: "'is issued for the wildcard ' + variables.dnsNames.filter(n, n.startsWith('*.'))[0] + ', valid for every service it covers'",
            fix: "\"list the workload's own DNS names instead of a wildcard\"",
            advisory: true,
        },
        NativeCheck {
            expression: "!variables.inScope || variables.durationSeconds < 0.0 || has(variables.spec.renewBefore)",
            message: "'sets no renewBefore'",
            fix: "'set spec.renewBefore to at most half the duration'",
            advisory: true,
        },
        NativeCheck {
            expression: "!variables.inScope || variables.durationSeconds < 0.0 || !has(variables.spec.renewBefore) || (variables.renewSeconds >= 0.0 && variables.renewSeconds <= variables.durationSeconds / 2.0)",
            message: "variables.renewSeconds < 0.0 ? 'has an unreadable spec.renewBefore: `' + variables.spec.renewBefore + '` is not a duration like 24h, 90m or 1h30m' : 'renews ' + variables.spec.renewBefore + ' before expiry, more than half its lifetime'",
            fix: "'set spec.renewBefore to at most half the duration'",
            advisory: true,
        },
    ],
};

/// The configured values [`NATIVE`] reads, as CEL literals.
fn configured(config: &Config) -> Vec<(&'static str, String)> {
    let issuers: Vec<String> = config
        .certificate_issuers
        .iter()
        .map(|i| {
            format!(
                "[{}, {}, {}]",
                quote(&i.name),
                quote(&i.kind),
                quote(&i.group)
            )
        })
        .collect();
    let mounted = match &config.workload_certificates.source {
        CertificateSource::Secret(name) => quote(name),
        CertificateSource::Sidecar => String::new(),
    };
    let max = config.max_certificate_duration;
    vec![
        // Not configuration, but declared here because these are the same
        // for `oldObject`: the webhook tolerates an UPDATE only for the
        // very finding the old object had, and the duration findings name
        // the text, so a still-too-long new text is refused.
        (
            "newDuration",
            "object.?spec.?duration.orValue('')".to_owned(),
        ),
        ("maxSeconds", format!("{:?}", max.as_secs_f64())),
        ("maxText", quote(&format_duration(max))),
        ("issuers", format!("[{}]", issuers.join(", "))),
        ("mountedSecrets", format!("[{mounted}]")),
        (
            "spiffePrefix",
            quote(&format!("spiffe://{}/", config.trust_domain)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{messages, object, World};

    /// A Certificate from the default workload issuer unless `spec` names
    /// another.
    fn cert(mut spec: serde_json::Value) -> Certificate {
        if spec.get("issuerRef").is_none() {
            spec["issuerRef"] = serde_json::json!({"name": "istio-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"});
        }
        object("shop", "web", spec)
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

    #[test]
    fn no_duration_is_fine_when_the_maximum_allows_90_days() {
        let no_duration = cert(serde_json::json!({"renewBefore": "720h"}));
        let mut world = World::enrolled_shop();
        for (max, expected) in [
            ("2400h", vec![]),
            ("2160h", vec![]),
            ("2159h", vec!["sets no duration, so cert-manager issues it for 90 days (2160h), over the 2159h maximum"]),
        ] {
            world.config =
                crate::config::Config::from_yaml(&format!("certificates: {{maxDuration: {max}}}\n"))
                    .unwrap();
            assert_eq!(messages(&check(&no_duration, &world.ctx())), expected, "{max}");
        }
    }

    #[test]
    fn ignores_certificates_outside_the_workload_scope() {
        // A Let's Encrypt ingress certificate: ACME ignores `duration`.
        let ingress = cert(serde_json::json!({
            "secretName": "shop-example-com-tls", "dnsNames": ["shop.example.com", "*"],
            "issuerRef": {"name": "letsencrypt-prod", "kind": "ClusterIssuer"}
        }));
        let world = World::enrolled_shop();
        assert_eq!(workload_identity(&ingress, &world.config), None);
        assert!(check(&ingress, &world.ctx()).is_empty());
        // Same name, other kind or group: another issuer.
        for issuer_ref in [
            serde_json::json!({"name": "istio-ca", "kind": "ClusterIssuer", "group": "awspca.cert-manager.io"}),
            serde_json::json!({"name": "istio-ca", "kind": "Vault"}),
        ] {
            let other = cert(serde_json::json!({"issuerRef": issuer_ref}));
            assert!(check(&other, &world.ctx()).is_empty(), "{issuer_ref}");
        }
    }

    #[test]
    fn scope_covers_configured_issuers_the_mounted_secret_and_spiffe_identities() {
        let mut world = World::enrolled_shop();
        let namespaced = cert(serde_json::json!({"issuerRef": {"name": "istio-ca"}}));
        assert_eq!(
            workload_identity(&namespaced, &world.config).as_deref(),
            Some("issued by Issuer istio-ca")
        );
        let spiffe = cert(serde_json::json!({
            "issuerRef": {"name": "vault", "kind": "ClusterIssuer"},
            "uris": ["spiffe://cluster.local/ns/shop/sa/web"]
        }));
        assert_eq!(
            workload_identity(&spiffe, &world.config).as_deref(),
            Some("carries the mesh identity spiffe://cluster.local/ns/shop/sa/web")
        );
        assert!(check(&spiffe, &world.ctx())[0].message.contains("90 days"));

        world.config = crate::config::Config::from_yaml(concat!(
            "workloadCertificates: {secretName: app-mtls}\n",
            "certificates: {issuerRefs: [{name: mesh-ca, kind: ClusterIssuer}]}\n"
        ))
        .unwrap();
        let mounted =
            cert(serde_json::json!({"secretName": "app-mtls", "issuerRef": {"name": "other"}}));
        assert!(check(&mounted, &world.ctx())[0].message.contains("90 days"));
        let configured =
            cert(serde_json::json!({"issuerRef": {"name": "mesh-ca", "kind": "ClusterIssuer"}}));
        assert!(check(&configured, &world.ctx())[0]
            .message
            .contains("90 days"));
        // istio-ca is no longer in scope once issuerRefs is set.
        assert!(check(&cert(serde_json::json!({})), &world.ctx()).is_empty());
    }

    /// The compiled policy's variables, by name.
    fn compiled_variables(yaml: &str) -> Vec<(String, String)> {
        let config = crate::config::Config::from_yaml(yaml).unwrap();
        let objects = crate::native::compile(&config).unwrap().objects;
        let policy = objects
            .iter()
            .find(|o| o["metadata"]["name"] == "meshgate-short-lived-certificates")
            .unwrap();
        let rules = &policy["spec"]["matchConstraints"]["resourceRules"];
        assert_eq!(
            rules,
            &serde_json::json!([{"apiGroups": ["cert-manager.io"], "apiVersions": ["v1"],
                "resources": ["certificates"], "operations": ["CREATE", "UPDATE"]}])
        );
        policy["spec"]["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let text = |key: &str| v[key].as_str().unwrap().to_owned();
                (text("name"), text("expression"))
            })
            .collect()
    }

    fn value<'a>(variables: &'a [(String, String)], name: &str) -> &'a str {
        &variables.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn the_native_form_compiles_the_default_configuration_in() {
        let v = compiled_variables("");
        assert_eq!(value(&v, "maxSeconds"), "86400.0");
        assert_eq!(value(&v, "maxText"), "\"24h\"");
        assert_eq!(
            value(&v, "issuers"),
            r#"[["istio-ca", "Issuer", "cert-manager.io"], ["istio-ca", "ClusterIssuer", "cert-manager.io"]]"#
        );
        assert_eq!(value(&v, "mountedSecrets"), "[]");
        assert_eq!(value(&v, "spiffePrefix"), "\"spiffe://cluster.local/\"");
        // UPDATE tolerance reads the same literals for the old object.
        assert_eq!(value(&v, "old_issuers"), value(&v, "issuers"));
        assert_eq!(
            value(&v, "old_durationText"),
            "variables.old_spec.?duration.orValue('').trim()"
        );
        assert_eq!(value(&v, "old_spec"), "oldObject.?spec.orValue({})");
    }

    #[test]
    fn the_native_form_follows_the_configuration() {
        let v = compiled_variables(concat!(
            "trustDomain: Example.org\n",
            "workloadCertificates: {secretName: app-mtls}\n",
            "certificates: {maxDuration: 1h30m, issuerRefs: [{name: mesh-ca, kind: ClusterIssuer}, {name: \"a\\\"b\"}]}\n"
        ));
        assert_eq!(value(&v, "maxSeconds"), "5400.0");
        assert_eq!(value(&v, "maxText"), "\"1h30m\"");
        assert_eq!(
            value(&v, "issuers"),
            r#"[["mesh-ca", "ClusterIssuer", "cert-manager.io"], ["a\"b", "Issuer", "cert-manager.io"]]"#
        );
        assert_eq!(value(&v, "mountedSecrets"), "[\"app-mtls\"]");
        // As in the Rust rule: the URI is lower-cased, the trust domain not.
        assert_eq!(value(&v, "spiffePrefix"), "\"spiffe://Example.org/\"");
    }

    #[test]
    fn the_native_form_parses_durations_like_the_rust_rule() {
        let sum = value(&compiled_variables(""), "durationSum").to_owned();
        // Trimmed, `0` and a lone `+`, no sign but `+`, f64 numbers by unit.
        assert!(
            sum.contains("variables.durationText in ['0', '+'] ? 0.0"),
            "{sum}"
        );
        assert!(
            sum.contains("matches('^[+]?(([0-9]+[.]?[0-9]*|[.][0-9]+)(ns|us|µs|μs|ms|s|m|h))+$')"),
            "{sum}"
        );
        assert!(!sum.contains("duration("), "Go's parser differs: {sum}");
        assert!(sum.starts_with("!has(variables.spec.duration) ? 7776000.0 : "));
        assert_eq!(
            CERT_MANAGER_DEFAULT.as_secs_f64(),
            7_776_000.0,
            "the CEL default"
        );
    }
}
