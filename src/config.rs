//! The YAML configuration shared by `serve` and `audit`: modes, per-rule
//! overrides, exempt namespaces and exemptions. Every field has a safe default;
//! anything unknown or inconsistent stops the program at start-up with an error
//! that names the field.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::certmanager::IssuerRef;
use crate::duration::parse_go_duration;
pub use crate::vocab::Mode;
use crate::vocab::RuleId;

mod certificates;
mod events;
pub(crate) mod exemption;
mod exemption_objects;
pub use certificates::{
    CertificateSource, WorkloadCertificates, DEFAULT_CERT_MOUNT_PATH, DEFAULT_CERT_VOLUME,
    DEFAULT_MAX_CERTIFICATE_DURATION, DEFAULT_WORKLOAD_ISSUER,
};
use certificates::{RawCertificates, RawWorkloadCertificates};
pub use events::EventSettings;
use events::RawEvents;
pub use exemption::Exemption;
use exemption::RawExemption;
use exemption_objects::RawExemptionObjects;
pub use exemption_objects::{ExemptionObjects, DEFAULT_MAX_EXEMPTION_DURATION};

/// What reviews that need the cluster's posture get while the caches are
/// still filling after start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhileSyncing {
    /// Fail closed: deny, saying why.
    Deny,
    /// Fail open: allow, with a warning.
    Allow,
}

/// The namespace label that lowers enforcement to audit for one namespace.
pub const NAMESPACE_MODE_LABEL: &str = "meshgate.io/mode";

pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
pub const DEFAULT_EXEMPT_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "istio-system",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error("config field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// The file as written; turned into [`Config`] by [`RawConfig::validate`].
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    mode: Option<Mode>,
    #[serde(default)]
    rules: BTreeMap<String, Mode>,
    mesh_root_namespace: Option<String>,
    trust_domain: Option<String>,
    cluster_domain: Option<String>,
    while_syncing: Option<WhileSyncing>,
    exempt_namespaces: Option<Vec<String>>,
    #[serde(default)]
    exemptions: Vec<RawExemption>,
    #[serde(default)]
    workload_certificates: RawWorkloadCertificates,
    #[serde(default)]
    certificates: RawCertificates,
    #[serde(default)]
    background_audit: RawBackgroundAudit,
    #[serde(default)]
    events: RawEvents,
    /// `exemptionObjects: {maxDuration: 2160h}`.
    #[serde(default)]
    exemption_objects: RawExemptionObjects,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBackgroundAudit {
    enabled: Option<bool>,
    interval: Option<String>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub rules: BTreeMap<RuleId, Mode>,
    pub mesh_root_namespace: String,
    /// The mesh's trust domain: workload identities are
    /// `spiffe://<trustDomain>/ns/<ns>/sa/<sa>`.
    pub trust_domain: String,
    /// The cluster's DNS domain: Services are `<name>.<ns>.svc.<clusterDomain>`.
    pub cluster_domain: String,
    pub while_syncing: WhileSyncing,
    pub exempt_namespaces: Vec<String>,
    pub exemptions: Vec<Exemption>,
    pub workload_certificates: WorkloadCertificates,
    /// cert-manager Certificates may not outlive this.
    pub max_certificate_duration: Duration,
    /// Certificates from these issuers are workload certificates, checked
    /// by `short-lived-certificates`.
    pub certificate_issuers: Vec<IssuerRef>,
    pub background_audit: BackgroundAudit,
    /// Kubernetes Events on findings (`events`).
    pub events: EventSettings,
    /// `exemptionObjects`: limits on MeshExemption / ClusterMeshExemption.
    pub exemption_objects: ExemptionObjects,
}

/// `backgroundAudit`: judging what already runs, in `serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackgroundAudit {
    pub enabled: bool,
    /// A full re-judge of every object, as a safety net behind the watches.
    pub interval: Duration,
}

pub const DEFAULT_BACKGROUND_INTERVAL: Duration = Duration::from_secs(600);

impl Default for BackgroundAudit {
    fn default() -> Self {
        BackgroundAudit {
            enabled: true,
            interval: DEFAULT_BACKGROUND_INTERVAL,
        }
    }
}

impl Default for Config {
    #[allow(
        clippy::expect_used,
        reason = "a constant input; the config tests parse the defaults"
    )]
    fn default() -> Self {
        RawConfig::default()
            .validate()
            .expect("the default configuration is valid")
    }
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        // An empty file is a valid "all defaults" config.
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            crate::strict::from_yaml(text).map_err(|source| ConfigError::Parse {
                path: "<inline>".into(),
                source,
            })?
        };
        raw.validate()
    }

    /// Adds meshgate's own namespace to the exempt list, so the webhook never
    /// blocks its own pods from starting (a classic deadlock).
    pub fn with_own_namespace(mut self, namespace: &str) -> Self {
        if !namespace.is_empty() && !self.exempt_namespaces.iter().any(|n| n == namespace) {
            self.exempt_namespaces.push(namespace.to_owned());
        }
        self
    }

    pub fn is_exempt_namespace(&self, namespace: &str) -> bool {
        self.exempt_namespaces.iter().any(|n| n == namespace)
    }
}

impl RawConfig {
    /// Checks every field, in the file's order, and fills in the defaults.
    fn validate(self) -> Result<Config, ConfigError> {
        let Self {
            mode,
            rules,
            mesh_root_namespace,
            trust_domain,
            cluster_domain,
            while_syncing,
            exempt_namespaces,
            exemptions,
            workload_certificates,
            certificates,
            background_audit,
            events,
            exemption_objects,
        } = self;
        let rules = rule_modes(rules)?;
        let mesh_root_namespace = mesh_root_namespace_or_default(mesh_root_namespace)?;
        let trust_domain = trust_domain_or_default(trust_domain)?;
        let cluster_domain = cluster_domain_or_trust_domain(cluster_domain, &trust_domain)?;
        let exempt_namespaces = exempt_namespaces_or_default(exempt_namespaces)?;
        let exemptions = exemptions
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.validate(&format!("exemptions[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let workload_certificates = workload_certificates.validate()?;
        let (certificate_issuers, max_certificate_duration) = certificates.validate()?;
        let background_audit = background_audit.validate()?;
        let events = events.validate()?;
        let exemption_objects = exemption_objects.validate()?;
        Ok(Config {
            exemption_objects,
            background_audit,
            events,
            mode: mode.unwrap_or(Mode::Enforce),
            rules,
            mesh_root_namespace,
            trust_domain,
            cluster_domain,
            while_syncing: while_syncing.unwrap_or(WhileSyncing::Deny),
            exempt_namespaces,
            exemptions,
            workload_certificates,
            max_certificate_duration,
            certificate_issuers,
        })
    }
}

impl RawBackgroundAudit {
    fn validate(self) -> Result<BackgroundAudit, ConfigError> {
        let interval = match self.interval {
            None => DEFAULT_BACKGROUND_INTERVAL,
            Some(text) => parse_go_duration(&text)
                .map_err(|e| ConfigError::invalid("backgroundAudit.interval", e.to_string()))?,
        };
        if interval < Duration::from_secs(10) {
            return Err(ConfigError::invalid(
                "backgroundAudit.interval",
                "must be at least 10s (the watches keep results current; this is a safety net)",
            ));
        }
        Ok(BackgroundAudit {
            enabled: self.enabled.unwrap_or(true),
            interval,
        })
    }
}

fn rule_modes(rules: BTreeMap<String, Mode>) -> Result<BTreeMap<RuleId, Mode>, ConfigError> {
    rules
        .into_iter()
        .map(|(id, mode)| Ok((parse_rule_id(&id, &format!("rules.{id}"))?, mode)))
        .collect()
}

fn mesh_root_namespace_or_default(namespace: Option<String>) -> Result<String, ConfigError> {
    let namespace = namespace.unwrap_or_else(|| DEFAULT_ROOT_NAMESPACE.to_owned());
    if namespace.trim().is_empty() {
        return Err(ConfigError::invalid(
            "meshRootNamespace",
            "must not be empty",
        ));
    }
    Ok(namespace)
}

fn trust_domain_or_default(trust_domain: Option<String>) -> Result<String, ConfigError> {
    let trust_domain = trust_domain.unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned());
    if trust_domain.trim().is_empty() || trust_domain.starts_with('.') {
        return Err(ConfigError::invalid(
            "trustDomain",
            "must be a DNS suffix such as cluster.local",
        ));
    }
    Ok(trust_domain)
}

/// Defaults to the trust domain, which served as the DNS suffix before
/// clusterDomain existed, so older configurations keep their meaning.
fn cluster_domain_or_trust_domain(
    cluster_domain: Option<String>,
    trust_domain: &str,
) -> Result<String, ConfigError> {
    let cluster_domain = cluster_domain.unwrap_or_else(|| trust_domain.to_owned());
    if cluster_domain.trim().is_empty()
        || cluster_domain.starts_with('.')
        || cluster_domain.contains('*')
    {
        return Err(ConfigError::invalid(
            "clusterDomain",
            "must be a DNS suffix such as cluster.local",
        ));
    }
    Ok(cluster_domain)
}

fn exempt_namespaces_or_default(
    namespaces: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    let namespaces = namespaces.unwrap_or_else(|| {
        DEFAULT_EXEMPT_NAMESPACES
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    });
    if let Some(i) = namespaces.iter().position(|ns| ns.trim().is_empty()) {
        return Err(ConfigError::invalid(
            format!("exemptNamespaces[{i}]"),
            "must not be empty",
        ));
    }
    Ok(namespaces)
}

fn parse_rule_id(id: &str, field: &str) -> Result<RuleId, ConfigError> {
    id.parse().map_err(|_| {
        let known: Vec<_> = RuleId::ALL.iter().map(|r| r.as_str()).collect();
        ConfigError::invalid(
            field,
            format!("unknown rule id `{id}` (known: {})", known.join(", ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        Config::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_gives_safe_defaults() {
        let config = Config::from_yaml("").unwrap();
        assert_eq!(config.mode, Mode::Enforce);
        assert_eq!(config.mesh_root_namespace, "istio-system");
        assert!(config.is_exempt_namespace("kube-system"));
        assert!(config.is_exempt_namespace("istio-system"));
        assert!(!config.is_exempt_namespace("shop"));
    }

    #[test]
    fn per_rule_mode_overrides_global_mode() {
        let config =
            Config::from_yaml("mode: audit\nrules:\n  no-host-network: enforce\n").unwrap();
        assert_eq!(RuleId::NoHostNetwork.mode_in(&config), Mode::Enforce);
        assert_eq!(RuleId::SidecarRequired.mode_in(&config), Mode::Audit);
    }

    #[test]
    fn advisory_rules_default_to_audit_unless_configured() {
        let config = Config::from_yaml("").unwrap();
        assert_eq!(RuleId::DenyAllOverridesAllow.mode_in(&config), Mode::Audit);
        let config = Config::from_yaml("rules: {deny-all-overrides-allow: enforce}\n").unwrap();
        assert_eq!(
            RuleId::DenyAllOverridesAllow.mode_in(&config),
            Mode::Enforce
        );
        let config = Config::from_yaml("mode: off\n").unwrap();
        assert_eq!(RuleId::DenyAllOverridesAllow.mode_in(&config), Mode::Off);
    }

    #[test]
    fn posture_settings_have_safe_defaults() {
        let config = Config::from_yaml("").unwrap();
        assert_eq!(config.trust_domain, "cluster.local");
        assert_eq!(config.while_syncing, WhileSyncing::Deny);
        let config = Config::from_yaml("whileSyncing: allow\ntrustDomain: example.org\n").unwrap();
        assert_eq!(config.while_syncing, WhileSyncing::Allow);
        assert!(err("whileSyncing: maybe\n").contains("whileSyncing"));
    }

    #[test]
    fn workload_certificate_and_duration_settings() {
        let config = Config::from_yaml("").unwrap();
        assert_eq!(config.workload_certificates.volume_name, "istio-certs");
        assert_eq!(config.workload_certificates.mount_path, "/etc/istio-certs");
        assert_eq!(
            config.workload_certificates.source,
            CertificateSource::Sidecar
        );
        assert_eq!(config.max_certificate_duration, Duration::from_secs(86400));
        let config = Config::from_yaml(
            "workloadCertificates: {secretName: web-tls, mountPath: /var/run/certs}\ncertificates: {maxDuration: 1h30m}\n",
        )
        .unwrap();
        assert_eq!(
            config.workload_certificates.source,
            CertificateSource::Secret("web-tls".into())
        );
        assert_eq!(config.max_certificate_duration, Duration::from_secs(5400));
        assert!(err("workloadCertificates: {mountPath: relative}\n")
            .contains("workloadCertificates.mountPath"));
        assert!(err("workloadCertificates: {volumeName: Bad_Name}\n")
            .contains("workloadCertificates.volumeName"));
        assert!(err("certificates: {maxDuration: 1d}\n").contains("certificates.maxDuration"));
        assert!(err("certificates: {maxDuration: 24h, other: 1}\n").contains("other"));
    }

    #[test]
    fn certificate_issuer_refs_default_to_istio_ca_and_are_validated() {
        let config = Config::from_yaml("").unwrap();
        assert_eq!(
            config.certificate_issuers,
            [
                IssuerRef::new("istio-ca", "Issuer", "cert-manager.io"),
                IssuerRef::new("istio-ca", "ClusterIssuer", "cert-manager.io"),
            ]
        );
        let config = Config::from_yaml(concat!(
            "certificates:\n  issuerRefs:\n  - {name: mesh-ca, kind: ClusterIssuer}\n",
            "  - {name: pca, kind: AWSPCAClusterIssuer, group: awspca.cert-manager.io}\n  - {name: local}\n"
        ))
        .unwrap();
        assert_eq!(
            config.certificate_issuers,
            [
                IssuerRef::new("mesh-ca", "ClusterIssuer", "cert-manager.io"),
                IssuerRef::new("pca", "AWSPCAClusterIssuer", "awspca.cert-manager.io"),
                IssuerRef::new("local", "Issuer", "cert-manager.io"),
            ]
        );
        assert!(Config::from_yaml("certificates: {issuerRefs: []}\n")
            .unwrap()
            .certificate_issuers
            .is_empty());
        let e = err("certificates:\n  issuerRefs:\n  - {name: a}\n  - {kind: ClusterIssuer}\n");
        assert!(e.contains("certificates.issuerRefs[1].name"), "{e}");
        let e = err("certificates: {issuerRefs: [{name: a, kind: Issuers}]}\n");
        assert!(
            e.contains("certificates.issuerRefs[0].kind") && e.contains("`Issuers`"),
            "{e}"
        );
        let e = err("certificates: {issuerRefs: [{name: a, namespace: b}]}\n");
        assert!(e.contains("namespace"), "{e}");
    }

    #[test]
    fn cluster_domain_follows_the_trust_domain_unless_set() {
        assert_eq!(
            Config::from_yaml("").unwrap().cluster_domain,
            "cluster.local"
        );
        let config = Config::from_yaml("trustDomain: corp.internal\n").unwrap();
        assert_eq!(config.cluster_domain, "corp.internal");
        let config =
            Config::from_yaml("trustDomain: example.org\nclusterDomain: cluster.local\n").unwrap();
        assert_eq!(config.cluster_domain, "cluster.local");
        assert!(err("clusterDomain: .local\n").contains("clusterDomain"));
    }

    #[test]
    fn own_namespace_is_always_exempt() {
        let config = Config::from_yaml("exemptNamespaces: [kube-system]\n")
            .unwrap()
            .with_own_namespace("meshgate");
        assert!(config.is_exempt_namespace("meshgate"));
        assert!(!config.is_exempt_namespace("istio-system"));
    }

    #[test]
    fn rejects_blank_reason() {
        let e = err("exemptions:\n- rules: [no-host-network]\n  namespace: m\n  reason: '  '\n");
        assert!(e.contains("exemptions[0].reason"), "{e}");
    }

    #[test]
    fn rejects_unknown_rule_ids_in_rules_and_exemptions() {
        let e = err("rules:\n  no-such-rule: audit\n");
        assert!(e.contains("rules.no-such-rule"), "{e}");
        let e =
            err("exemptions:\n- rules: [sidecar-required, nope]\n  namespace: a\n  reason: r\n");
        assert!(e.contains("exemptions[0].rules[1]"), "{e}");
        assert!(e.contains("`nope`"), "{e}");
    }

    #[test]
    fn rejects_unknown_mode_and_unknown_keys() {
        let e = err("mode: block\n");
        assert!(e.contains("mode") && e.contains("block"), "{e}");
        let e = err("modes: audit\n");
        assert!(e.contains("modes"), "{e}");
        let e = err(
            "exemptions:\n- rules: [no-host-network]\n  namespace: a\n  reason: r\n  nmae: x\n",
        );
        assert!(e.contains("nmae"), "{e}");
    }
}
