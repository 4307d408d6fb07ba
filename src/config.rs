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
use crate::rules::RuleId;

pub(crate) mod exemption;
pub use exemption::Exemption;
use exemption::RawExemption;

/// How a rule's violations are treated. Ordered from weakest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The rule does not run.
    Off,
    /// Violations are allowed and reported (warnings, audit annotations, logs, metrics).
    Audit,
    /// Violations are denied.
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
        }
    }
}

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
pub const DEFAULT_CERT_VOLUME: &str = "istio-certs";
pub const DEFAULT_CERT_MOUNT_PATH: &str = "/etc/istio-certs";
pub const DEFAULT_MAX_CERTIFICATE_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The issuer istio-csr and cert-manager's Istio guides name `istio-ca`, as a
/// namespaced Issuer (istio-csr's chart default) or a ClusterIssuer.
pub const DEFAULT_WORKLOAD_ISSUER: &str = "istio-ca";

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
    events: crate::events::RawEvents,
    /// Issue 21: `exemptionObjects: {maxDuration: 2160h}`.
    #[serde(default)]
    exemption_objects: crate::exemption::RawExemptionObjects,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBackgroundAudit {
    enabled: Option<bool>,
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawWorkloadCertificates {
    volume_name: Option<String>,
    mount_path: Option<String>,
    secret_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCertificates {
    max_duration: Option<String>,
    issuer_refs: Option<Vec<RawIssuerRef>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuerRef {
    name: Option<String>,
    kind: Option<String>,
    group: Option<String>,
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
    pub events: crate::events::EventSettings,
    /// `exemptionObjects`: limits on MeshExemption / ClusterMeshExemption.
    pub exemption_objects: crate::exemption::ExemptionObjects,
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

/// Where `/mutate` puts the workload certificates for the app-to-sidecar hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadCertificates {
    pub volume_name: String,
    pub mount_path: String,
    pub source: CertificateSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// The sidecar writes its own certificate, key and root (OUTPUT_CERTS).
    Sidecar,
    /// A Secret (from cert-manager, or a SPIFFE CSI setup) is mounted instead.
    Secret(String),
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

    /// The configured mode of a rule, before namespace labels.
    pub fn rule_mode(&self, rule: RuleId) -> Mode {
        self.rules
            .get(&rule)
            .copied()
            .unwrap_or_else(|| self.mode.min(rule.default_cap()))
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

impl RawCertificates {
    fn validate(self) -> Result<(Vec<IssuerRef>, Duration), ConfigError> {
        let issuers = workload_issuers(self.issuer_refs)?;
        Ok((issuers, max_duration(self.max_duration.as_deref())?))
    }
}

/// The issuers of workload certificates; by default istio-ca as an Issuer or
/// a ClusterIssuer.
fn workload_issuers(issuer_refs: Option<Vec<RawIssuerRef>>) -> Result<Vec<IssuerRef>, ConfigError> {
    match issuer_refs {
        None => Ok(vec![
            IssuerRef::new(DEFAULT_WORKLOAD_ISSUER, "Issuer", crate::certmanager::GROUP),
            IssuerRef::new(
                DEFAULT_WORKLOAD_ISSUER,
                "ClusterIssuer",
                crate::certmanager::GROUP,
            ),
        ]),
        Some(refs) => refs
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.validate(&format!("certificates.issuerRefs[{i}]")))
            .collect(),
    }
}

fn max_duration(text: Option<&str>) -> Result<Duration, ConfigError> {
    let max_duration = match text {
        None => DEFAULT_MAX_CERTIFICATE_DURATION,
        Some(text) => parse_go_duration(text)
            .map_err(|e| ConfigError::invalid("certificates.maxDuration", e.to_string()))?,
    };
    if max_duration.is_zero() {
        return Err(ConfigError::invalid(
            "certificates.maxDuration",
            "must be longer than 0",
        ));
    }
    Ok(max_duration)
}

impl RawIssuerRef {
    /// cert-manager's defaults: `kind: Issuer`, `group: cert-manager.io`.
    fn validate(self, at: &str) -> Result<IssuerRef, ConfigError> {
        let Self { name, kind, group } = self;
        let name = name.unwrap_or_default();
        if name.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.name"),
                "must name the issuer, as in a Certificate's spec.issuerRef.name",
            ));
        }
        let group = group
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| crate::certmanager::GROUP.to_owned());
        let kind = kind
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| "Issuer".to_owned());
        if group == crate::certmanager::GROUP && kind != "Issuer" && kind != "ClusterIssuer" {
            return Err(ConfigError::invalid(
                format!("{at}.kind"),
                format!("`{kind}` is not a cert-manager.io kind: use Issuer or ClusterIssuer (or set `group` for an external issuer)"),
            ));
        }
        Ok(IssuerRef { name, kind, group })
    }
}

impl RawWorkloadCertificates {
    fn validate(self) -> Result<WorkloadCertificates, ConfigError> {
        let Self {
            volume_name,
            mount_path,
            secret_name,
        } = self;
        let volume_name = volume_name.unwrap_or_else(|| DEFAULT_CERT_VOLUME.to_owned());
        if !is_dns_label(&volume_name) {
            return Err(ConfigError::invalid(
                "workloadCertificates.volumeName",
                format!("`{volume_name}` is not a valid volume name (lowercase letters, digits and '-', at most 63)"),
            ));
        }
        let mount_path = mount_path.unwrap_or_else(|| DEFAULT_CERT_MOUNT_PATH.to_owned());
        if !mount_path.starts_with('/')
            || mount_path.contains(':')
            || mount_path.split('/').any(|p| p == "..")
        {
            return Err(ConfigError::invalid(
                "workloadCertificates.mountPath",
                format!("`{mount_path}` must be an absolute path without `..` or `:`"),
            ));
        }
        let source = match secret_name {
            None => CertificateSource::Sidecar,
            Some(name) if !name.is_empty() && name.len() <= 253 => CertificateSource::Secret(name),
            Some(_) => {
                return Err(ConfigError::invalid(
                    "workloadCertificates.secretName",
                    "must name a Secret (or leave it out to use the sidecar's certificates)",
                ))
            }
        };
        Ok(WorkloadCertificates {
            volume_name,
            mount_path,
            source,
        })
    }
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
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
        assert_eq!(config.rule_mode(RuleId::NoHostNetwork), Mode::Enforce);
        assert_eq!(config.rule_mode(RuleId::SidecarRequired), Mode::Audit);
    }

    #[test]
    fn advisory_rules_default_to_audit_unless_configured() {
        let config = Config::from_yaml("").unwrap();
        assert_eq!(config.rule_mode(RuleId::DenyAllOverridesAllow), Mode::Audit);
        let config = Config::from_yaml("rules: {deny-all-overrides-allow: enforce}\n").unwrap();
        assert_eq!(
            config.rule_mode(RuleId::DenyAllOverridesAllow),
            Mode::Enforce
        );
        let config = Config::from_yaml("mode: off\n").unwrap();
        assert_eq!(config.rule_mode(RuleId::DenyAllOverridesAllow), Mode::Off);
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
