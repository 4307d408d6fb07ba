//! The settings a peer chart's user reaches for (extra args/env/volumes, log
//! level, probes, strategy, spread, priority, HPA, NetworkPolicy, webhook
//! selectors and conditions, ServiceMonitor relabelings): each one reaches
//! the rendered objects and the defaults stay what they were (the schema side
//! is in kubernetes_blocks.rs).

use super::*;

/// Every knob of this module set at once (see the file's header).
pub(crate) const KNOBS: &str = include_str!("../fixtures/chart/knobs-values.yaml");

/// Appended to KNOBS where the API server has matchConditions (1.28+).
const EXTRA_CONDITIONS: &str = r#"
  matchConditions:
    - name: not-ci-robot
      expression: "request.userInfo.username != 'system:serviceaccount:ci:robot'"
"#;

pub(crate) fn knobs_with_conditions() -> String {
    KNOBS.replace(
        "  annotations: {example.com/owner: platform}\n",
        &format!("  annotations: {{example.com/owner: platform}}{EXTRA_CONDITIONS}"),
    )
}

fn pod_spec(docs: &[Value]) -> &Value {
    &deployment(docs)["spec"]["template"]["spec"]
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

#[test]
fn defaults_keep_the_pod_as_it_was() {
    let docs = render("", NEWER);
    let deploy = deployment(&docs);
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(
        deploy["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    );
    let spread = &pod_spec(&docs)["topologySpreadConstraints"];
    assert_eq!(spread.as_array().unwrap().len(), 1);
    assert_eq!(spread[0]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(spread[0]["whenUnsatisfiable"], "ScheduleAnyway");
    assert_eq!(
        spread[0]["labelSelector"]["matchLabels"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    let c = container(&docs);
    for (probe, period) in [("livenessProbe", 10), ("readinessProbe", 5)] {
        assert_eq!(c[probe]["periodSeconds"], period, "{probe}");
        assert_eq!(c[probe]["timeoutSeconds"], 3, "{probe}");
        assert_eq!(c[probe]["failureThreshold"], 3, "{probe}");
    }
    assert!(
        c.get("startupProbe").is_none(),
        "no startup probe by default"
    );
    assert_eq!(env_value(c, "MESHGATE_LOG").unwrap()["value"], "info");
    assert_eq!(strings(&c["args"]).last(), Some(&"--max-connections=0"));
    assert_eq!(c["volumeMounts"].as_array().unwrap().len(), 2);
    assert_eq!(pod_spec(&docs)["volumes"].as_array().unwrap().len(), 2);

    let created = kinds(&docs);
    for kind in ["HorizontalPodAutoscaler", "NetworkPolicy"] {
        assert!(!created.contains(kind), "no {kind} by default");
    }
    let monitor_docs = render("metrics: {serviceMonitor: {enabled: true}}", NEWER);
    let endpoint = &find(&monitor_docs, "ServiceMonitor", FULLNAME)["spec"]["endpoints"][0];
    for absent in ["scrapeTimeout", "relabelings", "metricRelabelings"] {
        assert!(endpoint.get(absent).is_none(), "{absent} unset by default");
    }
    for (_, hook) in all_webhooks(&docs) {
        assert!(hook.get("objectSelector").is_none(), "{}", hook["name"]);
    }
}

#[test]
fn log_level_extra_args_env_and_volumes_reach_the_container() {
    let docs = render(KNOBS, NEWER);
    let c = container(&docs);
    assert_eq!(
        env_value(c, "MESHGATE_LOG").unwrap()["value"],
        "info,meshgate::background=debug"
    );
    assert_eq!(
        env_value(c, "HTTPS_PROXY").unwrap()["value"],
        "http://proxy.corp:3128"
    );
    assert_eq!(
        env_value(c, "GOMAXPROCS").unwrap()["valueFrom"]["resourceFieldRef"]["resource"],
        "limits.cpu"
    );
    assert_eq!(
        env_value(c, "MESHGATE_NAMESPACE").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace",
        "the chart's own variables stay"
    );
    let args = strings(&c["args"]);
    assert_eq!(args.first(), Some(&"serve"));
    assert_eq!(
        args[args.len() - 2..],
        ["--max-body-bytes=8388608", "--tls-reload-interval=10s"],
        "appended last"
    );

    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "extra-ca")
        .expect("the extra mount");
    assert_eq!(mount["mountPath"], "/etc/corp-ca");
    let volumes = pod_spec(&docs)["volumes"].as_array().unwrap();
    let names: Vec<&str> = volumes
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tls", "config", "extra-ca"]);
    assert_eq!(volumes[2]["configMap"]["name"], "corp-ca");
}

#[test]
fn probe_timings_strategy_and_spread_follow_the_values() {
    let docs = render(KNOBS, NEWER);
    let c = container(&docs);
    let liveness = &c["livenessProbe"];
    assert_eq!(liveness["periodSeconds"], 20);
    assert_eq!(liveness["timeoutSeconds"], 5);
    assert_eq!(liveness["failureThreshold"], 6);
    assert_eq!(liveness["httpGet"]["path"], "/healthz", "the handler stays");
    let readiness = &c["readinessProbe"];
    assert_eq!(readiness["initialDelaySeconds"], 2);
    assert_eq!(readiness["periodSeconds"], 3);
    assert_eq!(
        readiness["timeoutSeconds"], 3,
        "unset keys keep the default"
    );
    assert_eq!(readiness["httpGet"]["path"], "/readyz");
    let startup = &c["startupProbe"];
    assert_eq!(startup["httpGet"]["path"], "/healthz");
    assert_eq!(startup["httpGet"]["scheme"], "HTTPS");
    assert_eq!(startup["periodSeconds"], 1);
    assert_eq!(startup["failureThreshold"], 60);
    assert!(
        startup.get("enabled").is_none(),
        "a chart key, not a probe field"
    );

    let strategy = &deployment(&docs)["spec"]["strategy"];
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 1);
    assert_eq!(strategy["rollingUpdate"]["maxSurge"], "25%");
    let recreate = render(
        "updateStrategy: {type: Recreate, rollingUpdate: null}",
        NEWER,
    );
    assert_eq!(
        deployment(&recreate)["spec"]["strategy"],
        json!({"type": "Recreate"})
    );

    let spread = pod_spec(&docs)["topologySpreadConstraints"]
        .as_array()
        .unwrap();
    assert_eq!(spread.len(), 2, "the list replaces the default spread");
    assert_eq!(spread[0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(spread[0]["minDomains"], 2);
    assert_eq!(
        spread[0]["labelSelector"]["matchLabels"],
        deployment(&docs)["spec"]["selector"]["matchLabels"],
        "an item without labelSelector selects the release's pods"
    );
    assert_eq!(
        spread[1]["labelSelector"],
        json!({"matchLabels": {"team": "platform"}}),
        "a given labelSelector is kept as is"
    );
}

#[test]
fn priority_class_defaults_to_system_cluster_critical_with_a_quota() {
    let docs = render("", NEWER);
    assert_eq!(
        pod_spec(&docs)["priorityClassName"],
        "system-cluster-critical"
    );
    let quota = find(&docs, "ResourceQuota", &format!("{FULLNAME}-critical-pods"));
    assert_eq!(quota["metadata"]["namespace"], NAMESPACE);
    assert_eq!(quota["spec"]["hard"]["pods"], "20");
    let scope = &quota["spec"]["scopeSelector"]["matchExpressions"][0];
    assert_eq!(scope["scopeName"], "PriorityClass");
    assert_eq!(scope["operator"], "In");
    assert_eq!(
        strings(&scope["values"]),
        ["system-node-critical", "system-cluster-critical"]
    );

    let knobs = render(KNOBS, NEWER);
    assert_eq!(
        pod_spec(&knobs)["priorityClassName"],
        "system-node-critical"
    );
    let quota = find(
        &knobs,
        "ResourceQuota",
        &format!("{FULLNAME}-critical-pods"),
    );
    assert_eq!(quota["spec"]["hard"]["pods"], "12");

    for values in [
        "priorityClassName: ''",
        "priorityClassName: platform-high",
        "priorityClassQuota: {enabled: false}",
    ] {
        let docs = render(values, NEWER);
        assert!(
            !kinds(&docs).contains("ResourceQuota"),
            "no quota with {values}"
        );
    }
    let unset = render("priorityClassName: ''", NEWER);
    assert!(pod_spec(&unset).get("priorityClassName").is_none());

    // A quota the replicas would outgrow stalls rollouts and scale-ups.
    for (values, most) in [
        ("{replicaCount: 20}", 20),
        ("{autoscaling: {enabled: true, maxReplicas: 25}}", 25),
    ] {
        let err = render_error(values);
        assert!(
            err.contains(&format!(
                "priorityClassQuota.pods (20) must exceed the most replicas ({most})"
            )),
            "{err}"
        );
    }
    assert!(kinds(&render("{replicaCount: 19}", NEWER)).contains("ResourceQuota"));
}

#[test]
fn autoscaling_hands_the_replicas_to_an_hpa_and_keeps_the_pdb_honest() {
    let docs = render(KNOBS, NEWER);
    assert!(
        deployment(&docs)["spec"].get("replicas").is_none(),
        "the HPA owns the replica count"
    );
    let hpa = find(&docs, "HorizontalPodAutoscaler", FULLNAME);
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], FULLNAME);
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 9);
    let targets: BTreeMap<&str, &Value> = hpa["spec"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["resource"]["name"].as_str().unwrap(),
                &m["resource"]["target"]["averageUtilization"],
            )
        })
        .collect();
    assert_eq!(targets["cpu"], 70);
    assert_eq!(targets["memory"], 85);
    assert_eq!(
        hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        300
    );
    assert!(try_find(&docs, "PodDisruptionBudget", FULLNAME).is_some());

    let cpu_only = render("autoscaling: {enabled: true}", NEWER);
    let metrics = &find(&cpu_only, "HorizontalPodAutoscaler", FULLNAME)["spec"]["metrics"];
    assert_eq!(
        metrics.as_array().unwrap().len(),
        1,
        "memory is unset by default"
    );
    assert_eq!(metrics[0]["resource"]["name"], "cpu");

    // The PDB follows the HPA's floor, not replicaCount.
    let floor_one = render(
        "{replicaCount: 3, autoscaling: {enabled: true, minReplicas: 1}}",
        NEWER,
    );
    assert!(
        try_find(&floor_one, "PodDisruptionBudget", FULLNAME).is_none(),
        "a PDB with minAvailable 1 over a floor of one replica would block drains"
    );
    let err = render_error("autoscaling: {enabled: true, minReplicas: 4, maxReplicas: 3}");
    assert!(
        err.contains("autoscaling.maxReplicas must be at least"),
        "{err}"
    );
}

#[test]
fn network_policy_admits_only_the_api_server_and_prometheus() {
    let docs = render(KNOBS, NEWER);
    let policy = find(&docs, "NetworkPolicy", FULLNAME);
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment(&docs)["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2);
    let by_port: BTreeMap<&str, &Value> = ingress
        .iter()
        .map(|rule| {
            let ports = rule["ports"].as_array().unwrap();
            assert_eq!(ports.len(), 1, "one port per rule");
            (ports[0]["port"].as_str().unwrap(), &rule["from"])
        })
        .collect();
    assert_eq!(
        by_port["https"],
        &json!([{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.128/25"]}}])
    );
    assert_eq!(
        by_port["metrics"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    // The container ports the rules name exist.
    let port_names: BTreeSet<&str> = container(&docs)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(port_names, BTreeSet::from(["https", "metrics"]));

    // Defaults: any source on the webhook port, Prometheus pods on metrics.
    let default = render("networkPolicy: {enabled: true}", NEWER);
    let ingress = &find(&default, "NetworkPolicy", FULLNAME)["spec"]["ingress"];
    assert!(ingress[0].get("from").is_none());
    assert_eq!(
        ingress[1]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "prometheus"
    );
}

#[test]
fn webhook_object_selector_conditions_and_annotations_reach_every_webhook() {
    let docs = render(&knobs_with_conditions(), NEWER);
    for (kind, hook) in all_webhooks(&docs) {
        let name = hook["name"].as_str().unwrap();
        // Not on exemption objects: their requester writes the labels.
        let selector = if is_exemption_webhook(hook) {
            Value::Null
        } else {
            json!("meshgate.io/ignore")
        };
        assert_eq!(
            hook["objectSelector"]["matchExpressions"][0]["key"], selector,
            "{name}"
        );
        let conditions: Vec<&str> = hook["matchConditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(conditions.first(), Some(&"not-meshgate-itself"), "{name}");
        assert_eq!(conditions.last(), Some(&"not-ci-robot"), "{name}: appended");
        let configuration = find(&docs, kind, FULLNAME);
        assert_eq!(
            configuration["metadata"]["annotations"]["example.com/owner"],
            "platform"
        );
    }

    // Next to cert-manager's CA injection, not instead of it.
    let cert_manager = render(
        "{certificates: {mode: certManager}, webhook: {annotations: {example.com/owner: platform}}}",
        NEWER,
    );
    for kind in [VALIDATING, MUTATING] {
        let annotations = &find(&cert_manager, kind, FULLNAME)["metadata"]["annotations"];
        assert_eq!(annotations["example.com/owner"], "platform");
        assert!(annotations["cert-manager.io/inject-ca-from"].is_string());
    }

    // Older API servers have no matchConditions: refuse rather than drop them.
    let out = helm_template(&knobs_with_conditions(), OLDEST);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("webhook.matchConditions need Kubernetes >= 1.28"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn service_monitor_scrape_timeout_and_relabelings_are_applied() {
    let docs = render(KNOBS, NEWER);
    let endpoint = &find(&docs, "ServiceMonitor", FULLNAME)["spec"]["endpoints"][0];
    assert_eq!(endpoint["scrapeTimeout"], "10s");
    assert_eq!(endpoint["interval"], "30s");
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "node");
    assert_eq!(endpoint["metricRelabelings"][0]["action"], "drop");
    assert_eq!(endpoint["metricRelabelings"][0]["regex"], "go_.*");
}

/// The server's own parser accepts the rendered command line: extraArgs are
/// real `meshgate serve` flags, and repeating one the chart sets is refused
/// (so it fails at start, visibly, instead of one value silently winning).
#[test]
fn the_server_parses_the_rendered_command_line() {
    use clap::Parser as _;
    use meshgate::cli::{Cli, Command as CliCommand};

    let parse = |values: &str| {
        let docs = render(values, NEWER);
        let args: Vec<String> = strings(&container(&docs)["args"])
            .into_iter()
            .map(str::to_owned)
            .collect();
        Cli::try_parse_from(std::iter::once("meshgate".to_owned()).chain(args))
    };
    for values in ["", KNOBS] {
        let cli = parse(values).unwrap_or_else(|e| panic!("rendered args rejected: {e}"));
        assert!(matches!(cli.command, CliCommand::Serve(_)));
    }
    let CliCommand::Serve(serve) = parse(KNOBS).unwrap().command else {
        unreachable!("checked above")
    };
    assert_eq!(serve.max_body_bytes, 8 * 1024 * 1024);
    assert_eq!(
        serve.tls_reload_interval,
        std::time::Duration::from_secs(10)
    );

    let err = parse("extraArgs: [--max-connections=5]").unwrap_err();
    assert!(
        err.to_string().contains("--max-connections"),
        "a repeated flag is refused: {err}"
    );
}
