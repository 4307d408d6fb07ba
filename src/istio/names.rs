//! Istio's names meshgate reads: the containers its injector adds, the
//! annotations and labels it writes or selects on, and what a namespace's
//! labels say about its enrolment. The one place for them: the subject
//! decoder, the injection model, the rules and the posture index all read
//! them here.

use std::collections::BTreeMap;

pub const PROXY_CONTAINER: &str = "istio-proxy";
/// Applies the iptables rules when Istio's CNI plugin is not installed.
pub const INIT_CONTAINER: &str = "istio-init";
/// Checks the CNI plugin's rules when it is installed.
pub const VALIDATION_CONTAINER: &str = "istio-validation";
/// The injector's mark, written by the webhook and by `istioctl kube-inject`.
pub const INJECTOR_STATUS: &str = "sidecar.istio.io/status";
pub const INJECT: &str = "sidecar.istio.io/inject";
/// The injection templates the injector applies, comma-separated.
pub const TEMPLATES: &str = "inject.istio.io/templates";
pub const PROXY_UID: i64 = 1337;
/// The one container of istiod's Deployments for the `istio-agentgateway`
/// and `istio-agentgateway-waypoint` classes.
pub const AGENTGATEWAY_CONTAINER: &str = "agentgateway";

/// The proxy's configuration as the injector writes it into `istio-proxy`'s
/// environment (JSON, defaults left out): a status port other than 15020
/// appears there as `statusPort`.
pub const PROXY_CONFIG_ENV: &str = "PROXY_CONFIG";

/// Namespace labels that put a namespace in (or out of) the mesh.
pub mod labels {
    pub const ISTIO_INJECTION: &str = "istio-injection";
    pub const ISTIO_REV: &str = "istio.io/rev";
    pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
}

/// How a namespace takes part in the mesh, per Istio's injector selectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrollment {
    /// `istio-injection=enabled`, or `istio.io/rev=<rev>` without `istio-injection`.
    Sidecar,
    /// `istio-injection=disabled`: nothing is injected, whatever the pods say.
    Disabled,
    /// Neither label: only pods that select themselves get a sidecar.
    None,
    /// `istio-injection` with a value the injector does not select on.
    Unrecognised(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub labels: BTreeMap<String, String>,
}

impl NamespaceInfo {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// `istio-injection` takes precedence over `istio.io/rev`: Istio's revision
    /// webhook only selects namespaces without `istio-injection`.
    pub fn sidecar_enrollment(&self) -> Enrollment {
        match self.label(labels::ISTIO_INJECTION) {
            Some("enabled") => Enrollment::Sidecar,
            Some("disabled") => Enrollment::Disabled,
            Some(other) => Enrollment::Unrecognised(other.to_owned()),
            None if self.label(labels::ISTIO_REV).is_some() => Enrollment::Sidecar,
            None => Enrollment::None,
        }
    }

    pub fn is_ambient(&self) -> bool {
        self.label(labels::DATAPLANE_MODE) == Some("ambient")
    }

    /// In the mesh, by sidecar injection or ambient mode.
    pub fn is_enrolled(&self) -> bool {
        match self.sidecar_enrollment() {
            Enrollment::Sidecar => true,
            Enrollment::Disabled => false,
            _ => self.is_ambient(),
        }
    }
}
