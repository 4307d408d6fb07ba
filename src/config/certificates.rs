//! `certificates` and `workloadCertificates` in the config file: which
//! cert-manager Certificates are workload certificates and how long they
//! may live, and where `/mutate` mounts the certificates.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::certmanager::{IssuerRef, GROUP};
use crate::duration::parse_go_duration;

pub const DEFAULT_CERT_VOLUME: &str = "istio-certs";
pub const DEFAULT_CERT_MOUNT_PATH: &str = "/etc/istio-certs";
pub const DEFAULT_MAX_CERTIFICATE_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The issuer istio-csr and cert-manager's Istio guides name `istio-ca`, as a
/// namespaced Issuer (istio-csr's chart default) or a ClusterIssuer.
pub const DEFAULT_WORKLOAD_ISSUER: &str = "istio-ca";

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

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawWorkloadCertificates {
    volume_name: Option<String>,
    mount_path: Option<String>,
    secret_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawCertificates {
    max_duration: Option<String>,
    issuer_refs: Option<Vec<RawIssuerRef>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuerRef {
    name: Option<String>,
    kind: Option<String>,
    group: Option<String>,
}

impl RawCertificates {
    pub(super) fn validate(self) -> Result<(Vec<IssuerRef>, Duration), ConfigError> {
        let issuers = workload_issuers(self.issuer_refs)?;
        Ok((issuers, max_duration(self.max_duration.as_deref())?))
    }
}

/// The issuers of workload certificates; by default istio-ca as an Issuer or
/// a ClusterIssuer.
fn workload_issuers(issuer_refs: Option<Vec<RawIssuerRef>>) -> Result<Vec<IssuerRef>, ConfigError> {
    match issuer_refs {
        None => Ok(vec![
            IssuerRef::new(DEFAULT_WORKLOAD_ISSUER, "Issuer", GROUP),
            IssuerRef::new(DEFAULT_WORKLOAD_ISSUER, "ClusterIssuer", GROUP),
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
            .unwrap_or_else(|| GROUP.to_owned());
        let kind = kind
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| "Issuer".to_owned());
        if group == GROUP && kind != "Issuer" && kind != "ClusterIssuer" {
            return Err(ConfigError::invalid(
                format!("{at}.kind"),
                format!("`{kind}` is not a cert-manager.io kind: use Issuer or ClusterIssuer (or set `group` for an external issuer)"),
            ));
        }
        Ok(IssuerRef { name, kind, group })
    }
}

impl RawWorkloadCertificates {
    pub(super) fn validate(self) -> Result<WorkloadCertificates, ConfigError> {
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
