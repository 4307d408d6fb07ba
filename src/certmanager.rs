//! The cert-manager `Certificate` fields meshgate reads; unknown fields are
//! tolerated.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// Go duration; cert-manager's default when unset is 90 days.
    pub duration: Option<String>,
    pub renew_before: Option<String>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    pub secret_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Certificate {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CertificateSpec,
}

impl crate::posture::Namespaced for Certificate {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
