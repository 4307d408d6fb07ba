//! `no-interception-bypass`: the sidecar only protects traffic its iptables
//! rules redirect. Exclusion annotations, narrowed include lists, interception
//! mode NONE, and application containers that run as the proxy's UID/GID
//! (whose traffic iptables lets through), or that may rewrite iptables
//! themselves (privileged, NET_ADMIN, NET_RAW), all route around it.
//! Settings are found wherever the injector wrote them: pod annotations, or
//! `istio-init`'s `istio-iptables` flags. Istio's own containers are trusted
//! only where [`crate::injection`] says the pod carries Istio's proxy.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};

use super::native_form::{variables, NativeCheck, NativeRule, Target, Variable};
use crate::config::Config;
use crate::injection::cel::port_of;
use crate::injection::{self, cel, Found, Setting, Source};
use crate::rules::{Context, Finding, RuleId};
use crate::subject::Workload;

const ID: RuleId = RuleId::NoInterceptionBypass;

pub fn check(w: &Workload, _ctx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    setting_findings(w, &mut findings);
    container_findings(w, &mut findings);
    findings
}

/// One finding per bypass, wherever the injector wrote it: an annotation
/// and the `istio-init` flag it became are reported once.
fn setting_findings(w: &Workload, out: &mut Vec<Finding>) {
    let mut seen = HashSet::new();
    let own_ports = injection::own_inbound_ports(w);
    for found in injection::interception_settings(w) {
        let Some(bypass) = bypass(found.setting, &found.value, &own_ports) else {
            continue;
        };
        if seen.insert((found.setting, bypass.clone())) {
            out.push(finding(&found, &bypass));
        }
    }
}

/// What routes around the proxy in this value, normalised so the same
/// setting found in two places compares equal; `None` when nothing does.
fn bypass(setting: Setting, value: &str, own_ports: &[u16]) -> Option<String> {
    let mut entries = list(value);
    match setting {
        Setting::IncludeInboundPorts => (!entries.contains(&"*")).then(|| entries.join(",")),
        Setting::IncludeOutboundIpRanges => {
            let everything = entries.contains(&"*")
                || (entries.contains(&"0.0.0.0/0") && entries.contains(&"::/0"));
            (!everything).then(|| entries.join(","))
        }
        Setting::InterceptionMode => value
            .trim()
            .eq_ignore_ascii_case("NONE")
            .then(|| "NONE".to_owned()),
        _ => {
            if setting.is_ports() {
                // The proxy's own ports, as the pod configures them.
                entries.retain(|p| !p.parse().is_ok_and(|p: u16| own_ports.contains(&p)));
            }
            entries.sort_unstable();
            entries.dedup();
            (!entries.is_empty()).then(|| entries.join(","))
        }
    }
}

fn finding(found: &Found, bypass: &str) -> Finding {
    let key = found.setting.annotation();
    let (who, place, fix) = match &found.source {
        Source::Annotation => (
            String::new(),
            format!("{key}="),
            match found.setting {
                Setting::IncludeInboundPorts | Setting::IncludeOutboundIpRanges => {
                    format!("remove the {key} annotation or set it to \"*\"")
                }
                Setting::InterceptionMode => {
                    format!("remove the {key} annotation (or use REDIRECT or TPROXY)")
                }
                _ => format!("remove the {key} annotation"),
            },
        ),
        Source::Container { container, flag } => (
            format!("container \"{container}\" "),
            format!("flag {flag} "),
            format!(
                "remove the setting from the injector's input (the {key} annotation, the mesh-wide proxy values, or the istioctl kube-inject flags) and inject again"
            ),
        ),
    };
    let what = match found.setting {
        Setting::IncludeInboundPorts | Setting::IncludeOutboundIpRanges => format!(
            "narrows interception with {place}\"{bypass}\" (anything not listed bypasses the sidecar)"
        ),
        Setting::InterceptionMode => format!("turns traffic interception off with {place}{bypass}"),
        _ => format!("excludes traffic from the sidecar with {place}{bypass}"),
    };
    Finding::new(ID, format!("{who}{what}"), fix)
}

fn list(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn container_findings(w: &Workload, out: &mut Vec<Finding>) {
    let istio = injection::istio_containers(w);
    let ids = injection::proxy_ids(w);
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
        if istio.contains(&name.as_str()) {
            continue;
        }
        for problem in container_problems(sc, pod_sc, &ids) {
            out.push(Finding::new(
                ID,
                format!("container \"{name}\" {}", problem.what),
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
    (proxy_uids, proxy_gids): &(Vec<i64>, Vec<i64>),
) -> Vec<Problem> {
    let mut problems = Vec::new();
    // A container inherits the pod's user and group unless it sets its own.
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    if let Some(uid) = uid.filter(|u| proxy_uids.contains(u)) {
        problems.push(Problem {
            what: format!(
                "runs as UID {uid}, the proxy's UID, whose traffic iptables does not redirect"
            ),
            fix: "set securityContext.runAsUser to another UID".into(),
        });
    }
    if let Some(gid) = gid.filter(|g| proxy_gids.contains(g)) {
        problems.push(Problem {
            what: format!(
                "runs as GID {gid}, the proxy's GID, whose traffic iptables does not redirect"
            ),
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

/// `bypass`: whether a setting's value (`list` of it: `E`) routes around
/// the proxy, by the kind of setting (`injection::cel::literals`).
macro_rules! bypass {
    ($key:literal, $value:literal) => {
        concat!(
            "(variables.settingKinds[",
            $key,
            "] == 'mode' ? ",
            $value,
            ".trim().upperAscii() == 'NONE' : ",
            "variables.settingKinds[",
            $key,
            "] == 'includePorts' ? !('*' in ",
            list!($value),
            ") : ",
            "variables.settingKinds[",
            $key,
            "] == 'includeRanges' ? !('*' in ",
            list!($value),
            " || ('0.0.0.0/0' in ",
            list!($value),
            " && '::/0' in ",
            list!($value),
            ")) : ",
            "variables.settingKinds[",
            $key,
            "] == 'ports' ? ",
            list!($value),
            ".exists(s, !(",
            port_of!("s"),
            " in variables.ownPorts)) : ",
            "size(",
            list!($value),
            ") > 0)"
        )
    };
}

macro_rules! list {
    ($value:literal) => {
        concat!($value, ".split(',').map(s, s.trim()).filter(s, s != '')")
    };
}

/// An `int()` the Rust side's `parse::<i64>()` also reads.
macro_rules! valid_i64 {
    ($x:literal) => {
        concat!(
            "(",
            $x,
            ".matches('^[+-]?[0-9]+$') && (size(",
            $x,
            ".find('[1-9][0-9]*')) < 19 || (size(",
            $x,
            ".find('[1-9][0-9]*')) == 19 && ",
            $x,
            ".find('[1-9][0-9]*') <= (",
            $x,
            ".startsWith('-') ? '9223372036854775808' : '9223372036854775807'))))"
        )
    };
}

/// `container_problems`: the container's own ID, else the pod's.
macro_rules! risky {
    ($c:literal) => {
        concat!(
            "((", $c, ".?securityContext.?runAsUser.or(variables.spec.?securityContext.?runAsUser).hasValue() && (",
            $c, ".?securityContext.?runAsUser.or(variables.spec.?securityContext.?runAsUser).value() == 1337 || variables.proxyUids.exists(L, ",
            $c, ".?securityContext.?runAsUser.or(variables.spec.?securityContext.?runAsUser).value() in L))) || (",
            $c, ".?securityContext.?runAsGroup.or(variables.spec.?securityContext.?runAsGroup).hasValue() && (",
            $c, ".?securityContext.?runAsGroup.or(variables.spec.?securityContext.?runAsGroup).value() == 1337 || variables.proxyGids.exists(L, ",
            $c, ".?securityContext.?runAsGroup.or(variables.spec.?securityContext.?runAsGroup).value() in L))) || ",
            $c, ".?securityContext.?privileged.orValue(false) || ",
            $c, ".?securityContext.?capabilities.?add.orValue([]).exists(k, k.trim().upperAscii() in ['NET_ADMIN', 'NET_RAW', 'ALL', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_ALL']))"
        )
    };
}

const OWN: [Variable; 6] = [
    (
        "bypassAnnotations",
        concat!(
            "variables.settingKinds.filter(a, a in variables.annotations && ",
            bypass!("a", "variables.annotations[a]"),
            ").map(a, 'annotation ' + a + '=' + variables.annotations[a])"
        ),
    ),
    (
        "bypassFlags",
        concat!(
            "variables.iptablesFinal.map(F, F.filter(p, p[0] in variables.settingKinds && ",
            bypass!("p[0]", "p[1]"),
            ").map(p, p[2] + p[1]))"
        ),
    ),
    (
        "proxyUids",
        concat!(
            "variables.iptablesFinal.map(F, F.filter(p, p[0] == 'proxy-uid' && ",
            valid_i64!("p[1].trim()"),
            ").map(p, int(p[1].trim())))"
        ),
    ),
    (
        "proxyGidFlags",
        concat!(
            "variables.iptablesFinal.map(F, F.filter(p, p[0] == 'proxy-gid' && ",
            valid_i64!("p[1].trim()"),
            ").map(p, int(p[1].trim())))"
        ),
    ),
    // `-g` defaults to `-u`.
    (
        "proxyGids",
        "lists.range(size(variables.proxyGidFlags)).map(ci, size(variables.proxyGidFlags[ci]) > 0 ? variables.proxyGidFlags[ci] : variables.proxyUids[ci])",
    ),
    (
        "riskyContainers",
        concat!(
            "(variables.initContainers + variables.containers).filter(c, !(c.name in variables.istioNames) && ",
            risky!("c"),
            ").map(c, c.name) + variables.spec.?ephemeralContainers.orValue([]).filter(c, !(c.name in variables.istioNames) && ",
            risky!("c"),
            ").map(c, c.name)"
        ),
    ),
];

const VARIABLES: [Variable; 33] = variables(&[
    &cel::CARRIED,
    &[cel::PROXY_TRUSTED, cel::ISTIO_NAMES],
    &cel::OWN_PORTS,
    &cel::IPTABLES,
    &OWN,
]);

/// The CEL form (`crate::native`): the same catalogue, the status port
/// read as `crate::injection::proxy_config` reads it, the flags parsed as
/// `istio-iptables` (pflag) parses them.
pub const NATIVE: NativeRule = NativeRule {
    target: Target::Workloads,
    variables: &VARIABLES,
    config: Some(literals),
    checks: &[
        NativeCheck {
            expression: "size(variables.bypassAnnotations) == 0 && variables.bypassFlags.all(L, size(L) == 0)",
            message: "'routes traffic around the sidecar with ' + (size(variables.bypassAnnotations) > 0 ? variables.bypassAnnotations[0] : variables.bypassFlags.filter(L, size(L) > 0)[0][0])",
            fix: "'remove the annotation (an include list may be \"*\"); for an istio-init flag, remove the setting from the injector\\'s input and inject again'",
            advisory: false,
        },
        NativeCheck {
            expression: "size(variables.riskyContainers) == 0",
            message: "'container \"' + variables.riskyContainers[0] + '\" runs as the proxy\\'s UID or GID, is privileged, or adds NET_ADMIN, NET_RAW or ALL: its traffic can route around the pod\\'s iptables rules'",
            fix: "'set securityContext.runAsUser and runAsGroup to other IDs, and remove privileged and NET_ADMIN, NET_RAW or ALL from capabilities.add'",
            advisory: false,
        },
    ],
};

/// The tables the CEL reads, from meshgate's own (no configuration).
fn literals(_: &Config) -> Vec<(&'static str, String)> {
    cel::literals()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::*;
    use k8s_openapi::api::core::v1::Capabilities;

    const EXCLUDE_ANNOTATIONS: &[&str] = &[
        "traffic.sidecar.istio.io/excludeInboundPorts",
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        "traffic.sidecar.istio.io/excludeInterfaces",
    ];
    const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
    const INCLUDE_OUTBOUND_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
    const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";

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

    #[test]
    fn istios_own_containers_are_never_findings_in_what_istio_builds() {
        for file in [
            "kube-inject-deployment.yaml",
            "kube-inject-pod.yaml",
            "kube-inject-cronjob.yaml",
            "kube-inject-cni-deployment.yaml",
            "kube-inject-gateway.yaml",
            "waypoint-deployment.yaml",
            "kube-gateway-deployment.yaml",
        ] {
            let w = fixture(file);
            assert!(findings(&w).is_empty(), "{file}: {:?}", findings(&w));
            let pod = pod_form(w);
            assert!(
                findings(&pod).is_empty(),
                "{file} as a pod: {:?}",
                findings(&pod)
            );
        }
    }

    #[test]
    fn an_unmarked_istio_proxy_is_judged_like_any_application() {
        // The same model as sidecar-required: no mark, no istio-init, not a
        // gateway, so UID 1337 is an application's bypass.
        let mut w = pod("web");
        let mut proxy = container("istio-proxy");
        proxy.security_context = Some(SecurityContext {
            run_as_user: Some(1337),
            ..Default::default()
        });
        w.spec.containers.push(proxy);
        let f = findings(&w);
        assert!(f[0]
            .message
            .contains("container \"istio-proxy\" runs as UID 1337"));
        let f = findings(&fixture("app-beside-router.yaml"));
        assert_eq!(f.len(), 2, "{f:?}");
    }

    #[test]
    fn finds_exclusions_the_injector_wrote_into_istio_init() {
        let f = findings(&fixture("kube-inject-traffic-params.yaml"));
        let messages = messages(&f);
        assert_eq!(f.len(), 3, "{messages:?}");
        assert!(
            messages
                .iter()
                .any(|m| m.contains("container \"istio-init\" excludes traffic from the sidecar with flag -x 10.96.0.2/24,10.96.0.3/24")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("container \"istio-init\" narrows interception with flag -i \"127.0.0.1/24,10.96.0.1/24\"")),
            "{messages:?}"
        );
        // The proxy's own 15090 and 15021 are not findings; 4, 5 and 6 are.
        assert!(
            messages.iter().any(|m| m.ends_with("flag -d 4,5,6")),
            "{messages:?}"
        );
        assert!(f[0].fix.contains("inject again"), "{}", f[0].fix);
    }

    #[test]
    fn an_annotation_and_the_flag_it_became_are_one_finding() {
        let mut w = fixture("kube-inject-pod.yaml")
            .with_annotation("traffic.sidecar.istio.io/excludeInboundPorts", "5432");
        let init = &mut w.spec.init_containers.as_mut().unwrap()[0];
        let args = init.args.as_mut().unwrap();
        let at = args.iter().position(|a| a == "-d").unwrap();
        args[at + 1] = "15090,15021,15020,5432".into();
        let f = findings(&w);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].message.contains("excludeInboundPorts=5432"));
        // Under CNI the injector writes annotations; istio-validation's
        // flags repeat them.
        let w = fixture("kube-inject-cni-deployment.yaml").with_annotation(
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "10.0.0.0/8",
        );
        assert_eq!(findings(&w).len(), 1, "{:?}", findings(&w));
    }

    /// The status port in `PROXY_CONFIG` is read as the CEL form reads it
    /// (`injection::proxy_config`): the last top-level key, escapes not
    /// decoded.
    #[test]
    fn the_status_port_is_read_from_proxy_config_as_the_cel_does() {
        let with_config = |config: &str| {
            let mut w = injected(pod("web"));
            let init = &mut w.spec.init_containers.as_mut().unwrap()[0];
            init.args = Some(vec!["-d".into(), "15090,15021,15555".into()]);
            let proxy = w.spec.containers.last_mut().unwrap();
            proxy.env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
                name: "PROXY_CONFIG".into(),
                value: Some(config.into()),
                ..Default::default()
            }]);
            findings(&w)
        };
        assert!(with_config(r#"{"statusPort":15555}"#).is_empty());
        // A key written with escapes is not read: the injector never writes
        // one, and the port stays unowned (refused, never let through).
        let f = with_config(r#"{"status\u0050ort":15555}"#);
        assert!(f[0].message.ends_with("flag -d 15555"), "{f:?}");
        // Only the top-level field counts, not a proxyMetadata entry.
        let f = with_config(r#"{"proxyMetadata":{"statusPort":"15555"}}"#);
        assert!(f[0].message.ends_with("flag -d 15555"), "{f:?}");
        // The last of duplicate keys wins; a decimal is no port.
        let f = with_config(r#"{"statusPort":15555,"statusPort":15020}"#);
        assert!(f[0].message.ends_with("flag -d 15555"), "{f:?}");
        let f = with_config(r#"{"statusPort":15555.0}"#);
        assert!(f[0].message.ends_with("flag -d 15555"), "{f:?}");
    }

    #[test]
    fn the_uid_istio_init_exempts_is_the_proxys_uid() {
        let mut w = fixture("kube-inject-pod.yaml");
        let init = &mut w.spec.init_containers.as_mut().unwrap()[0];
        let args = init.args.as_mut().unwrap();
        let at = args.iter().position(|a| a == "-u").unwrap();
        args[at + 1] = "1000".into();
        let w = w.security_context(
            0,
            SecurityContext {
                run_as_user: Some(1000),
                ..Default::default()
            },
        );
        let f = findings(&w);
        assert!(
            f[0].message
                .contains("container \"hello\" runs as UID 1000"),
            "{f:?}"
        );
    }
}
