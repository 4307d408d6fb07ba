//! The proxy model against what Istio really produces
//! (`tests/fixtures/workloads/`, taken from istio/istio).

use super::*;
use crate::rules::testing::*;

fn enrolled() -> NamespaceInfo {
    NamespaceInfo {
        labels: [("istio-injection".to_owned(), "enabled".to_owned())].into(),
    }
}

#[test]
fn istiod_waypoints_and_gateways_are_proxies_in_both_forms() {
    for (file, role) in [
        ("waypoint-deployment.yaml", GatewayRole::Waypoint),
        ("waypoint-pod.yaml", GatewayRole::Waypoint),
        ("kube-gateway-deployment.yaml", GatewayRole::Router),
        ("kube-inject-gateway.yaml", GatewayRole::Router),
    ] {
        let w = fixture(file);
        assert_eq!(carried(&w), Proxy::Gateway(role), "{file}");
        assert_eq!(carried(&pod_form(w)), Proxy::Gateway(role), "{file}");
    }
}

#[test]
fn the_helm_chart_gateway_becomes_a_gateway_through_the_gateway_template() {
    let w = fixture("gateway-helm-deployment.yaml");
    // `image: auto`, no args yet: nothing of Istio's until the injector ran.
    assert_eq!(carried(&w), Proxy::None);
    assert_eq!(
        expected(&w, &enrolled()),
        Proxy::Gateway(GatewayRole::Router)
    );
    // Its label selects the injector in an unlabelled namespace too.
    let bare = NamespaceInfo::default();
    assert_eq!(expected(&w, &bare), Proxy::Gateway(GatewayRole::Router));
}

#[test]
fn copied_labels_or_a_router_beside_an_app_are_not_a_gateway() {
    for file in ["copied-waypoint-labels.yaml", "app-beside-router.yaml"] {
        let w = fixture(file);
        assert_eq!(gateway_role(&w), None, "{file}");
        assert_eq!(carried(&w), Proxy::None, "{file}");
        assert!(istio_containers(&w).is_empty(), "{file}");
    }
    // Another command never reads `proxy waypoint`.
    let mut w = fixture("waypoint-deployment.yaml");
    w.spec.containers[0].command = Some(vec!["/bin/sh".into(), "-c".into()]);
    assert_eq!(carried(&w), Proxy::None);
    w.spec.containers[0].command = Some(vec!["/usr/local/bin/pilot-agent".into()]);
    assert_eq!(carried(&w), Proxy::Gateway(GatewayRole::Waypoint));
}

#[test]
fn kube_inject_output_carries_a_sidecar_without_any_namespace() {
    for file in [
        "kube-inject-deployment.yaml",
        "kube-inject-pod.yaml",
        "kube-inject-cronjob.yaml",
        "kube-inject-cni-deployment.yaml",
        "kube-inject-traffic-params.yaml",
    ] {
        let w = fixture(file);
        assert_eq!(carried(&w), Proxy::Sidecar, "{file}");
        assert_eq!(
            expected(&w, &NamespaceInfo::default()),
            Proxy::Sidecar,
            "{file}"
        );
        assert_eq!(istio_containers(&w).len(), 3, "{file}");
    }
}

#[test]
fn a_kube_injected_cronjob_is_marked_on_its_job_template_only() {
    let w = fixture("kube-inject-cronjob.yaml");
    assert_eq!(w.pod_annotation(INJECTOR_STATUS), None);
    assert!(is_marked(&w));
    // Its pods carry no mark at all; istio-init makes them sidecar pods.
    let pod = pod_form(w);
    assert!(!is_marked(&pod));
    assert_eq!(carried(&pod), Proxy::Sidecar);
}

#[test]
fn an_unmarked_istio_proxy_without_istio_init_is_not_istios() {
    let mut w = pod("web");
    w.spec.containers.push(container(PROXY_CONTAINER));
    assert_eq!(carried(&w), Proxy::None);
    assert!(istio_containers(&w).is_empty());
    // In an enrolled namespace the injector will take it as an override.
    let template = deployment("web");
    let mut template = template;
    template.spec.containers.push(container(PROXY_CONTAINER));
    assert_eq!(expected(&template, &enrolled()), Proxy::Sidecar);
    assert!(istio_containers(&template).is_empty());
}

#[test]
fn proxyless_templates_put_no_proxy_in_the_traffic_path() {
    let w = fixture("grpc-agent-deployment.yaml");
    assert_eq!(carried(&w), Proxy::None);
    assert_eq!(
        expected(&w, &enrolled()),
        Proxy::OffPath("grpc-agent".into())
    );
    for (file, template) in [
        ("kube-inject-grpc-agent.yaml", "grpc-agent"),
        ("kube-inject-grpc-simple.yaml", "grpc-simple"),
    ] {
        let w = fixture(file);
        assert_eq!(carried(&w), Proxy::OffPath(template.into()), "{file}");
        assert_eq!(
            carried(&pod_form(w)),
            Proxy::OffPath(template.into()),
            "{file}"
        );
    }
}

#[test]
fn the_gateway_template_on_an_application_is_off_path() {
    let w = deployment("web").with_annotation(TEMPLATES, "gateway");
    assert_eq!(expected(&w, &enrolled()), Proxy::OffPath("gateway".into()));
    let w = deployment("web").with_annotation(TEMPLATES, "sidecar, spire");
    assert_eq!(expected(&w, &enrolled()), Proxy::Sidecar);
}

#[test]
fn finds_exclusions_in_istio_init_arguments() {
    let w = fixture("kube-inject-traffic-params.yaml");
    let found = interception_settings(&w);
    let get = |s: Setting| {
        found
            .iter()
            .find(|f| f.setting == s)
            .map(|f| f.value.as_str())
    };
    assert_eq!(
        get(Setting::ExcludeOutboundIpRanges),
        Some("10.96.0.2/24,10.96.0.3/24")
    );
    assert_eq!(
        get(Setting::IncludeOutboundIpRanges),
        Some("127.0.0.1/24,10.96.0.1/24")
    );
    assert_eq!(get(Setting::ExcludeInboundPorts), Some("15090,15021,4,5,6"));
    assert!(found.iter().all(|f| matches!(
        &f.source,
        Source::Container { container, .. } if container == INIT_CONTAINER
    )));
    assert_eq!(proxy_ids(&w), (vec![PROXY_UID], vec![PROXY_UID]));
}

#[test]
fn the_proxy_uid_is_what_istio_init_is_told() {
    let mut w = fixture("kube-inject-pod.yaml");
    let init = &mut w.spec.init_containers.as_mut().unwrap()[0];
    let args = init.args.as_mut().unwrap();
    let at = args.iter().position(|a| a == "-u").unwrap();
    args[at + 1] = "1000".into();
    assert_eq!(
        proxy_ids(&w),
        (vec![1000, PROXY_UID], vec![1000, PROXY_UID])
    );
}

/// Every file of istiod's gateway golden outputs, with its Deployments.
fn gateway_goldens() -> Vec<(String, Vec<Workload>)> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/istio/gateway-deployments"
    );
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let workloads = istio_test_data(&format!("gateway-deployments/{f}"));
            (f, workloads)
        })
        .collect()
}

#[test]
fn every_deployment_istiod_renders_for_a_gateway_is_a_proxy() {
    let goldens = gateway_goldens();
    let deployments: usize = goldens.iter().map(|(_, w)| w.len()).sum();
    // 28 files; illegal_customizations.yaml renders nothing.
    assert_eq!((goldens.len(), deployments), (28, 27));
    let mut agentgateways = 0;
    for (file, workloads) in goldens {
        for w in workloads {
            let role = gateway_role(&w).unwrap_or_else(|| panic!("{file}"));
            if file.starts_with("agentgateway") {
                assert_eq!(role, GatewayRole::Agentgateway, "{file}");
                assert_eq!(istio_containers(&w), [AGENTGATEWAY_CONTAINER], "{file}");
                agentgateways += 1;
            }
            assert_eq!(carried(&pod_form(w)), Proxy::Gateway(role), "{file}");
        }
    }
    assert_eq!(agentgateways, 4);
}

#[test]
fn an_agentgateway_is_its_shape_not_its_labels() {
    let golden = || istio_test_data("gateway-deployments/agentgateway.yaml").remove(0);
    // The labels and owner stay; the container is an application's.
    let mut w = golden();
    w.spec.containers[0].name = "app".into();
    assert_eq!(carried(&w), Proxy::None);
    let mut w = golden();
    w.spec.containers[0].args = Some(vec!["serve".into()]);
    assert_eq!(carried(&w), Proxy::None);
    let mut w = golden();
    w.spec.containers[0].command = Some(vec!["/bin/sh".into(), "-c".into()]);
    assert_eq!(carried(&w), Proxy::None);
    // A second container, or a native sidecar, beside the proxy.
    let mut w = golden();
    w.spec.containers.push(container("app"));
    assert_eq!(carried(&w), Proxy::None);
    let mut w = golden();
    let mut sidecar = container("app");
    sidecar.restart_policy = Some("Always".into());
    w.spec.init_containers = Some(vec![sidecar]);
    assert_eq!(carried(&w), Proxy::None);
    // An explicit command naming the image's binary is the same proxy.
    let mut w = golden();
    w.spec.containers[0].command = Some(vec!["/app/agentgateway".into()]);
    assert_eq!(carried(&w), Proxy::Gateway(GatewayRole::Agentgateway));
}

#[test]
fn a_native_sidecar_beside_istios_router_makes_it_no_gateway() {
    let mut w = fixture("kube-gateway-deployment.yaml");
    let mut sidecar = container("app");
    sidecar.restart_policy = Some("Always".into());
    w.spec.init_containers = Some(vec![sidecar]);
    assert_eq!(gateway_role(&w), None);
}
