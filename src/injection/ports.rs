//! The proxy's own inbound ports, which Istio itself excludes from
//! interception: Envoy's Prometheus (15090) and health (15021) ports, fixed
//! in the injector's templates, and the agent's status port, 15020 unless
//! the mesh or the pod configures another. The injector writes the status
//! port into `istio-init`'s `-d` (or, under CNI, the excludeInboundPorts
//! annotation) as `15090,15021,<statusPort>`, so meshgate must know which
//! port the agent really listens on, from what the injector wrote into the
//! pod, and accept no other.

use super::{carried, proxy_config, Proxy, PROXY_CONFIG_ENV, PROXY_CONTAINER};
use crate::subject::{ContainerView, Workload};

/// Envoy's Prometheus and health ports: the injector writes them literally.
const ENVOY_PORTS: [u16; 2] = [15090, 15021];
/// `meshConfig.defaultConfig.statusPort`'s default.
pub const DEFAULT_STATUS_PORT: u16 = 15020;
/// The pod's status port: the agent reads it (over the mesh's and
/// `PROXY_CONFIG`'s), and the injector writes it into `-d`; `0` turns the
/// status server off.
pub const STATUS_PORT_ANNOTATION: &str = "status.sidecar.istio.io/port";
/// The inbound ports that belong to the proxy of this pod: Envoy's two and
/// the status port, when there is one. Never more than one status port, so
/// naming another port as the status port gives up 15020 rather than adding
/// a port.
pub fn own_inbound_ports(w: &Workload) -> Vec<u16> {
    let mut ports = ENVOY_PORTS.to_vec();
    ports.extend(status_port(w));
    ports
}

/// The port the agent's status server listens on, in the agent's order:
/// the pod annotation; then, in a pod that carries Istio's sidecar, the
/// `statusPort` of `istio-proxy`'s `PROXY_CONFIG`, or (the mesh-wide value,
/// which a native sidecar's drain hook repeats) the `--debug-port` of its
/// preStop `pilot-agent request`; then 15020. `None` when it is off or not
/// a port.
pub fn status_port(w: &Workload) -> Option<u16> {
    if let Some(value) = w.pod_annotation(STATUS_PORT_ANNOTATION) {
        return port(value);
    }
    // A container merely named istio-proxy is an application's: what it
    // says about ports is not the injector's word.
    let injected = matches!(carried(w), Proxy::Sidecar | Proxy::OffPath(_));
    let proxy = injected
        .then(|| istio_proxy(w))
        .flatten()
        .and_then(|c| proxy_config_status_port(c).or_else(|| drain_hook_port(c)));
    match proxy {
        Some(value) => port(&value),
        None => Some(DEFAULT_STATUS_PORT),
    }
}

/// A port number; `0`, out of range or not a number is no port.
fn port(value: &str) -> Option<u16> {
    value.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

fn istio_proxy(w: &Workload) -> Option<&ContainerView> {
    let spec = &w.spec;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == PROXY_CONTAINER)
}

/// `PROXY_CONFIG`'s `statusPort`, as [`proxy_config::status_port`] reads it.
fn proxy_config_status_port(c: &ContainerView) -> Option<String> {
    let var = c
        .env
        .iter()
        .flatten()
        .find(|v| v.name == PROXY_CONFIG_ENV)?;
    match proxy_config::status_port(var.value.as_deref()?) {
        proxy_config::StatusPort::Said(value) => Some(value.to_owned()),
        proxy_config::StatusPort::Unsaid => None,
    }
}

/// `pilot-agent request --debug-port=<port> POST drain`, as the injector
/// writes a native sidecar's preStop hook.
fn drain_hook_port(c: &ContainerView) -> Option<String> {
    let command = c
        .lifecycle
        .as_ref()?
        .pre_stop
        .as_ref()?
        .exec
        .as_ref()?
        .command
        .as_deref()?;
    let [agent, request, rest @ ..] = command else {
        return None;
    };
    if agent.rsplit('/').next() != Some("pilot-agent") || request != "request" {
        return None;
    }
    let mut words = rest.iter().map(String::as_str);
    while let Some(word) = words.next() {
        if let Some(value) = word.strip_prefix("--debug-port=") {
            return Some(value.to_owned());
        }
        if word == "--debug-port" {
            return words.next().map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{istio_test_data, WorkloadBuilder};

    fn injected(case: &str) -> Workload {
        istio_test_data(&format!("injector/{case}.yaml.injected")).remove(0)
    }

    #[test]
    fn reads_the_status_port_the_injector_wrote() {
        for (case, want) in [
            ("status_params", Some(123)),
            ("status_annotations", Some(123)),
            ("status_annotations_zeroport", None),
            ("kubevirtInterfaces", Some(123)),
            ("reroute-virtual-interfaces", Some(123)),
            ("kubevirtInterfaces_list", Some(15020)),
            ("reroute-virtual-interfaces_list", Some(15020)),
        ] {
            assert_eq!(status_port(&injected(case)), want, "{case}");
        }
    }

    #[test]
    fn the_annotation_wins_and_proxy_config_comes_before_the_hook() {
        let mut w = injected("status_params");
        let proxy = w.spec.init_containers.as_mut().unwrap().iter_mut();
        let proxy = proxy
            .into_iter()
            .find(|c| c.name == PROXY_CONTAINER)
            .unwrap();
        let config = proxy
            .env
            .iter_mut()
            .flatten()
            .find(|v| v.name == PROXY_CONFIG_ENV)
            .unwrap();
        config.value = Some(r#"{"statusPort":15555}"#.into());
        assert_eq!(status_port(&w), Some(15555));
        let w = w.with_annotation(STATUS_PORT_ANNOTATION, "16000");
        assert_eq!(own_inbound_ports(&w), [15090, 15021, 16000]);
    }

    /// The background audit judges trimmed copies: they keep what the
    /// status port is read from.
    #[test]
    fn the_background_projection_keeps_the_status_port() {
        use crate::subject::{decode, Kind, Object};
        let path = format!(
            "{}/tests/fixtures/istio/injector/status_params.yaml.injected",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut object = crate::manifest::parse_text("f", &text)
            .unwrap()
            .remove(0)
            .value;
        crate::background::projection::trim(&mut object, &["spec", "template", "spec"]);
        let proxy = &object["spec"]["template"]["spec"]["initContainers"][1];
        assert_eq!(proxy["name"], "istio-proxy");
        assert_eq!(
            proxy["env"].as_array().map(Vec::len),
            Some(1),
            "PROXY_CONFIG only"
        );
        let Ok(Object::Workload(w)) = decode(Kind::Deployment, object, "shop", "") else {
            panic!("the projection decodes");
        };
        assert_eq!(status_port(&w), Some(123));
    }

    #[test]
    fn an_application_named_istio_proxy_does_not_name_the_status_port() {
        let mut w = injected("status_params");
        w.pod_meta.annotations = None;
        w.spec
            .init_containers
            .as_mut()
            .unwrap()
            .retain(|c| c.name == PROXY_CONTAINER);
        // No mark, no istio-init: the hook is the application's own.
        assert_eq!(carried(&w), Proxy::None);
        assert_eq!(status_port(&w), Some(DEFAULT_STATUS_PORT));
    }
}
