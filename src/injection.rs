//! meshgate's one model of Istio's proxy: what Istio's injector adds to a
//! pod, which pods *are* proxies (gateways and waypoints), and where the
//! injector writes the traffic-interception settings. Every rule that looks
//! for `istio-proxy`, Istio's init containers or the proxy's UID asks here,
//! so `sidecar-required`, `no-interception-bypass` and the certificate mount
//! never disagree about what "the proxy" is. The README's "The proxy model"
//! explains the choices to users.

pub mod cel;
mod iptables;
mod ports;
mod proxy_config;

pub use iptables::{interception_settings, proxy_ids, Found, Setting, Source};
pub use ports::{own_inbound_ports, status_port, DEFAULT_STATUS_PORT, STATUS_PORT_ANNOTATION};

use crate::istio::names::labels;
pub use crate::istio::names::{
    AGENTGATEWAY_CONTAINER, INIT_CONTAINER, INJECT, INJECTOR_STATUS, PROXY_CONFIG_ENV,
    PROXY_CONTAINER, PROXY_UID, TEMPLATES, VALIDATION_CONTAINER,
};
use crate::istio::{Enrollment, NamespaceInfo};
use crate::subject::{ContainerView, Workload};

/// Proxyless gRPC: the application talks xDS itself and no Envoy sits in
/// its traffic path.
const PROXYLESS_TEMPLATES: &[&str] = &["grpc-simple", "grpc-agent"];
const GATEWAY_TEMPLATE: &str = "gateway";
const SIDECAR_TEMPLATE: &str = "sidecar";

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum GatewayRole {
    /// `pilot-agent proxy router`: an ingress, egress or east-west gateway.
    #[strum(serialize = "gateway")]
    Router,
    /// `pilot-agent proxy waypoint`: an ambient waypoint.
    Waypoint,
    /// istiod's agentgateway, a gateway or a waypoint: its pod does not say
    /// which (only its labels do, and those are not evidence).
    Agentgateway,
}

impl GatewayRole {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What Istio puts in a pod's traffic path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// An `istio-proxy` sidecar whose iptables rules capture the pod's
    /// traffic, injected by the webhook or by `istioctl kube-inject`.
    Sidecar,
    /// The pod is the proxy: a gateway or a waypoint, with no application.
    Gateway(GatewayRole),
    /// Injected by a template (named) that puts no proxy in the traffic path
    /// of the pod's applications.
    OffPath(String),
    /// Nothing of Istio's.
    None,
}

/// What the pod carries as it is: for a Pod at validation, what it will run
/// with; for a controller's template, what it has before any injection.
pub fn carried(w: &Workload) -> Proxy {
    if let Some(role) = gateway_role(w) {
        return Proxy::Gateway(role);
    }
    let marked = is_marked(w);
    if marked {
        if let off_path @ Proxy::OffPath(_) = templated(w) {
            return off_path;
        }
    }
    // Without the mark, `istio-init` is what makes a proxy a sidecar: the
    // pods of a kube-injected CronJob carry it but not the mark.
    if has_proxy_container(w) && (marked || has_init_container(w, INIT_CONTAINER)) {
        Proxy::Sidecar
    } else {
        Proxy::None
    }
}

/// What the pod will run with once Istio's injector has seen it.
pub fn expected(w: &Workload, ns: &NamespaceInfo) -> Proxy {
    match carried(w) {
        Proxy::None if decide(w, ns) == Injection::Injected => templated(w),
        carried => carried,
    }
}

/// Whether the pod has, or Istio's injector will give it, an `istio-proxy`
/// sidecar. Gateways and waypoints are proxies, not pods with a sidecar.
pub fn will_have_sidecar(w: &Workload, ns: &NamespaceInfo) -> bool {
    expected(w, ns) == Proxy::Sidecar
}

/// Istio's own containers in this pod, whose UID 1337 and NET_ADMIN are by
/// design. Only what the pod carries counts: before injection a template's
/// `istio-proxy` is the user's override, judged as written.
pub fn istio_containers(w: &Workload) -> &'static [&'static str] {
    match carried(w) {
        Proxy::Sidecar | Proxy::OffPath(_) => {
            &[PROXY_CONTAINER, INIT_CONTAINER, VALIDATION_CONTAINER]
        }
        Proxy::Gateway(GatewayRole::Agentgateway) => &[AGENTGATEWAY_CONTAINER],
        Proxy::Gateway(_) => &[PROXY_CONTAINER],
        Proxy::None => &[],
    }
}

/// What the injector's templates make of the pod. Istio's default template
/// list is `sidecar`.
fn templated(w: &Workload) -> Proxy {
    let names = templates(w);
    if let Some(t) = names.iter().find(|t| PROXYLESS_TEMPLATES.contains(t)) {
        return Proxy::OffPath((*t).to_owned());
    }
    if names.contains(&GATEWAY_TEMPLATE) && !names.contains(&SIDECAR_TEMPLATE) {
        // The gateway template adds no interception: only a pod that is
        // nothing but the proxy becomes a gateway.
        let only_proxy = !w.spec.containers.is_empty()
            && w.spec.containers.iter().all(|c| c.name == PROXY_CONTAINER);
        return if only_proxy {
            Proxy::Gateway(GatewayRole::Router)
        } else {
            Proxy::OffPath(GATEWAY_TEMPLATE.to_owned())
        };
    }
    Proxy::Sidecar
}

/// The templates the pod asks for; an empty annotation means the default.
pub fn templates(w: &Workload) -> Vec<&str> {
    let names: Vec<&str> = w
        .pod_annotation(TEMPLATES)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if names.is_empty() {
        vec![SIDECAR_TEMPLATE]
    } else {
        names
    }
}

/// The trusted signal for "this pod is a gateway or waypoint": the pod's
/// shape, as istiod's gateway and waypoint Deployments, the gateway Helm
/// chart (after injection) and the injector's gateway template produce it.
/// Its only container is either `istio-proxy` running Istio's agent as
/// `proxy router` or `proxy waypoint`, or `agentgateway` running its image's
/// entrypoint with `--config` (istiod's agentgateway classes); no native
/// sidecar runs beside it. Labels and owners are not evidence: any
/// application can copy them, and a Pod's owner is its ReplicaSet.
pub fn gateway_role(w: &Workload) -> Option<GatewayRole> {
    let [proxy] = w.spec.containers.as_slice() else {
        return None;
    };
    if has_native_sidecar(w) {
        return None;
    }
    let args = proxy.args.as_deref().unwrap_or_default();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match proxy.name.as_str() {
        PROXY_CONTAINER if runs(proxy, "pilot-agent") => match (arg(0), arg(1)) {
            (Some("proxy"), Some("router")) => Some(GatewayRole::Router),
            (Some("proxy"), Some("waypoint")) => Some(GatewayRole::Waypoint),
            _ => None,
        },
        AGENTGATEWAY_CONTAINER if runs(proxy, "agentgateway") => {
            (arg(0) == Some("--config")).then_some(GatewayRole::Agentgateway)
        }
        _ => None,
    }
}

/// An init container with `restartPolicy: Always` runs beside the others
/// for the pod's whole life.
fn has_native_sidecar(w: &Workload) -> bool {
    w.spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.restart_policy.as_deref() == Some("Always"))
}

/// Istio's templates leave `command` to the image's entrypoint (proxyv2's
/// `pilot-agent`, agentgateway's `agentgateway`); another command would not
/// read the args at all.
fn runs(c: &ContainerView, binary: &str) -> bool {
    match c.command.as_deref().unwrap_or_default() {
        [] => true,
        [one] => one.rsplit('/').next() == Some(binary),
        _ => false,
    }
}

/// The injector's mark on the pod, or where `istioctl kube-inject` writes it
/// for a CronJob (`spec.jobTemplate.metadata`).
pub fn is_marked(w: &Workload) -> bool {
    w.pod_annotation(INJECTOR_STATUS).is_some()
        || w.job_template_annotation(INJECTOR_STATUS).is_some()
}

/// A container named `istio-proxy`, or a native sidecar (an init container
/// with `restartPolicy: Always`) of that name. A plain init container of
/// that name exits before the application starts.
pub fn has_proxy_container(w: &Workload) -> bool {
    w.spec.containers.iter().any(|c| c.name == PROXY_CONTAINER)
        || w.spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == PROXY_CONTAINER && c.restart_policy.as_deref() == Some("Always"))
}

fn has_init_container(w: &Workload, name: &str) -> bool {
    w.spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == name)
}

/// Istio's injector decision for a pod in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injection {
    Injected,
    HostNetwork,
    NamespaceDisabled,
    NamespaceUnrecognised(String),
    NotEnrolled,
    /// The pod opts out: (where: "label"/"annotation", value).
    OptedOut(&'static str, String),
}

/// Whether Istio's injector webhooks select this pod, with the selectors
/// they really use.
pub fn decide(w: &Workload, ns: &NamespaceInfo) -> Injection {
    if w.spec.host_network == Some(true) {
        return Injection::HostNetwork;
    }
    // The label wins over the annotation when both are set.
    let selector = match (w.pod_label(INJECT), w.pod_annotation(INJECT)) {
        (Some(v), _) => Some(("label", v)),
        (None, Some(v)) => Some(("annotation", v)),
        (None, None) => None,
    };
    let opted_out = |selector: Option<(&'static str, &str)>| match selector {
        Some((place, value)) if !value.is_empty() && !is_yaml_true(value) => {
            Some(Injection::OptedOut(place, value.to_owned()))
        }
        _ => None,
    };
    match ns.sidecar_enrollment() {
        Enrollment::Disabled => Injection::NamespaceDisabled,
        Enrollment::Unrecognised(value) => Injection::NamespaceUnrecognised(value),
        Enrollment::Sidecar => opted_out(selector).unwrap_or(Injection::Injected),
        // Without namespace labels only a pod *label* selects the injector;
        // an annotation alone does not.
        Enrollment::None => {
            if w.pod_label(INJECT) == Some("true") {
                Injection::Injected
            } else if w.pod_label(labels::ISTIO_REV).is_some() {
                opted_out(selector).unwrap_or(Injection::Injected)
            } else {
                Injection::NotEnrolled
            }
        }
    }
}

/// Istio reads the inject annotation as a YAML boolean: anything else that is
/// not empty turns injection off.
pub fn is_yaml_true(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "on"
    )
}

#[cfg(test)]
mod tests;
