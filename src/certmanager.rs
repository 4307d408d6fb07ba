//! The cert-manager `Certificate` fields meshgate reads; unknown fields are
//! tolerated.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// cert-manager's own API group, the default of `issuerRef.group`.
pub const GROUP: &str = "cert-manager.io";

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// Go duration; cert-manager's default when unset is 90 days.
    pub duration: Option<String>,
    pub renew_before: Option<String>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// URI SANs: a `spiffe://` one is a mesh workload identity.
    #[serde(default)]
    pub uris: Vec<String>,
    pub secret_name: Option<String>,
    pub issuer_ref: Option<ObjectReference>,
}

/// `spec.issuerRef` as written: cert-manager fills in `kind: Issuer` and
/// `group: cert-manager.io` when they are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ObjectReference {
    #[serde(default)]
    pub name: String,
    pub kind: Option<String>,
    pub group: Option<String>,
}

impl ObjectReference {
    /// With cert-manager's defaults applied.
    pub fn resolved(&self) -> IssuerRef {
        let or_default = |v: &Option<String>, default: &str| {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or(default)
                .to_owned()
        };
        IssuerRef {
            name: self.name.clone(),
            kind: or_default(&self.kind, "Issuer"),
            group: or_default(&self.group, GROUP),
        }
    }
}

/// A fully specified issuer reference, as the config names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerRef {
    pub name: String,
    pub kind: String,
    pub group: String,
}

impl IssuerRef {
    pub fn new(name: &str, kind: &str, group: &str) -> Self {
        IssuerRef {
            name: name.into(),
            kind: kind.into(),
            group: group.into(),
        }
    }
}

impl std::fmt::Display for IssuerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group == GROUP {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{}.{} {}", self.kind, self.group, self.name)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Certificate {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CertificateSpec,
}

impl Certificate {
    /// The issuer it names, defaults applied.
    pub fn issuer(&self) -> Option<IssuerRef> {
        self.spec.issuer_ref.as_ref().map(ObjectReference::resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_ref_takes_cert_manager_defaults() {
        let cert: Certificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"secretName": "web-tls", "issuerRef": {"name": "istio-ca"}, "privateKey": {"algorithm": "ECDSA"}}
        }))
        .unwrap();
        assert_eq!(
            cert.issuer(),
            Some(IssuerRef::new("istio-ca", "Issuer", "cert-manager.io"))
        );
        let external = ObjectReference {
            name: "pca".into(),
            kind: Some("AWSPCAClusterIssuer".into()),
            group: Some("awspca.cert-manager.io".into()),
        };
        assert_eq!(
            external.resolved().to_string(),
            "AWSPCAClusterIssuer.awspca.cert-manager.io pca"
        );
        assert_eq!(
            IssuerRef::new("istio-ca", "ClusterIssuer", GROUP).to_string(),
            "ClusterIssuer istio-ca"
        );
    }
}
