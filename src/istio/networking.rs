//! The networking.istio.io resources meshgate reads: DestinationRules
//! (`destination-rule-mtls`), Sidecars (`sidecar-egress-locked`) and
//! ServiceEntries (which hosts are in the mesh).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::WorkloadSelector;

// ---------------------------------------------------------------- DestinationRule

/// `tls.mode` of a DestinationRule. A value Istio does not define decodes
/// as `Unknown`, which the rules count as weak: never a silent pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
    #[serde(other)]
    #[strum(serialize = "a value Istio does not define")]
    Unknown,
}

impl ClientTlsMode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ClientTls {
    pub mode: Option<ClientTlsMode>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PortSelector {
    pub number: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PortTrafficPolicy {
    pub port: Option<PortSelector>,
    pub tls: Option<ClientTls>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    pub tls: Option<ClientTls>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    #[serde(default)]
    pub name: String,
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    #[serde(default)]
    pub host: String,
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DestinationRule {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DestinationRuleSpec,
}

// ---------------------------------------------------------------- Sidecar

/// `outboundTrafficPolicy.mode` of a Sidecar. A value Istio does not define
/// decodes as `Unknown`, which the rules count as weak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    RegistryOnly,
    AllowAny,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OutboundTrafficPolicy {
    pub mode: Option<OutboundTrafficMode>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    pub workload_selector: Option<WorkloadSelector>,
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Sidecar {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SidecarSpec,
}

// ---------------------------------------------------------------- ServiceEntry

/// `location`: whether the hosts run inside the mesh (their workloads have
/// proxies and speak mTLS) or outside it. Istio's default is MESH_EXTERNAL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    #[default]
    MeshExternal,
    MeshInternal,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ServiceEntrySpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServiceEntry {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceEntrySpec,
}
