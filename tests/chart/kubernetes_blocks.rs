//! The user's Kubernetes blocks in the values (resources, security
//! contexts, tolerations, affinity, spread, env, volumes, probes, peers,
//! match conditions, relabelings): the values schema rejects typos inside
//! them naming the key, and what it lets through passes `helm lint --strict`
//! and the real Kubernetes schemas (`kubernetes-validate --strict`).

use super::knobs::{knobs_with_conditions, KNOBS};
use super::*;

#[test]
fn user_blocks_pass_helm_lint_and_the_kubernetes_schemas_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let with_conditions = knobs_with_conditions();
    assert_ne!(with_conditions, KNOBS, "the conditions were spliced in");
    for (kube_version, values) in [(OLDEST, KNOBS), (NEWER, with_conditions.as_str())] {
        let values_file = dir.path().join("knobs.yaml");
        std::fs::write(&values_file, values).unwrap();
        let out = run(Command::new("helm")
            .arg("lint")
            .arg(chart_dir())
            .args(["--strict", "--kube-version", kube_version])
            .arg("--values")
            .arg(&values_file));
        assert!(
            out.status.success(),
            "helm lint --strict ({kube_version}):\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );

        let docs: Vec<String> = split_documents(&render_text(values, kube_version))
            .into_iter()
            .filter(|d| {
                let api_version = parse(d)["apiVersion"].as_str().unwrap_or("").to_owned();
                !CRD_GROUPS.iter().any(|g| api_version.starts_with(g))
            })
            .collect();
        let rendered = dir.path().join(format!("knobs-{kube_version}.yaml"));
        std::fs::write(&rendered, docs.join("---\n")).unwrap();
        let out = run(Command::new("kubernetes-validate")
            .args(["--strict", "-k", kube_version])
            .arg(&rendered));
        let report = text(&out.stdout) + &text(&out.stderr);
        let problems: Vec<&str> = report.lines().filter(|l| !l.starts_with("INFO")).collect();
        assert!(
            out.status.success() && problems.is_empty(),
            "kubernetes-validate {kube_version}:\n{}",
            problems.join("\n")
        );
        let passed = report
            .lines()
            .filter(|l| l.contains(" passed for "))
            .count();
        assert_eq!(passed, docs.len(), "every document validated:\n{report}");
        for kind in [
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "ResourceQuota",
            "Deployment",
        ] {
            assert!(
                docs.iter().any(|d| parse(d)["kind"] == kind),
                "{kind} validated too"
            );
        }
    }
}

#[test]
fn schema_rejects_typos_inside_kubernetes_blocks_naming_the_key() {
    let cases = [
        ("resources: {limits: {memroy: 1Gi}}", "at '/resources/limits': additional properties 'memroy' not allowed"),
        ("resources: {limit: {memory: 1Gi}}", "'limit' not allowed"),
        ("resources: {limits: {memory: lots}}", "/resources/limits/memory"),
        ("securityContext: {readOnlyRootFileSystem: true}", "'readOnlyRootFileSystem' not allowed"),
        ("securityContext: {capabilities: {dropp: [ALL]}}", "'dropp' not allowed"),
        ("podSecurityContext: {runAsUsr: 1000}", "'runAsUsr' not allowed"),
        ("tolerations: [{key: a, operator: Exist}]", "/tolerations/0/operator"),
        ("tolerations: [{key: a, efect: NoSchedule}]", "'efect' not allowed"),
        ("affinity: {nodeAfinity: {}}", "'nodeAfinity' not allowed"),
        (
            "topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelectors: {}}]",
            "'labelSelectors' not allowed",
        ),
        ("topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone}]", "whenUnsatisfiable"),
        ("updateStrategy: {type: Rolling}", "/updateStrategy/type"),
        ("updateStrategy: {type: RollingUpdate, rollingUpdate: {maxSurg: 1}}", "'maxSurg' not allowed"),
        ("probes: {liveness: {periodSecond: 5}}", "'periodSecond' not allowed"),
        ("probes: {liveness: {successThreshold: 2}}", "'successThreshold' not allowed"),
        ("probes: {readiness: {timeoutSeconds: 0}}", "/probes/readiness/timeoutSeconds"),
        ("extraEnv: [{name: A, valu: b}]", "'valu' not allowed"),
        ("extraArgs: [max-connections=5]", "/extraArgs/0"),
        ("extraVolumes: [{name: x, configmap: {name: y}}]", "'configmap' not allowed"),
        ("extraVolumeMounts: [{name: x, mountpath: /x}]", "'mountpath' not allowed"),
        ("logLevel: inof", "/logLevel"),
        ("logLevel: 'info,meshgate=loud'", "/logLevel"),
        ("autoscaling: {enabled: true, minReplica: 2}", "'minReplica' not allowed"),
        ("networkPolicy: {webhookFrom: [{ipblock: {cidr: 10.0.0.0/8}}]}", "'ipblock' not allowed"),
        ("webhook: {objectSelector: {matchLabel: {a: b}}}", "'matchLabel' not allowed"),
        (
            "webhook: {matchConditions: [{name: not-meshgate-itself, expression: 'true'}]}",
            "/webhook/matchConditions/0/name",
        ),
        ("webhook: {matchConditions: [{name: x, expresion: 'true'}]}", "'expresion' not allowed"),
        ("metrics: {serviceMonitor: {relabelings: [{action: rename}]}}", "/metrics/serviceMonitor/relabelings/0/action"),
        ("metrics: {serviceMonitor: {metricRelabelings: [{sourcelabels: [a]}]}}", "'sourcelabels' not allowed"),
        ("metrics: {serviceMonitor: {scrapeTimeout: 10}}", "/metrics/serviceMonitor/scrapeTimeout"),
        ("priorityClassQuota: {pods: 0}", "/priorityClassQuota/pods"),
    ];
    for (values, expected) in cases {
        let err = render_error(values);
        assert!(
            err.contains(expected),
            "rejecting {values:?} should mention {expected:?}:\n{err}"
        );
    }
}
