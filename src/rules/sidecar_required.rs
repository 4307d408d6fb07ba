//! `sidecar-required`: every workload runs with an Istio proxy, or in an
//! ambient namespace. What counts as the proxy is [`crate::injection`]'s one
//! model: an injected sidecar, or a pod that is itself a gateway or waypoint.
//! Pods reach validation after the injector ran, so a pod must already carry
//! it; a controller's template is never injected itself, so unless it was
//! injected by hand we check that injection *will* happen, with the same
//! selectors and templates Istio's injector webhooks use.

use super::native_form::{variables, NativeCheck, NativeRule, Target, Variable};
use crate::injection::cel;
use crate::injection::{self, Injection, Proxy, INJECT, PROXY_CONTAINER, TEMPLATES};
use crate::posture::labels;
use crate::rules::{Context, Finding, RuleId};
use crate::subject::Workload;

const ID: RuleId = RuleId::SidecarRequired;

pub fn check(w: &Workload, ctx: &Context) -> Vec<Finding> {
    // Gateways, waypoints and manually injected pods carry their proxy
    // whatever the namespace says.
    match injection::carried(w) {
        Proxy::Sidecar | Proxy::Gateway(_) => return vec![],
        Proxy::OffPath(template) => return vec![off_path(w, &template)],
        Proxy::None => {}
    }
    let Some(ns) = ctx.posture.namespace(&w.namespace) else {
        return vec![Finding::new(
            ID,
            format!(
                "sidecar injection cannot be verified: namespace \"{}\" is not known, so whether it gets a sidecar is unknown",
                w.namespace
            ),
            format!(
                "create namespace \"{}\" with istio-injection=enabled first (in `meshgate audit`, include its Namespace manifest)",
                w.namespace
            ),
        )];
    };
    let outcome = injection::decide(w, ns);
    if outcome == Injection::Injected && !w.is_pod() {
        return match injection::expected(w, ns) {
            Proxy::OffPath(template) => vec![off_path(w, &template)],
            _ => vec![],
        };
    }
    if ns.is_ambient() && w.spec.host_network != Some(true) {
        return match w.pod_label(labels::DATAPLANE_MODE) {
            Some("none") => vec![Finding::new(
                ID,
                format!(
                    "opts out of the ambient mesh with label {}=none",
                    labels::DATAPLANE_MODE
                ),
                format!("remove the pod label {}=none", labels::DATAPLANE_MODE),
            )],
            _ => vec![],
        };
    }
    let (why, fix) = explain(w, &outcome);
    let what = if injection::has_proxy_container(w) {
        // Named like the proxy, but nothing of Istio's injection around it.
        "has a container named istio-proxy that is not Istio's sidecar (no injector mark sidecar.istio.io/status, no istio-init)"
    } else if w.is_pod() {
        "has no istio-proxy sidecar"
    } else {
        "will run without an istio-proxy sidecar"
    };
    vec![Finding::new(ID, format!("{what}: {why}"), fix)]
}

fn off_path(w: &Workload, template: &str) -> Finding {
    Finding::new(
        ID,
        format!(
            "{}: injection template \"{template}\" ({TEMPLATES}) puts no {PROXY_CONTAINER} in the traffic path of its containers",
            if w.is_pod() { "has no sidecar in its traffic path" } else { "will run without a sidecar in its traffic path" },
        ),
        format!(
            "remove the {TEMPLATES} annotation so the sidecar template applies (or add an exemption with a reason for proxyless workloads)"
        ),
    )
}

fn explain(w: &Workload, outcome: &Injection) -> (String, String) {
    let ns = &w.namespace;
    let enroll = format!(
        "label namespace \"{ns}\" with istio-injection=enabled (or istio.io/rev=<revision>, or istio.io/dataplane-mode=ambient)"
    );
    match outcome {
        Injection::HostNetwork => {
            // Name an opt-out too, or following the fix only leads to the
            // next denial.
            let opt_out = [
                ("label", w.pod_label(INJECT)),
                ("annotation", w.pod_annotation(INJECT)),
            ]
            .into_iter()
            .find_map(|(place, v)| v.filter(|v| !injection::is_yaml_true(v)).map(|v| (place, v)));
            match opt_out {
                Some((place, value)) => (
                    format!("hostNetwork pods are never injected, and it opts out with the {place} {INJECT}={value}"),
                    format!("remove hostNetwork: true and the {INJECT} {place}"),
                ),
                None => (
                    "hostNetwork pods are never injected".into(),
                    "remove hostNetwork: true".into(),
                ),
            }
        }
        Injection::NamespaceDisabled => (
            format!("namespace \"{ns}\" is labelled istio-injection=disabled"),
            format!("label namespace \"{ns}\" with istio-injection=enabled"),
        ),
        Injection::NamespaceUnrecognised(value) => (
            format!("namespace \"{ns}\" has istio-injection={value}, which the injector ignores"),
            format!("label namespace \"{ns}\" with istio-injection=enabled"),
        ),
        Injection::NotEnrolled => (
            format!("namespace \"{ns}\" is not enrolled in the mesh"),
            enroll,
        ),
        Injection::OptedOut(place, value) => (
            format!("it opts out with the {place} {INJECT}={value}"),
            format!("remove the {INJECT} {place} from the pod template"),
        ),
        Injection::Injected => (
            "the sidecar injector did not run although the namespace is enrolled".into(),
            "check that Istio's sidecar injector webhook is installed and reachable, then recreate the pod".into(),
        ),
    }
}

/// The proxy model's variables, then the injector's decision.
const VARIABLES: [Variable; 15] = variables(&[&[cel::HOST_NETWORK], &cel::CARRIED, &DECIDE]);

const DECIDE: [Variable; 5] = [
        // `injection::decide`: the label wins over the annotation.
        (
            "selector",
            "'sidecar.istio.io/inject' in variables.labels ? variables.labels['sidecar.istio.io/inject'] : variables.annotations[?'sidecar.istio.io/inject'].orValue('')",
        ),
        (
            "optedOut",
            "variables.selector != '' && !(variables.selector.lowerAscii() in ['y', 'yes', 'true', 'on'])",
        ),
        ("ns", "namespaceObject.?metadata.?labels.orValue({})"),
        (
            "injected",
            "!variables.hostNetwork && ('istio-injection' in variables.ns ? variables.ns['istio-injection'] == 'enabled' && !variables.optedOut : 'istio.io/rev' in variables.ns ? !variables.optedOut : variables.labels[?'sidecar.istio.io/inject'].orValue('') == 'true' || ('istio.io/rev' in variables.labels && !variables.optedOut))",
        ),
        (
            "ambient",
            "variables.ns[?'istio.io/dataplane-mode'].orValue('') == 'ambient' && !variables.hostNetwork",
        ),
];

// The CEL message and fix follow `check` and `explain` cause by cause, so
// that a denial from the API server reads like the webhook's: the same
// words and the same specific fix. `place!` is where the opt-out sits.
macro_rules! place {
    () => {
        "('sidecar.istio.io/inject' in variables.labels ? 'label' : 'annotation')"
    };
}
macro_rules! ns {
    () => {
        "'namespace \"' + request.namespace + '\"'"
    };
}
macro_rules! off_path {
    () => {
        "(variables.marked && variables.offPath) || (variables.injected && object.kind != 'Pod')"
    };
}
macro_rules! ns_disabled {
    () => {
        "variables.ns[?'istio-injection'].orValue('') == 'disabled'"
    };
}
macro_rules! ns_unrecognised {
    () => {
        "'istio-injection' in variables.ns && variables.ns['istio-injection'] != 'enabled'"
    };
}

macro_rules! enrolled {
    () => {
        "('istio-injection' in variables.ns || 'istio.io/rev' in variables.ns || 'istio.io/rev' in variables.labels)"
    };
}

const MESSAGE: &str = concat!(
    "!(", off_path!(), ") && variables.ambient ? 'opts out of the ambient mesh with label istio.io/dataplane-mode=none'",
    " : (object.kind == 'Pod' ? 'has no istio-proxy sidecar' : 'will run without an istio-proxy sidecar') + ': ' + (",
    off_path!(), " ? 'its injection template (inject.istio.io/templates) puts no istio-proxy in the traffic path of its containers'",
    " : variables.hostNetwork ? 'hostNetwork pods are never injected' + (variables.optedOut ? ', and it opts out with the ' + ", place!(), " + ' sidecar.istio.io/inject=' + variables.selector : '')",
    " : ", ns_disabled!(), " ? ", ns!(), " + ' is labelled istio-injection=disabled'",
    " : ", ns_unrecognised!(), " ? ", ns!(), " + ' has istio-injection=' + variables.ns['istio-injection'] + ', which the injector ignores'",
    " : variables.optedOut && ", enrolled!(), " ? 'it opts out with the ' + ", place!(), " + ' sidecar.istio.io/inject=' + variables.selector",
    " : variables.injected ? 'the sidecar injector did not run although the namespace is enrolled'",
    " : ", ns!(), " + ' is not enrolled in the mesh')",
);

const FIX: &str = concat!(
    off_path!(), " ? 'remove the inject.istio.io/templates annotation so the sidecar template applies (or add an exemption with a reason for proxyless workloads)'",
    " : variables.hostNetwork ? 'remove hostNetwork: true' + (variables.optedOut ? ' and the sidecar.istio.io/inject ' + ", place!(), " : '')",
    " : variables.ambient ? 'remove the pod label istio.io/dataplane-mode=none'",
    " : ", ns_disabled!(), " || ", ns_unrecognised!(), " ? 'label ' + ", ns!(), " + ' with istio-injection=enabled'",
    " : variables.optedOut && ", enrolled!(), " ? 'remove the sidecar.istio.io/inject ' + ", place!(), " + ' from the pod template'",
    " : variables.injected ? \"check that Istio's sidecar injector webhook is installed and reachable, then recreate the pod\"",
    " : 'label ' + ", ns!(), " + ' with istio-injection=enabled (or istio.io/rev=<revision>, or istio.io/dataplane-mode=ambient)'",
);

/// The CEL form (`crate::native`) of [`check`] and `crate::injection`'s
/// model: gateway by shape, the injector's mark, its templates, the
/// injector's selectors, ambient. Every variable mirrors one function there.
pub const NATIVE: NativeRule = NativeRule {
    target: Target::Workloads,
    variables: &VARIABLES,
    config: None,
    checks: &[NativeCheck {
        expression: "variables.gateway || (!(variables.marked && variables.offPath) && (variables.sidecar || (variables.injected && object.kind != 'Pod' ? !variables.offPath : variables.ambient && variables.labels[?'istio.io/dataplane-mode'].orValue('') != 'none')))",
        message: MESSAGE,
        fix: FIX,
        advisory: false,
    }],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::*;

    fn findings(w: &Workload, world: &World) -> Vec<Finding> {
        check(w, &world.ctx())
    }

    #[test]
    fn accepts_injected_pod() {
        let w = injected(pod("web"));
        assert!(findings(&w, &World::enrolled_shop()).is_empty());
    }

    #[test]
    fn accepts_native_sidecar_only_with_restart_policy_always() {
        // Marked by the injector (this test changed when the one proxy model
        // came: an unmarked istio-proxy without istio-init is not Istio's).
        let mut w = pod("web").with_annotation(injection::INJECTOR_STATUS, "{}");
        let mut proxy = container("istio-proxy");
        proxy.restart_policy = Some("Always".into());
        w.spec.init_containers = Some(vec![proxy]);
        assert!(findings(&w, &World::enrolled_shop()).is_empty());
        // Stripped of restartPolicy (as a 1.24 API server does) it is a plain
        // init container that exits before the app starts.
        w.spec.init_containers.as_mut().unwrap()[0].restart_policy = None;
        assert_eq!(findings(&w, &World::enrolled_shop()).len(), 1);
    }

    #[test]
    fn a_container_merely_named_istio_proxy_is_not_a_sidecar() {
        let mut w = pod("web");
        w.spec.containers.push(container("istio-proxy"));
        let f = findings(&w, &World::enrolled_shop());
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message
                .contains("named istio-proxy that is not Istio's sidecar"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn admits_istiod_gateways_and_waypoints_in_every_kind_of_namespace() {
        let sidecar = World::enrolled_shop();
        let ambient = ambient_shop();
        let bare = World::with_namespaces(&[namespace("shop", &[])]);
        for file in [
            "waypoint-deployment.yaml",
            "waypoint-pod.yaml",
            "kube-gateway-deployment.yaml",
        ] {
            let w = fixture(file);
            for world in [&sidecar, &ambient, &bare] {
                assert!(findings(&w, world).is_empty(), "{file}");
                assert!(findings(&pod_form(w.clone()), world).is_empty(), "{file}");
            }
        }
    }

    #[test]
    fn admits_the_helm_chart_gateway_template_and_its_injected_pod() {
        let template = fixture("gateway-helm-deployment.yaml");
        let injected = pod_form(fixture("kube-inject-gateway.yaml"));
        for world in [World::enrolled_shop(), ambient_shop()] {
            assert!(findings(&template, &world).is_empty());
            assert!(findings(&injected, &world).is_empty());
        }
    }

    #[test]
    fn denies_applications_that_copy_gateway_labels() {
        for file in ["copied-waypoint-labels.yaml", "app-beside-router.yaml"] {
            let w = fixture(file);
            let f = findings(&w, &World::enrolled_shop());
            assert_eq!(f.len(), 1, "{file}");
            assert!(
                f[0].message.contains("sidecar.istio.io/inject=false"),
                "{}",
                f[0].message
            );
            let f = findings(&pod_form(w), &ambient_shop());
            assert!(
                f[0].message.contains("opts out of the ambient mesh"),
                "{file}"
            );
        }
    }

    #[test]
    fn manual_injection_needs_no_namespace_label_in_either_form() {
        let unlabelled = World::with_namespaces(&[namespace("shop", &[])]);
        let disabled =
            World::with_namespaces(&[namespace("shop", &[("istio-injection", "disabled")])]);
        for file in [
            "kube-inject-deployment.yaml",
            "kube-inject-pod.yaml",
            "kube-inject-cronjob.yaml",
            "kube-inject-cni-deployment.yaml",
        ] {
            let w = fixture(file);
            for world in [&unlabelled, &disabled] {
                assert!(findings(&w, world).is_empty(), "{file}");
                assert!(findings(&pod_form(w.clone()), world).is_empty(), "{file}");
            }
        }
    }

    #[test]
    fn proxyless_templates_get_the_verdict_of_their_pods() {
        let world = World::enrolled_shop();
        let template = fixture("grpc-agent-deployment.yaml");
        let injected = fixture("kube-inject-grpc-agent.yaml");
        for w in [template, injected.clone(), pod_form(injected)] {
            let f = findings(&w, &world);
            assert_eq!(f.len(), 1, "{}", w.kind);
            assert!(
                f[0].message.contains("injection template \"grpc-agent\""),
                "{}",
                f[0].message
            );
            assert!(
                f[0].fix.contains("inject.istio.io/templates"),
                "{}",
                f[0].fix
            );
        }
        let f = findings(&pod_form(fixture("kube-inject-grpc-simple.yaml")), &world);
        assert!(f[0].message.contains("grpc-simple"), "{}", f[0].message);
    }

    #[test]
    fn the_gateway_template_on_an_application_is_denied() {
        let w = deployment("web").with_annotation("inject.istio.io/templates", "gateway");
        let f = findings(&w, &World::enrolled_shop());
        assert!(
            f[0].message.contains("template \"gateway\""),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn rejects_pod_that_the_injector_missed_in_enrolled_namespace() {
        let f = findings(&pod("web"), &World::enrolled_shop());
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message.starts_with("has no istio-proxy sidecar: "),
            "{}",
            f[0].message
        );
        assert!(f[0].fix.contains("injector"), "{}", f[0].fix);
    }

    #[test]
    fn rejects_template_in_unlabelled_namespace_with_enrollment_fix() {
        let world = World::with_namespaces(&[namespace("shop", &[])]);
        let f = findings(&deployment("web"), &world);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message
                .starts_with("will run without an istio-proxy sidecar: "),
            "{}",
            f[0].message
        );
        assert!(f[0]
            .fix
            .contains("label namespace \"shop\" with istio-injection=enabled"));
    }

    #[test]
    fn accepts_template_in_enrolled_or_revision_namespace() {
        assert!(findings(&deployment("web"), &World::enrolled_shop()).is_empty());
        let rev = World::with_namespaces(&[namespace("shop", &[("istio.io/rev", "1-24")])]);
        assert!(findings(&deployment("web"), &rev).is_empty());
    }

    #[test]
    fn opt_out_label_wins_over_annotation() {
        let world = World::enrolled_shop();
        let w = deployment("web")
            .with_label(INJECT, "false")
            .with_annotation(INJECT, "true");
        let f = findings(&w, &world);
        assert!(
            f[0].message.contains("label sidecar.istio.io/inject=false"),
            "{}",
            f[0].message
        );
        let w = deployment("web")
            .with_label(INJECT, "true")
            .with_annotation(INJECT, "false");
        assert!(findings(&w, &world).is_empty());
    }

    #[test]
    fn any_non_true_annotation_value_opts_out() {
        let world = World::enrolled_shop();
        for value in ["false", "no", "off", "nope"] {
            let w = deployment("web").with_annotation(INJECT, value);
            assert_eq!(findings(&w, &world).len(), 1, "{value}");
        }
        for value in ["yes", "On", "true", ""] {
            let w = deployment("web").with_annotation(INJECT, value);
            assert!(findings(&w, &world).is_empty(), "{value}");
        }
    }

    #[test]
    fn pod_label_enrolls_only_in_namespaces_without_labels() {
        let bare = World::with_namespaces(&[namespace("shop", &[])]);
        assert!(findings(&deployment("web").with_label(INJECT, "true"), &bare).is_empty());
        // An annotation alone does not select the injector.
        assert_eq!(
            findings(&deployment("web").with_annotation(INJECT, "true"), &bare).len(),
            1
        );
        // A revision label on the pod selects the revision's injector.
        assert!(findings(
            &deployment("web").with_label("istio.io/rev", "canary"),
            &bare
        )
        .is_empty());
        // In a disabled namespace nothing is injected.
        let disabled =
            World::with_namespaces(&[namespace("shop", &[("istio-injection", "disabled")])]);
        let f = findings(&deployment("web").with_label(INJECT, "true"), &disabled);
        assert!(f[0].message.contains("istio-injection=disabled"));
    }

    #[test]
    fn ambient_namespace_needs_no_sidecar_unless_the_pod_opts_out() {
        let ambient =
            World::with_namespaces(&[namespace("shop", &[("istio.io/dataplane-mode", "ambient")])]);
        assert!(findings(&pod("web"), &ambient).is_empty());
        assert!(findings(&deployment("web"), &ambient).is_empty());
        let f = findings(
            &deployment("web").with_label("istio.io/dataplane-mode", "none"),
            &ambient,
        );
        assert!(f[0].message.contains("opts out of the ambient mesh"));
    }

    #[test]
    fn host_network_template_is_never_injected() {
        let f = findings(&deployment("web").host_network(), &World::enrolled_shop());
        assert!(f[0].message.contains("hostNetwork pods are never injected"));
        let w = deployment("web")
            .host_network()
            .with_annotation(INJECT, "false");
        let f = findings(&w, &World::enrolled_shop());
        assert!(
            f[0].fix
                .contains("remove hostNetwork: true and the sidecar.istio.io/inject annotation"),
            "{}",
            f[0].fix
        );
        let ambient =
            World::with_namespaces(&[namespace("shop", &[("istio.io/dataplane-mode", "ambient")])]);
        assert_eq!(
            findings(&deployment("web").host_network(), &ambient).len(),
            1
        );
    }

    #[test]
    fn unknown_namespace_is_unverifiable_never_a_pass() {
        let world = World::with_namespaces(&[]);
        let f = findings(&deployment("web"), &world);
        assert!(
            f[0].message.contains("cannot be verified"),
            "{}",
            f[0].message
        );
    }
}
