//! `no-interception-bypass`: the sidecar only protects traffic its iptables
//! rules redirect. Exclusion annotations, narrowed include lists, interception
//! mode NONE, and application containers that run as the proxy's UID/GID
//! (whose traffic iptables lets through), or that may rewrite iptables
//! themselves (privileged, NET_ADMIN, NET_RAW), all route around it.

use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};

use crate::rules::{Context, Finding, RuleId};
use crate::subject::Workload;

const ID: RuleId = RuleId::NoInterceptionBypass;
const PROXY_UID: i64 = 1337;
/// Containers Istio's injector adds; trusted only in pods the injector marked.
const ISTIO_CONTAINERS: &[&str] = &["istio-proxy", "istio-init", "istio-validation"];
const INJECTOR_STATUS: &str = "sidecar.istio.io/status";
/// The proxy's own ports (status, health, Envoy stats), which Istio itself
/// excludes from interception.
const PROXY_PORTS: &[&str] = &["15020", "15021", "15090"];

const EXCLUDE_ANNOTATIONS: &[&str] = &[
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeInterfaces",
];
const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
const INCLUDE_OUTBOUND_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";

pub fn check(w: &Workload, _ctx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    let subject = format!("{} {}/{}", w.kind, w.namespace, w.name);
    annotation_findings(w, &subject, &mut findings);
    container_findings(w, &subject, &mut findings);
    findings
}

fn annotation_findings(w: &Workload, subject: &str, out: &mut Vec<Finding>) {
    for key in EXCLUDE_ANNOTATIONS {
        let Some(value) = w.pod_annotation(key) else {
            continue;
        };
        let mut entries = list(value);
        if key.ends_with("Ports") {
            entries.retain(|p| !PROXY_PORTS.contains(p));
        }
        if !entries.is_empty() {
            out.push(Finding::new(
                ID,
                format!(
                    "{subject} excludes traffic from the sidecar with {key}={}",
                    entries.join(",")
                ),
                format!("remove the {key} annotation"),
            ));
        }
    }
    if let Some(value) = w.pod_annotation(INCLUDE_INBOUND_PORTS) {
        if !list(value).contains(&"*") {
            out.push(narrowed(subject, INCLUDE_INBOUND_PORTS, value));
        }
    }
    if let Some(value) = w.pod_annotation(INCLUDE_OUTBOUND_RANGES) {
        let ranges = list(value);
        let everything =
            ranges.contains(&"*") || (ranges.contains(&"0.0.0.0/0") && ranges.contains(&"::/0"));
        if !everything {
            out.push(narrowed(subject, INCLUDE_OUTBOUND_RANGES, value));
        }
    }
    if let Some(mode) = w.pod_annotation(INTERCEPTION_MODE) {
        if mode.trim().eq_ignore_ascii_case("NONE") {
            out.push(Finding::new(
                ID,
                format!("{subject} turns traffic interception off with {INTERCEPTION_MODE}=NONE"),
                format!("remove the {INTERCEPTION_MODE} annotation (or use REDIRECT or TPROXY)"),
            ));
        }
    }
}

fn narrowed(subject: &str, key: &str, value: &str) -> Finding {
    Finding::new(
        ID,
        format!("{subject} narrows interception with {key}=\"{value}\" (anything not listed bypasses the sidecar)"),
        format!("remove the {key} annotation or set it to \"*\""),
    )
}

fn list(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn container_findings(w: &Workload, subject: &str, out: &mut Vec<Finding>) {
    let injected = w.pod_annotation(INJECTOR_STATUS).is_some();
    let pod_sc = w.spec.security_context.as_ref();
    let spec = &w.spec;
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (&c.name, c.security_context.as_ref()))
        .chain(
            spec.containers
                .iter()
                .map(|c| (&c.name, c.security_context.as_ref())),
        )
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| (&c.name, c.security_context.as_ref())),
        );
    for (name, sc) in containers {
        if injected && ISTIO_CONTAINERS.contains(&name.as_str()) {
            continue;
        }
        for problem in container_problems(sc, pod_sc) {
            out.push(Finding::new(
                ID,
                format!("{subject}: container \"{name}\" {}", problem.what),
                problem.fix,
            ));
        }
    }
}

struct Problem {
    what: String,
    fix: String,
}

fn container_problems(
    sc: Option<&SecurityContext>,
    pod_sc: Option<&PodSecurityContext>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    // A container inherits the pod's user and group unless it sets its own.
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    if uid == Some(PROXY_UID) {
        problems.push(Problem {
            what: format!("runs as UID {PROXY_UID}, the proxy's UID, whose traffic iptables does not redirect"),
            fix: "set securityContext.runAsUser to another UID".into(),
        });
    }
    if gid == Some(PROXY_UID) {
        problems.push(Problem {
            what: format!("runs as GID {PROXY_UID}, the proxy's GID, whose traffic iptables does not redirect"),
            fix: "set securityContext.runAsGroup to another GID".into(),
        });
    }
    let Some(sc) = sc else {
        return problems;
    };
    if sc.privileged == Some(true) {
        problems.push(Problem {
            what: "is privileged and can rewrite the pod's iptables rules".into(),
            fix: "remove securityContext.privileged".into(),
        });
    }
    let added = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .into_iter()
        .flatten();
    for cap in added {
        let bare = cap.trim().to_ascii_uppercase();
        let bare = bare.strip_prefix("CAP_").unwrap_or(&bare);
        if matches!(bare, "NET_ADMIN" | "NET_RAW" | "ALL") {
            problems.push(Problem {
                what: format!(
                    "adds capability {cap}, which can change or sidestep the pod's iptables rules"
                ),
                fix: format!("remove {cap} from securityContext.capabilities.add"),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::*;
    use k8s_openapi::api::core::v1::Capabilities;

    fn findings(w: &Workload) -> Vec<Finding> {
        check(w, &World::enrolled_shop().ctx())
    }

    #[test]
    fn accepts_what_the_injector_produces() {
        // istio-init has NET_ADMIN/NET_RAW and istio-proxy runs as 1337.
        assert!(findings(&injected(pod("web"))).is_empty());
    }

    #[test]
    fn istio_container_names_are_trusted_only_in_injected_pods() {
        let mut w = deployment("web");
        w.spec.containers.push(container("istio-proxy"));
        w = w.security_context(
            1,
            SecurityContext {
                run_as_user: Some(1337),
                ..Default::default()
            },
        );
        assert_eq!(findings(&w).len(), 1);
    }

    #[test]
    fn rejects_each_exclusion_annotation() {
        for key in EXCLUDE_ANNOTATIONS {
            let w = deployment("web").with_annotation(key, "5432");
            let f = findings(&w);
            assert_eq!(f.len(), 1, "{key}");
            assert!(
                f[0].message.contains(&format!("{key}=5432")),
                "{}",
                f[0].message
            );
        }
    }

    #[test]
    fn excluding_only_the_proxys_own_ports_is_fine() {
        let w = injected(pod("web"))
            .with_annotation(
                "traffic.sidecar.istio.io/excludeInboundPorts",
                "15020, 15021",
            )
            .with_annotation("traffic.sidecar.istio.io/excludeOutboundPorts", "");
        assert!(findings(&w).is_empty());
        let w = pod("web")
            .with_annotation("traffic.sidecar.istio.io/excludeInboundPorts", "15020,8080");
        assert!(findings(&w)[0].message.contains("excludeInboundPorts=8080"));
    }

    #[test]
    fn rejects_narrowed_includes_but_not_wildcards() {
        let w = deployment("web")
            .with_annotation(INCLUDE_INBOUND_PORTS, "8080")
            .with_annotation(INCLUDE_OUTBOUND_RANGES, "10.0.0.0/8");
        assert_eq!(findings(&w).len(), 2);
        let w = deployment("web").with_annotation(INCLUDE_INBOUND_PORTS, "");
        assert_eq!(
            findings(&w).len(),
            1,
            "an empty include list captures nothing"
        );
        let w = deployment("web")
            .with_annotation(INCLUDE_INBOUND_PORTS, "*")
            .with_annotation(INCLUDE_OUTBOUND_RANGES, "0.0.0.0/0,::/0");
        assert!(findings(&w).is_empty());
    }

    #[test]
    fn rejects_interception_mode_none() {
        let w = deployment("web").with_annotation(INTERCEPTION_MODE, "NONE");
        assert_eq!(rule_ids(&findings(&w)), [ID]);
        let w = deployment("web").with_annotation(INTERCEPTION_MODE, "TPROXY");
        assert!(findings(&w).is_empty());
    }

    #[test]
    fn rejects_app_running_as_proxy_uid_including_inherited_from_pod() {
        let mut w = deployment("web");
        w.spec.security_context = Some(PodSecurityContext {
            run_as_user: Some(1337),
            ..Default::default()
        });
        let f = findings(&w);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message.contains("container \"app\" runs as UID 1337"),
            "{}",
            f[0].message
        );
        // The container's own setting overrides the pod's.
        let w = w.security_context(
            0,
            SecurityContext {
                run_as_user: Some(1000),
                ..Default::default()
            },
        );
        assert!(findings(&w).is_empty());
    }

    #[test]
    fn rejects_proxy_gid() {
        let w = deployment("web").security_context(
            0,
            SecurityContext {
                run_as_group: Some(1337),
                ..Default::default()
            },
        );
        assert!(findings(&w)[0].message.contains("GID 1337"));
    }

    #[test]
    fn rejects_privileged_and_network_capabilities_in_any_container() {
        let caps = |add: &[&str]| SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(add.iter().map(|c| (*c).into()).collect()),
                drop: None,
            }),
            ..Default::default()
        };
        let w =
            deployment("web").security_context(0, caps(&["NET_ADMIN", "cap_net_raw", "SYS_TIME"]));
        assert_eq!(findings(&w).len(), 2);
        let w = deployment("web").security_context(
            0,
            SecurityContext {
                privileged: Some(true),
                ..Default::default()
            },
        );
        assert!(findings(&w)[0].message.contains("privileged"));
        let mut w = deployment("web");
        let mut init = container("setup");
        init.security_context = Some(caps(&["ALL"]));
        w.spec.init_containers = Some(vec![init]);
        assert!(findings(&w)[0]
            .message
            .contains("container \"setup\" adds capability ALL"));
    }
}
