//! The Helm chart (`charts/meshgate`) and the plain manifests (`deploy/`),
//! checked the way a cluster would see them: rendered by the real `helm`
//! binary, validated offline against the Kubernetes API schemas by
//! `kubernetes-validate`, and compared with what the crate judges and watches.
//!
//! Both tools are required (`scripts/install-test-tools.sh` installs them); a
//! missing tool fails the tests with that hint rather than skipping them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use meshgate::admission::resources::{mutating_rules, validating_rules, WebhookRule};
use serde_json::{json, Value};

// Further chart tests, in their own files to keep this one readable.
#[path = "chart/drift.rs"]
mod drift;
#[path = "chart/exemptions.rs"]
mod exemptions;
#[path = "chart/knobs.rs"]
mod knobs;
#[path = "chart/kubernetes_blocks.rs"]
mod kubernetes_blocks;
#[path = "chart/values_docs.rs"]
mod values_docs;

const RELEASE: &str = "mg";
const NAMESPACE: &str = "meshgate-test";
/// `meshgate.fullname` for RELEASE: the Service, Deployment, webhook
/// configurations and ClusterRole are all named after it.
const FULLNAME: &str = "mg-meshgate";

/// The oldest API server the chart supports, and one with matchConditions.
const OLDEST: &str = "1.24.0";
const NEWER: &str = "1.31.0";
const KUBE_VERSIONS: [&str; 2] = [OLDEST, NEWER];

const GENERATE: &str = "certificates: {mode: generate}";
const CERT_MANAGER: &str = "certificates: {mode: certManager}";
const AUDIT: &str = "mode: audit";
const EXISTING_SECRET: &str = r#"
certificates:
  mode: existingSecret
  existingSecret:
    name: my-webhook-tls
    caBundle: Y2EtYnVuZGxl
"#;
/// Every optional knob turned on at once, so each template branch is rendered
/// (and schema-validated) at least once.
const EVERYTHING: &str = r#"
mode: audit
rules:
  dedicated-service-account: enforce
exemptions:
  - rules: [no-host-network]
    namespace: monitoring
    selector:
      matchLabels: {app: node-exporter}
      matchExpressions: [{key: tier, operator: In, values: [system]}]
    names: [node-exporter]
    reason: node exporter needs the host network
image:
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
imagePullSecrets: [{name: registry}]
serviceAccount:
  annotations: {example.com/role: meshgate}
priorityClassName: system-cluster-critical
podAnnotations: {example.com/team: platform}
podLabels: {team: platform}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]
affinity:
  nodeAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 1
        preference:
          matchExpressions: [{key: node-role, operator: In, values: [infra]}]
webhook:
  excludeNamespaces: [legacy]
# The native policies would not honour excludeNamespaces (the chart refuses both).
nativePolicies: {enabled: false}
certificates:
  mode: certManager
  certManager:
    issuerRef: {name: corp-ca, kind: ClusterIssuer, group: cert-manager.io}
metrics:
  serviceMonitor: {enabled: true, labels: {release: prometheus}}
  prometheusRule: {enabled: true}
"#;

/// The value sets every chart-wide check runs over.
const VARIANTS: [(&str, &str); 6] = [
    ("defaults", ""),
    ("generate", GENERATE),
    ("cert-manager", CERT_MANAGER),
    ("existing-secret", EXISTING_SECRET),
    ("audit", AUDIT),
    ("everything", EVERYTHING),
];

/// API groups whose kinds are CRDs (cert-manager, Prometheus Operator):
/// kubernetes-validate only knows the built-in API, so these are left out of
/// schema validation; the tests below assert on their content instead.
const CRD_GROUPS: [&str; 2] = ["cert-manager.io/", "monitoring.coreos.com/"];

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo().join("charts/meshgate")
}

/// Runs a command; a tool that is not installed is a test failure with a hint.
fn run(cmd: &mut Command) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{program}` is not on PATH: the chart tests need it. \
             Install it with `scripts/install-test-tools.sh`."
        ),
        Err(e) => panic!("cannot run `{program}`: {e}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` with the given values file content.
fn helm_template(values: &str, kube_version: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, values).unwrap();
    run(Command::new("helm")
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE, "--kube-version", kube_version])
        .arg("--values")
        .arg(&values_file))
}

/// The raw text of a successful render.
fn render_text(values: &str, kube_version: &str) -> String {
    let out = helm_template(values, kube_version);
    assert!(
        out.status.success(),
        "helm template failed for Kubernetes {kube_version} with values:\n{values}\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The documents of a YAML stream, each as its own text (comment-only
/// documents dropped).
fn split_documents(stream: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in stream.lines() {
        if line == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().unwrap();
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
    });
    docs
}

fn parse(doc: &str) -> Value {
    serde_yaml_ng::from_str(doc).unwrap_or_else(|e| panic!("rendered invalid YAML: {e}\n{doc}"))
}

/// Renders the chart and parses every object.
fn render(values: &str, kube_version: &str) -> Vec<Value> {
    split_documents(&render_text(values, kube_version))
        .iter()
        .map(|d| parse(d))
        .collect()
}

/// A `helm template` that must fail; returns its error output.
fn render_error(values: &str) -> String {
    let out = helm_template(values, NEWER);
    assert!(
        !out.status.success(),
        "helm template accepted values it should reject:\n{values}"
    );
    text(&out.stderr)
}

fn try_find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    try_find(docs, kind, name).unwrap_or_else(|| {
        let present: Vec<String> = docs
            .iter()
            .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]))
            .collect();
        panic!("no {kind}/{name} rendered; found {present:?}")
    })
}

fn kinds(docs: &[Value]) -> BTreeSet<&str> {
    docs.iter().filter_map(|d| d["kind"].as_str()).collect()
}

const WORKLOADS: &str = "workloads.validate.meshgate.io";
const POLICIES: &str = "mesh-policies.validate.meshgate.io";
const MUTATE: &str = "mutate.meshgate.io";
const EXEMPTIONS: &str = "exemptions.validate.meshgate.io";
const EXEMPTION_DELETIONS: &str = "exemption-deletions.validate.meshgate.io";

/// The webhooks for meshgate's own exemption objects (not rule-judged kinds).
fn is_exemption_webhook(hook: &Value) -> bool {
    [EXEMPTIONS, EXEMPTION_DELETIONS].contains(&hook["name"].as_str().unwrap_or_default())
}
const VALIDATING: &str = "ValidatingWebhookConfiguration";
const MUTATING: &str = "MutatingWebhookConfiguration";

/// Every webhook of the chart's two configurations, with its configuration's
/// kind.
fn all_webhooks(docs: &[Value]) -> Vec<(&'static str, &Value)> {
    let mut all = Vec::new();
    for kind in [VALIDATING, MUTATING] {
        for hook in find(docs, kind, FULLNAME)["webhooks"].as_array().unwrap() {
            all.push((kind, hook));
        }
    }
    all
}

/// The webhook named `name`.
fn webhook<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    all_webhooks(docs)
        .into_iter()
        .find(|(_, h)| h["name"] == name)
        .unwrap_or_else(|| panic!("no webhook {name}"))
        .1
}

/// The namespaces a webhook's namespaceSelector leaves out.
fn skipped_namespaces(hook: &Value) -> Vec<&str> {
    let expressions = hook["namespaceSelector"]["matchExpressions"]
        .as_array()
        .unwrap();
    assert_eq!(expressions.len(), 1, "{}", hook["name"]);
    let not_in = &expressions[0];
    assert_eq!(not_in["key"], "kubernetes.io/metadata.name");
    assert_eq!(not_in["operator"], "NotIn");
    strings(&not_in["values"])
}

fn deployment(docs: &[Value]) -> &Value {
    find(docs, "Deployment", FULLNAME)
}

fn container(docs: &[Value]) -> &Value {
    let containers = &deployment(docs)["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 1);
    &containers[0]
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a list, got {value}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// (group, version, resource, operation)
type RuleTuple = (String, String, String, String);

fn expand_crate_rules(rules: &[WebhookRule]) -> BTreeSet<RuleTuple> {
    let mut out = BTreeSet::new();
    for r in rules {
        for v in r.api_versions {
            for res in &r.resources {
                for op in &r.operations {
                    out.insert((
                        r.api_group.into(),
                        v.to_string(),
                        res.to_string(),
                        op.to_string(),
                    ));
                }
            }
        }
    }
    out
}

fn expand_rendered_rules(webhook: &Value) -> BTreeSet<RuleTuple> {
    let mut out = BTreeSet::new();
    for r in webhook["rules"].as_array().expect("webhook has rules") {
        for g in strings(&r["apiGroups"]) {
            for v in strings(&r["apiVersions"]) {
                for res in strings(&r["resources"]) {
                    for op in strings(&r["operations"]) {
                        out.insert((g.into(), v.into(), res.into(), op.into()));
                    }
                }
            }
        }
    }
    out
}

/// The ConfigMap's config.yaml, parsed.
fn rendered_config(docs: &[Value]) -> Value {
    let cm = find(docs, "ConfigMap", &format!("{FULLNAME}-config"));
    parse(
        cm["data"]["config.yaml"]
            .as_str()
            .expect("config.yaml is a string"),
    )
}

// ---------------------------------------------------------------------------
// Lint and schema validation of everything the chart renders
// ---------------------------------------------------------------------------

#[test]
fn chart_passes_helm_lint_strict() {
    let dir = tempfile::tempdir().unwrap();
    for (name, values) in VARIANTS {
        let values_file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&values_file, values).unwrap();
        for strict in [false, true] {
            let mut cmd = Command::new("helm");
            cmd.arg("lint")
                .arg(chart_dir())
                .arg("--values")
                .arg(&values_file);
            if strict {
                cmd.arg("--strict");
            }
            let out = run(&mut cmd);
            assert!(
                out.status.success(),
                "helm lint (strict: {strict}) failed with {name} values:\n{}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
}

#[test]
fn rendered_manifests_match_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    for kube_version in KUBE_VERSIONS {
        let mut files = Vec::new();
        let mut expected_docs = 0;
        for (name, values) in VARIANTS {
            let docs: Vec<String> = split_documents(&render_text(values, kube_version))
                .into_iter()
                .filter(|d| {
                    let api_version = parse(d)["apiVersion"].as_str().unwrap_or("").to_owned();
                    !CRD_GROUPS.iter().any(|g| api_version.starts_with(g))
                })
                .collect();
            expected_docs += docs.len();
            let file = dir.path().join(format!("{name}-{kube_version}.yaml"));
            std::fs::write(&file, docs.join("---\n")).unwrap();
            files.push(file);
        }
        // --strict rejects unknown fields too, e.g. matchConditions on 1.24.
        let out = run(Command::new("kubernetes-validate")
            .args(["--strict", "-k", kube_version])
            .args(&files));
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
        assert_eq!(passed, expected_docs, "every document validated:\n{report}");
    }
}

// ---------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------

#[test]
fn pod_is_hardened_and_probed_over_https() {
    for kube_version in KUBE_VERSIONS {
        let docs = render("", kube_version);
        let deploy = deployment(&docs);
        let pod = &deploy["spec"]["template"];
        assert_eq!(deploy["spec"]["replicas"], 2);
        assert_eq!(
            pod["metadata"]["labels"]["sidecar.istio.io/inject"], "false",
            "meshgate must not run inside the mesh it guards"
        );

        let psc = &pod["spec"]["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true);
        assert_eq!(psc["runAsUser"], 65532);
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");

        let c = container(&docs);
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["runAsUser"], 65532);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][resource].is_string(),
                    "{kind}.{resource} is set"
                );
            }
        }

        let https_port = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "https")
            .expect("an https port");
        assert_eq!(https_port["containerPort"], 8443);
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["scheme"], "HTTPS", "{probe}");
            assert_eq!(get["path"], path, "{probe}");
            assert_eq!(get["port"], "https", "{probe}");
        }

        let args = strings(&c["args"]).join(" ");
        for expected in [
            "serve",
            "--listen=0.0.0.0:8443",
            "--metrics-listen=0.0.0.0:9090",
            "--tls-cert=/etc/meshgate/tls/tls.crt",
            "--tls-key=/etc/meshgate/tls/tls.key",
            "--config=/etc/meshgate/config/config.yaml",
            "--log-format=json",
        ] {
            assert!(args.contains(expected), "args {args:?} lack {expected}");
        }
        assert_eq!(c["env"][0]["name"], "MESHGATE_NAMESPACE");
        assert_eq!(
            c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        assert_eq!(
            c["image"], "ghcr.io/meshgate/meshgate:0.1.0",
            "tag defaults to appVersion"
        );

        let spread = &pod["spec"]["topologySpreadConstraints"][0];
        assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");

        let pdb = find(&docs, "PodDisruptionBudget", FULLNAME);
        assert_eq!(pdb["spec"]["minAvailable"], 1);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            deploy["spec"]["selector"]["matchLabels"]
        );

        let service = find(&docs, "Service", FULLNAME);
        let ports: BTreeMap<&str, (&Value, &Value)> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), (&p["port"], &p["targetPort"])))
            .collect();
        assert_eq!(ports["https"], (&json!(443), &json!("https")));
        assert_eq!(ports["metrics"], (&json!(9090), &json!("metrics")));
    }
}

#[test]
fn optional_pod_settings_are_applied() {
    let docs = render(EVERYTHING, NEWER);
    let spec = &deployment(&docs)["spec"]["template"]["spec"];
    assert_eq!(spec["priorityClassName"], "system-cluster-critical");
    assert_eq!(spec["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(spec["tolerations"][0]["key"], "dedicated");
    assert!(spec["affinity"]["nodeAffinity"].is_object());
    assert_eq!(spec["imagePullSecrets"][0]["name"], "registry");
    assert_eq!(
        container(&docs)["image"],
        "ghcr.io/meshgate/meshgate:0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );

    let single = render("replicaCount: 1", NEWER);
    assert!(
        try_find(&single, "PodDisruptionBudget", FULLNAME).is_none(),
        "a PDB with minAvailable 1 over one replica would block every node drain"
    );
}

// ---------------------------------------------------------------------------
// Webhook configurations
// ---------------------------------------------------------------------------

#[test]
fn webhook_rules_are_exactly_what_the_crate_judges() {
    let security_policies: BTreeSet<RuleTuple> = expand_crate_rules(&validating_rules())
        .into_iter()
        .filter(|(group, ..)| group == "security.istio.io")
        .collect();
    assert!(!security_policies.is_empty());
    for (name, values) in VARIANTS {
        for kube_version in KUBE_VERSIONS {
            let docs = render(values, kube_version);
            let hooks = all_webhooks(&docs);
            let names: Vec<&str> = hooks
                .iter()
                .map(|(_, h)| h["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                names,
                [WORKLOADS, POLICIES, EXEMPTIONS, EXEMPTION_DELETIONS, MUTATE],
                "{name}"
            );
            // The exemption objects' webhooks: tests/chart/exemptions.rs.
            let rules_of = |kind: &str| {
                hooks
                    .iter()
                    .filter(|(k, h)| *k == kind && !is_exemption_webhook(h))
                    .flat_map(|(_, h)| expand_rendered_rules(h))
                    .collect::<BTreeSet<_>>()
            };
            for (kind, crate_rules) in [
                (VALIDATING, validating_rules()),
                (MUTATING, mutating_rules()),
            ] {
                assert_eq!(
                    rules_of(kind),
                    expand_crate_rules(&crate_rules),
                    "{kind} rules ({name}, {kube_version}) differ from the crate: \
                     edit charts/meshgate/files/resources.yaml"
                );
            }
            // PeerAuthentications and AuthorizationPolicies, and only they, go
            // through the webhook that still sees the mesh root namespace.
            assert_eq!(
                expand_rendered_rules(webhook(&docs, POLICIES)),
                security_policies
            );
            assert!(
                expand_rendered_rules(webhook(&docs, WORKLOADS)).is_disjoint(&security_policies)
            );
            for (kind, hook) in hooks {
                let service = &hook["clientConfig"]["service"];
                assert_eq!(service["name"], FULLNAME);
                assert_eq!(service["namespace"], NAMESPACE);
                let path = if kind == VALIDATING {
                    "/validate"
                } else {
                    "/mutate"
                };
                assert_eq!(service["path"], path);
                assert_eq!(service["port"], 443);
            }
        }
    }
}

#[test]
fn webhooks_have_safe_defaults() {
    let docs = render("", NEWER);
    for (_, hook) in all_webhooks(&docs) {
        assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
        // /validate records Events (never on a dry run).
        let validates = hook["clientConfig"]["service"]["path"] == "/validate";
        let effects = if validates { "NoneOnDryRun" } else { "None" };
        assert_eq!(hook["sideEffects"], effects);
        assert_eq!(hook["timeoutSeconds"], 5);
    }
    let mutating = webhook(&docs, MUTATE);
    assert_eq!(
        mutating["failurePolicy"], "Ignore",
        "the mutation fails open"
    );
    assert_eq!(mutating["reinvocationPolicy"], "IfNeeded");
    for name in [WORKLOADS, POLICIES] {
        assert!(webhook(&docs, name).get("reinvocationPolicy").is_none());
    }

    let docs = render(
        "webhook: {timeoutSeconds: 12, mutating: {failurePolicy: Fail}}",
        NEWER,
    );
    for (_, hook) in all_webhooks(&docs) {
        assert_eq!(hook["timeoutSeconds"], 12);
    }
    assert_eq!(webhook(&docs, MUTATE)["failurePolicy"], "Fail");
}

#[test]
fn validating_failure_policy_follows_the_mode() {
    let cases = [
        ("", "Fail"),
        ("mode: enforce", "Fail"),
        ("mode: audit", "Ignore"),
        ("mode: 'off'", "Ignore"),
        // Something is enforced, so the webhook is a control again.
        ("{mode: audit, rules: {no-host-network: enforce}}", "Fail"),
        // An explicit value always wins.
        (
            "{mode: audit, webhook: {validating: {failurePolicy: Fail}}}",
            "Fail",
        ),
        (
            "{mode: enforce, webhook: {validating: {failurePolicy: Ignore}}}",
            "Ignore",
        ),
    ];
    for (values, expected) in cases {
        let docs = render(values, NEWER);
        for name in [WORKLOADS, POLICIES] {
            assert_eq!(
                webhook(&docs, name)["failurePolicy"],
                expected,
                "{name}, values: {values:?}"
            );
        }
        assert_eq!(
            webhook(&docs, MUTATE)["failurePolicy"],
            "Ignore",
            "values: {values:?}"
        );
    }
}

#[test]
fn webhooks_skip_system_namespaces_and_their_own() {
    for values in [
        "",
        "webhook: {excludeNamespaces: [legacy]}\nnativePolicies: {enabled: false}",
    ] {
        let docs = render(values, NEWER);
        for (_, hook) in all_webhooks(&docs) {
            let skipped = skipped_namespaces(hook);
            for ns in ["kube-system", "kube-public", "kube-node-lease", NAMESPACE] {
                assert!(
                    skipped.contains(&ns),
                    "{} does not skip {ns}: {skipped:?}",
                    hook["name"]
                );
            }
            if !values.is_empty() {
                assert!(skipped.contains(&"legacy"), "{}: {skipped:?}", hook["name"]);
            }
        }
    }
}

/// A stopped meshgate must not keep istiod, the gateways or cert-manager from
/// starting: the exempt (infrastructure) namespaces send nothing but the mesh
/// root namespace's PeerAuthentications and AuthorizationPolicies, which stay
/// guarded. tests/envtest_lockout.rs checks the same against an API server.
#[test]
fn exempt_infrastructure_namespaces_only_send_mesh_wide_policies() {
    let docs = render("", NEWER);
    for name in [WORKLOADS, MUTATE] {
        let skipped = skipped_namespaces(webhook(&docs, name));
        for ns in ["istio-system", "cert-manager"] {
            assert!(skipped.contains(&ns), "{name} sends {ns}: {skipped:?}");
        }
    }
    let skipped = skipped_namespaces(webhook(&docs, POLICIES));
    assert!(!skipped.contains(&"istio-system"), "{skipped:?}");
    assert!(skipped.contains(&"cert-manager"), "{skipped:?}");

    // The root namespace follows meshRootNamespace; exemptNamespaces is the
    // one list for the server and the webhooks.
    let docs = render(
        "{meshRootNamespace: istio-config, exemptNamespaces: [istio-config, istio-gateways]}",
        NEWER,
    );
    for ns in ["istio-config", "istio-gateways"] {
        assert!(skipped_namespaces(webhook(&docs, WORKLOADS)).contains(&ns));
    }
    let skipped = skipped_namespaces(webhook(&docs, POLICIES));
    assert!(
        !skipped.contains(&"istio-config") && skipped.contains(&"istio-gateways"),
        "{skipped:?}"
    );
    assert!(!skipped.contains(&"istio-system"), "{skipped:?}");
}

#[test]
fn match_conditions_only_where_the_api_server_has_them() {
    let own_account = format!("system:serviceaccount:{NAMESPACE}:{FULLNAME}");
    for (kube_version, expected) in [
        ("1.24.0", false),
        ("1.27.9", false),
        ("1.28.0", true),
        (NEWER, true),
    ] {
        let docs = render("", kube_version);
        for (_, hook) in all_webhooks(&docs) {
            let name = hook["name"].as_str().unwrap();
            let conditions = &hook["matchConditions"];
            assert_eq!(!conditions.is_null(), expected, "{name} on {kube_version}");
            if expected {
                let expressions: Vec<&str> = conditions
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["expression"].as_str().unwrap())
                    .collect();
                assert!(
                    expressions.iter().any(|e| e.contains(&own_account)),
                    "{name}: {expressions:?} should skip {own_account}"
                );
                // Only policy DELETEs by the namespace controller are skipped.
                let namespace_controller = expressions
                    .iter()
                    .any(|e| e.contains("namespace-controller") && e.contains("'DELETE'"));
                assert_eq!(
                    namespace_controller,
                    name == POLICIES,
                    "{name}: {expressions:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// RBAC
// ---------------------------------------------------------------------------

#[test]
fn rbac_is_read_only_on_exactly_the_watched_resources() {
    let read_only: BTreeSet<String> = ["get", "list", "watch"].map(String::from).into();
    // The background audit is on by default and reads its kinds too.
    let mut expected: BTreeMap<(String, String), BTreeSet<String>> = drift::posture_resources()
        .into_iter()
        .chain(drift::background_only_resources())
        .map(|pair| (pair, read_only.clone()))
        .collect();
    expected.extend(exemptions::meshgate_grants());

    for kube_version in KUBE_VERSIONS {
        // The report writer's rights are checked in
        // policy_reports_rbac_is_exactly_the_reports_and_the_lease, the
        // events' in events_rbac_is_create_and_patch_on_events_and_a_lease,
        // the native policies' in native_policies_get_their_rights_...
        let docs = render(
            "policyReports: {enabled: false}\nevents: {enabled: false}\nnativePolicies: {enabled: false}\n",
            kube_version,
        );
        for kind in ["Role", "RoleBinding"] {
            assert!(
                !kinds(&docs).contains(kind),
                "no namespaced {kind} expected"
            );
        }
        // The uninstall hook has its own (see the_uninstall_hook_...), the
        // exemption roles bind nobody (tests/chart/exemptions.rs).
        let roles: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] == "ClusterRole" && !is_hook(d))
            .filter(|d| !exemptions::is_exemption_role(d))
            .collect();
        assert_eq!(roles.len(), 1, "one ClusterRole");

        assert_eq!(
            granted(roles[0]),
            expected,
            "ClusterRole must grant get/list/watch on the kinds table's watched and \
             judged kinds and nothing else: edit charts/meshgate/files/resources.yaml"
        );

        let binding = find(&docs, "ClusterRoleBinding", FULLNAME);
        assert_eq!(binding["roleRef"]["name"], FULLNAME);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}])
        );
        assert_eq!(
            deployment(&docs)["spec"]["template"]["spec"]["serviceAccountName"],
            FULLNAME
        );
        find(&docs, "ServiceAccount", FULLNAME);
    }
}

/// What a ClusterRole grants: (API group, resource) → verbs.
fn granted(role: &Value) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(
            rule.get("nonResourceURLs").is_none(),
            "no non-resource URLs: {rule}"
        );
        assert!(
            rule.get("resourceNames").is_none(),
            "no per-name grants: {rule}"
        );
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                granted
                    .entry((group.to_owned(), resource.to_owned()))
                    .or_default()
                    .extend(strings(&rule["verbs"]).into_iter().map(String::from));
            }
        }
    }
    granted
}

#[test]
fn rbac_drops_the_background_kinds_when_the_audit_is_off() {
    let docs = render(
        "backgroundAudit:\n  enabled: false\nnativePolicies: {enabled: false}\n",
        NEWER,
    );
    let role = find(&docs, "ClusterRole", FULLNAME);
    // Events stay: admitted reviews still get them.
    let events = ("events.k8s.io".to_owned(), "events".to_owned());
    let expected: BTreeSet<(String, String)> = drift::posture_resources()
        .into_iter()
        .chain([events])
        .chain(exemptions::meshgate_grants().into_keys())
        .collect();
    assert_eq!(granted(role).into_keys().collect::<BTreeSet<_>>(), expected);
    assert_eq!(rendered_config(&docs)["backgroundAudit"]["enabled"], false);
}

#[test]
fn the_dashboard_configmap_is_off_by_default_and_labelled_for_grafana() {
    let name = format!("{FULLNAME}-dashboard");
    assert!(try_find(&render("", NEWER), "ConfigMap", &name).is_none());
    let docs = render(
        "dashboard:\n  enabled: true\n  labels: {team: mesh}\n",
        NEWER,
    );
    let map = find(&docs, "ConfigMap", &name);
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(map["metadata"]["labels"]["team"], "mesh");
    let dashboard: Value =
        serde_json::from_str(map["data"]["meshgate.json"].as_str().unwrap()).unwrap();
    let committed: Value = serde_json::from_slice(
        &std::fs::read(chart_dir().join("dashboards/meshgate.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dashboard, committed);
    assert!(dashboard["panels"].as_array().unwrap().len() > 10);
}

fn is_hook(doc: &Value) -> bool {
    !doc["metadata"]["annotations"]["helm.sh/hook"].is_null()
}

#[test]
fn the_uninstall_hook_removes_the_webhooks_first_with_minimal_rights() {
    let hook_name = format!("{FULLNAME}-remove-webhooks");
    let docs = render("", NEWER);
    let hooks: Vec<&Value> = docs.iter().filter(|d| is_hook(d)).collect();
    assert_eq!(hooks.len(), 4, "ServiceAccount, ClusterRole, binding, Job");
    for hook in &hooks {
        let annotations = &hook["metadata"]["annotations"];
        // Again after the release's resources are gone: a report written
        // between the two runs goes too.
        assert_eq!(
            annotations["helm.sh/hook"], "pre-delete,post-delete",
            "{hook}"
        );
        assert_eq!(
            annotations["helm.sh/hook-delete-policy"],
            "before-hook-creation,hook-succeeded"
        );
        // The RBAC exists before the Job runs.
        let weight = if hook["kind"] == "Job" { "0" } else { "-1" };
        assert_eq!(annotations["helm.sh/hook-weight"], weight, "{hook}");
    }
    let role = find(&docs, "ClusterRole", &hook_name);
    assert_eq!(
        role["rules"],
        json!([{
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
            "resourceNames": [FULLNAME],
            "verbs": ["get", "delete"],
        }, {
            // The native policies, also deleted by label only.
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings",
                          "mutatingadmissionpolicies", "mutatingadmissionpolicybindings"],
            "verbs": ["list", "delete"],
        }, {
            // The command deletes only meshgate's (by label); RBAC cannot
            // select by label.
            "apiGroups": ["wgpolicyk8s.io"],
            "resources": ["policyreports", "clusterpolicyreports"],
            "verbs": ["list", "delete"],
        }, {
            "apiGroups": ["openreports.io"],
            "resources": ["reports", "clusterreports"],
            "verbs": ["list", "delete"],
        }])
    );
    let binding = find(&docs, "ClusterRoleBinding", &hook_name);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": hook_name, "namespace": NAMESPACE}])
    );
    let job = find(&docs, "Job", &hook_name);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], hook_name.as_str());
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"],
        "false"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["image"], container(&docs)["image"]);
    assert_eq!(
        c["args"],
        json!(["remove-webhooks", "--name", FULLNAME, "--policy-reports"])
    );
    assert_eq!(c["securityContext"], container(&docs)["securityContext"]);
    assert_eq!(
        pod["securityContext"],
        deployment(&docs)["spec"]["template"]["spec"]["securityContext"]
    );

    let docs = render("uninstallHook: {enabled: false}", NEWER);
    assert!(!docs.iter().any(is_hook));
}

#[test]
fn security_contexts_can_be_replaced_for_openshift() {
    // Helm merges values into the defaults; null removes a key.
    let values = r#"
podSecurityContext: {runAsUser: null, runAsGroup: null, fsGroup: null}
securityContext: {runAsUser: null, runAsGroup: null, privileged: null, seccompProfile: null}
"#;
    let docs = render(values, NEWER);
    let job = find(&docs, "Job", &format!("{FULLNAME}-remove-webhooks"));
    for (pod, c) in [
        (
            &deployment(&docs)["spec"]["template"]["spec"],
            container(&docs),
        ),
        (
            &job["spec"]["template"]["spec"],
            &job["spec"]["template"]["spec"]["containers"][0],
        ),
    ] {
        assert_eq!(
            pod["securityContext"],
            json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
        );
        assert_eq!(
            c["securityContext"],
            json!({
                "runAsNonRoot": true, "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            }),
            "no fixed UID left for restricted-v2 to reject"
        );
    }
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

fn tls_volume_secret(docs: &[Value]) -> &str {
    let volumes = deployment(docs)["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let tls = volumes
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("a tls volume");
    tls["secret"]["secretName"].as_str().unwrap()
}

fn pem_der(pem_base64: &str) -> Vec<u8> {
    let pem = String::from_utf8(BASE64.decode(pem_base64).unwrap()).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    BASE64.decode(body).unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn generate_mode_wires_one_ca_into_both_webhooks() {
    for values in ["", GENERATE] {
        let docs = render(values, NEWER);
        let secret = find(&docs, "Secret", &format!("{FULLNAME}-tls"));
        assert_eq!(secret["type"], "kubernetes.io/tls");
        let data = &secret["data"];
        let ca = data["ca.crt"].as_str().unwrap();
        assert!(data["tls.key"].as_str().is_some_and(|k| !k.is_empty()));
        for (kind, hook) in all_webhooks(&docs) {
            let bundle = hook["clientConfig"]["caBundle"].as_str();
            let name = &hook["name"];
            assert!(
                bundle.is_some_and(|b| !b.is_empty()),
                "{name} has a caBundle"
            );
            assert_eq!(bundle, Some(ca), "{name} trusts the CA of the Secret");
            assert!(find(&docs, kind, FULLNAME)["metadata"]["annotations"].is_null());
        }
        pem_der(ca);
        // The DNS names are plain ASCII inside the DER-encoded SAN extension.
        let serving = pem_der(data["tls.crt"].as_str().unwrap());
        for name in [
            FULLNAME.to_owned(),
            format!("{FULLNAME}.{NAMESPACE}"),
            format!("{FULLNAME}.{NAMESPACE}.svc"),
            format!("{FULLNAME}.{NAMESPACE}.svc.cluster.local"),
        ] {
            assert!(
                contains(&serving, &name),
                "serving certificate lacks {name}"
            );
        }
        assert_eq!(tls_volume_secret(&docs), format!("{FULLNAME}-tls"));
        assert!(!kinds(&docs).contains("Certificate"));
    }
}

#[test]
fn cert_manager_mode_injects_the_ca_instead_of_a_bundle() {
    let docs = render(CERT_MANAGER, NEWER);
    let serving_name = format!("{FULLNAME}-serving");
    for (_, hook) in all_webhooks(&docs) {
        assert!(
            hook["clientConfig"].get("caBundle").is_none(),
            "{}: cert-manager fills caBundle, the chart must not",
            hook["name"]
        );
    }
    for kind in [VALIDATING, MUTATING] {
        assert_eq!(
            find(&docs, kind, FULLNAME)["metadata"]["annotations"]
                ["cert-manager.io/inject-ca-from"],
            format!("{NAMESPACE}/{serving_name}")
        );
    }
    let cert = find(&docs, "Certificate", &serving_name);
    assert_eq!(
        strings(&cert["spec"]["dnsNames"]),
        [
            FULLNAME.to_owned(),
            format!("{FULLNAME}.{NAMESPACE}"),
            format!("{FULLNAME}.{NAMESPACE}.svc"),
            format!("{FULLNAME}.{NAMESPACE}.svc.cluster.local"),
        ]
    );
    assert_eq!(cert["spec"]["secretName"], tls_volume_secret(&docs));
    // Without an issuerRef the chart makes its own CA chain.
    assert_eq!(cert["spec"]["issuerRef"]["name"], format!("{FULLNAME}-ca"));
    let ca = find(&docs, "Certificate", &format!("{FULLNAME}-ca"));
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(
        ca["spec"]["issuerRef"]["name"],
        format!("{FULLNAME}-selfsigned")
    );
    find(&docs, "Issuer", &format!("{FULLNAME}-selfsigned"));
    find(&docs, "Issuer", &format!("{FULLNAME}-ca"));
    assert!(
        !kinds(&docs).contains("Secret"),
        "cert-manager owns the Secret"
    );

    // With an issuerRef, the chart uses it and creates no issuer of its own.
    let docs = render(EVERYTHING, NEWER);
    assert_eq!(
        find(&docs, "Certificate", &serving_name)["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
    assert!(!kinds(&docs).contains("Issuer"));
}

#[test]
fn existing_secret_mode_uses_the_given_secret_and_ca() {
    let docs = render(EXISTING_SECRET, NEWER);
    assert_eq!(tls_volume_secret(&docs), "my-webhook-tls");
    for (_, hook) in all_webhooks(&docs) {
        assert_eq!(hook["clientConfig"]["caBundle"], "Y2EtYnVuZGxl");
    }
    let created = kinds(&docs);
    assert!(!created.contains("Secret") && !created.contains("Certificate"));

    // A PEM bundle is accepted as it is and base64-encoded for caBundle.
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
    let values = format!(
        "certificates: {{mode: existingSecret, existingSecret: {{name: t, caBundle: {}}}}}",
        json!(pem)
    );
    let docs = render(&values, NEWER);
    let bundle = webhook(&docs, WORKLOADS)["clientConfig"]["caBundle"]
        .as_str()
        .unwrap();
    assert_eq!(BASE64.decode(bundle).unwrap(), pem.as_bytes());

    let err = render_error("certificates: {mode: existingSecret}");
    assert!(err.contains("/certificates/existingSecret"), "{err}");
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[test]
fn config_map_holds_exactly_the_policy_values() {
    let docs = render("", NEWER);
    assert_eq!(
        rendered_config(&docs),
        json!({
            "mode": "enforce",
            "rules": {},
            "backgroundAudit": {"enabled": true, "interval": "10m"},
            "events": {"enabled": true, "maxPerMinute": 60, "burst": 20},
            "meshRootNamespace": "istio-system",
            "exemptNamespaces": ["kube-system", "kube-public", "kube-node-lease", "istio-system", "cert-manager"],
            "exemptions": [],
            "exemptionObjects": {"maxDuration": "2160h"},
            "trustDomain": "cluster.local",
            "whileSyncing": "deny",
            "workloadCertificates": {"volumeName": "istio-certs", "mountPath": "/etc/istio-certs"},
            "certificates": {"maxDuration": "24h"},
        })
    );
    assert_server_accepts(&docs);

    let values = r#"
mode: audit
rules:
  dedicated-service-account: enforce
  short-lived-certificates: off   # YAML 1.1 reads this as false
meshRootNamespace: istio-config
exemptNamespaces: [kube-system, monitoring]
exemptions:
  - rules: [no-host-network]
    namespace: monitoring
    selector: {matchLabels: {app: node-exporter}}
    names: [node-exporter]
    reason: node exporter needs the host network
  - rules: [sidecar-required, dedicated-service-account]
    namespace: batch
    names: [nightly-*]
    reason: legacy batch jobs, tracked in TICKET-12
exemptionObjects: {maxDuration: 720h}
trustDomain: corp.example
whileSyncing: allow
workloadCertificates: {secretName: workload-tls, mountPath: /var/run/tls}
shortLivedCertificates: {maxDuration: 12h}
backgroundAudit: {enabled: false, interval: 5m}
events: {enabled: false, maxPerMinute: 600, burst: 5}
"#;
    let docs = render(values, NEWER);
    assert_eq!(
        rendered_config(&docs),
        json!({
            "mode": "audit",
            "rules": {"dedicated-service-account": "enforce", "short-lived-certificates": "off"},
            "backgroundAudit": {"enabled": false, "interval": "5m"},
            "events": {"enabled": false, "maxPerMinute": 600, "burst": 5},
            "meshRootNamespace": "istio-config",
            "exemptNamespaces": ["kube-system", "monitoring"],
            "exemptions": [
                {
                    "rules": ["no-host-network"],
                    "namespace": "monitoring",
                    "selector": {"matchLabels": {"app": "node-exporter"}},
                    "names": ["node-exporter"],
                    "reason": "node exporter needs the host network",
                },
                {
                    "rules": ["sidecar-required", "dedicated-service-account"],
                    "namespace": "batch",
                    "names": ["nightly-*"],
                    "reason": "legacy batch jobs, tracked in TICKET-12",
                },
            ],
            "exemptionObjects": {"maxDuration": "720h"},
            "trustDomain": "corp.example",
            "whileSyncing": "allow",
            "workloadCertificates": {"volumeName": "istio-certs", "mountPath": "/var/run/tls", "secretName": "workload-tls"},
            "certificates": {"maxDuration": "12h"},
        })
    );
    assert_server_accepts(&docs);
}

#[test]
fn cluster_domain_and_certificate_issuers_reach_the_config() {
    let values = r#"
clusterDomain: cluster.internal
shortLivedCertificates:
  maxDuration: 12h
  issuerRefs:
    - {name: mesh-ca, kind: ClusterIssuer, group: cert-manager.io}
    - {name: pca, kind: AWSPCAClusterIssuer, group: awspca.cert-manager.io}
"#;
    let docs = render(values, NEWER);
    let config = rendered_config(&docs);
    assert_eq!(config["clusterDomain"], "cluster.internal", "{config}");
    assert_eq!(
        config["certificates"],
        json!({"maxDuration": "12h", "issuerRefs": [
            {"name": "mesh-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            {"name": "pca", "kind": "AWSPCAClusterIssuer", "group": "awspca.cert-manager.io"},
        ]})
    );
    assert_server_accepts(&docs);
    let err = render_error("shortLivedCertificates: {issuerRefs: [{kind: Issuer}]}");
    assert!(err.contains("name"), "{err}");
}

/// The rendered config.yaml is one the server itself starts with.
fn assert_server_accepts(docs: &[Value]) {
    let cm = find(docs, "ConfigMap", &format!("{FULLNAME}-config"));
    let text = cm["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml is a string");
    if let Err(e) = meshgate::config::Config::from_yaml(text) {
        panic!("meshgate rejects the chart's config.yaml: {e}\n{text}");
    }
}

#[test]
fn a_config_change_rolls_the_pods() {
    let checksum = |values: &str| {
        let docs = render(values, NEWER);
        deployment(&docs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .expect("checksum/config annotation")
            .to_owned()
    };
    assert_eq!(checksum(""), checksum(""), "stable for the same values");
    assert_ne!(checksum(""), checksum(AUDIT));
}

#[test]
fn schema_rejects_bad_values_naming_the_field() {
    let cases = [
        (
            "exemptions: [{rules: [no-host-network], namespace: monitoring}]",
            "missing property 'reason'",
        ),
        (
            "exemptions: [{rules: [no-host-network], namespace: monitoring, reason: '  '}]",
            "/exemptions/0/reason",
        ),
        (
            "exemptions: [{rules: [no-host-network], reason: because}]",
            "missing property 'namespace'",
        ),
        (
            "exemptions: [{rules: [no-such-rule], namespace: monitoring, reason: because}]",
            "/exemptions/0/rules/0",
        ),
        ("rules: {no-such-rule: audit}", "'no-such-rule' not allowed"),
        ("rules: {no-host-network: block}", "/rules/no-host-network"),
        ("mode: block", "/mode"),
        ("webhook: {timeoutSeconds: 60}", "/webhook/timeoutSeconds"),
        ("webhook: {timeoutSeconds: 0}", "/webhook/timeoutSeconds"),
        (
            "webhook: {validating: {failurePolicy: Deny}}",
            "/webhook/validating/failurePolicy",
        ),
        ("certificates: {mode: selfSigned}", "/certificates/mode"),
        ("logFormat: xml", "/logFormat"),
        ("modee: audit", "'modee' not allowed"),
    ];
    for (values, expected) in cases {
        let err = render_error(values);
        assert!(
            err.contains(expected),
            "rejecting {values:?} should mention {expected:?}:\n{err}"
        );
    }
}

// ---------------------------------------------------------------------------
// Monitoring
// ---------------------------------------------------------------------------

#[test]
fn monitoring_objects_only_when_enabled() {
    let docs = render("", NEWER);
    let created = kinds(&docs);
    assert!(!created.contains("ServiceMonitor") && !created.contains("PrometheusRule"));

    let docs = render(EVERYTHING, NEWER);
    let monitor = find(&docs, "ServiceMonitor", FULLNAME);
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");

    let rules: BTreeMap<&str, &Value> = find(&docs, "PrometheusRule", FULLNAME)["spec"]["groups"]
        [0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["alert"].as_str().unwrap(), r))
        .collect();
    let expr = |alert: &str| rules[alert]["expr"].as_str().unwrap();
    assert!(expr("MeshgateDenialsRising").contains(r#"decision="denied""#));
    assert!(expr("MeshgateAuditViolations").contains(r#"meshgate_violations_total{"#));
    assert!(expr("MeshgateAuditViolations").contains(r#"mode="audit""#));
    assert!(expr("MeshgateTLSReloadFailing").contains(r#"result="failure""#));
    assert!(expr("MeshgateCacheNotSynced").starts_with("meshgate_cache_synced{"));
    assert!(expr("MeshgateCacheNotSynced").ends_with("== 0"));
    assert_eq!(rules["MeshgateCacheNotSynced"]["for"], "5m");
    assert!(expr("MeshgateWebhookDown").starts_with("absent(up{"));

    // A down webhook is critical when it fails closed, a warning when it fails
    // open (audit mode, nothing enforced).
    for (values, severity) in [
        (EVERYTHING, "critical"),
        (
            "{mode: audit, metrics: {prometheusRule: {enabled: true}}}",
            "warning",
        ),
    ] {
        let docs = render(values, NEWER);
        let down = &find(&docs, "PrometheusRule", FULLNAME)["spec"]["groups"][0]["rules"][0];
        assert_eq!(down["alert"], "MeshgateWebhookDown");
        assert_eq!(down["labels"]["severity"], severity, "values: {values}");
    }
}

// ---------------------------------------------------------------------------
// deploy/
// ---------------------------------------------------------------------------

#[test]
fn plain_manifests_are_rendered_from_the_current_chart() {
    let out = run(Command::new("bash")
        .arg(repo().join("deploy/render.sh"))
        .arg("--stdout"));
    assert!(
        out.status.success(),
        "deploy/render.sh failed:\n{}",
        text(&out.stderr)
    );
    let fresh = text(&out.stdout);
    let committed = std::fs::read_to_string(repo().join("deploy/meshgate.yaml")).unwrap();
    if fresh != committed {
        let (line, (want, got)) = fresh
            .lines()
            .zip(committed.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .unwrap_or((
                fresh.lines().count().min(committed.lines().count()),
                ("<end>", "<end>"),
            ));
        panic!(
            "deploy/meshgate.yaml is stale: run deploy/render.sh and commit the result.\n\
             first difference at line {}:\n  render: {want}\n  file:   {got}",
            line + 1
        );
    }

    let docs: Vec<Value> = split_documents(&committed)
        .iter()
        .map(|d| parse(d))
        .collect();
    assert_eq!(docs[0]["kind"], "Namespace");
    assert_eq!(docs[0]["metadata"]["name"], "meshgate");
    for doc in &docs[1..] {
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            assert_eq!(ns, "meshgate", "{}", doc["metadata"]["name"]);
        }
    }
    assert!(
        !kinds(&docs).contains("Secret"),
        "no private key may be baked into the plain manifests"
    );
    assert!(
        !docs.iter().any(is_hook),
        "kubectl apply would run the uninstall hook at once"
    );
}

// ---------------------------------------------------------------------------
// Documentation shipped with the chart
// ---------------------------------------------------------------------------

#[test]
fn helm_show_readme_prints_the_chart_readme() {
    let out = run(Command::new("helm")
        .args(["show", "readme"])
        .arg(chart_dir()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let readme = text(&out.stdout);
    for expected in [
        "# meshgate",
        "## When meshgate is down",
        "pre-delete hook",
        "podSecurityContext",
    ] {
        assert!(readme.contains(expected), "chart README lacks {expected:?}");
    }
}

#[test]
fn notes_tell_the_replica_count_and_what_is_never_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, "replicaCount: 3").unwrap();
    let out = run(Command::new("helm")
        .args([
            "install",
            RELEASE,
            "--dry-run=client",
            "--namespace",
            NAMESPACE,
        ])
        .arg(chart_dir())
        .arg("--values")
        .arg(&values_file));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let notes = &stdout[stdout.find("NOTES:").expect("NOTES printed")..];
    assert!(
        notes.contains("Wait until the 3 replica(s) are ready"),
        "{notes}"
    );
    assert!(!notes.contains("both replicas"), "{notes}");
    assert!(notes.contains("one line per admission review"), "{notes}");
    assert!(
        notes.contains("never blocks kube-system, kube-public, kube-node-lease, meshgate-test, istio-system, cert-manager"),
        "{notes}"
    );
    assert!(
        notes.contains(&format!("{FULLNAME}-remove-webhooks")),
        "{notes}"
    );
}

#[test]
fn policy_reports_rbac_is_exactly_the_reports_and_the_lease() {
    use meshgate::report::Flavor;
    let write: BTreeSet<String> = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ]
    .map(String::from)
    .into();
    for (values, flavor) in [
        ("", Flavor::Wgpolicy),
        ("policyReports: {api: open-reports}\n", Flavor::OpenReports),
    ] {
        let docs = render(values, NEWER);
        let role = find(&docs, "ClusterRole", FULLNAME);
        let granted = granted(role);
        let reports: BTreeMap<_, _> = granted
            .iter()
            .filter(|(_, verbs)| **verbs == write)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let expected: BTreeMap<_, _> = [false, true]
            .map(|cluster| {
                (
                    (flavor.group().to_owned(), flavor.kind(cluster).1.to_owned()),
                    write.clone(),
                )
            })
            .into();
        assert_eq!(reports, expected, "{values}");

        let lease_role = find(&docs, "Role", &format!("{FULLNAME}-leader"));
        assert_eq!(lease_role["metadata"]["namespace"], NAMESPACE);
        assert_eq!(
            lease_role["rules"],
            json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}])
        );
        let binding = find(&docs, "RoleBinding", &format!("{FULLNAME}-leader"));
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}])
        );
        let env = &deployment(&docs)["spec"]["template"]["spec"]["containers"][0]["env"];
        let value = |name: &str| {
            env.as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .map(|e| e["value"].clone())
        };
        assert_eq!(value("MESHGATE_POLICY_REPORTS"), Some(json!("true")));
        // Only meshgate's own exemption CRDs: the report CRDs are not asked for.
        assert!(docs
            .iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .all(|d| d["spec"]["group"] == "meshgate.io"));
    }

    // Off (and no events or native policies, which elect on a Lease too):
    // no writer rights, no Lease role, and the flag tells serve.
    let docs = render(
        "policyReports: {enabled: false}\nevents: {enabled: false}\nnativePolicies: {enabled: false}\n",
        NEWER,
    );
    assert!(!kinds(&docs).contains("Role"));
    let env = deployment(&docs)["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains(r#"{"name":"MESHGATE_POLICY_REPORTS","value":"false"}"#),
        "{env}"
    );
}

#[test]
fn report_crds_are_installed_only_when_asked_for_the_chosen_api() {
    for (values, names) in [
        (
            "policyReports: {installCRDs: true}\n",
            [
                "clusterpolicyreports.wgpolicyk8s.io",
                "policyreports.wgpolicyk8s.io",
            ],
        ),
        (
            "policyReports: {installCRDs: true, api: open-reports}\n",
            ["clusterreports.openreports.io", "reports.openreports.io"],
        ),
    ] {
        let docs = render(values, NEWER);
        let mut crds: Vec<&str> = docs
            .iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .filter(|d| d["spec"]["group"] != "meshgate.io")
            .inspect(|d| {
                // Other tools' reports live in them: uninstall keeps them.
                assert_eq!(
                    d["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
                    "{}",
                    d["metadata"]["name"]
                )
            })
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        crds.sort();
        assert_eq!(crds, names, "{values}");
    }
}

#[test]
fn events_rbac_is_create_and_patch_on_events_and_a_lease() {
    let events = ("events.k8s.io".to_owned(), "events".to_owned());
    let docs = render("policyReports: {enabled: false}\n", NEWER);
    let role = find(&docs, "ClusterRole", FULLNAME);
    assert_eq!(
        granted(role)[&events],
        ["create", "patch"].map(String::from).into()
    );
    // The background events' election Lease.
    let lease_role = find(&docs, "Role", &format!("{FULLNAME}-leader"));
    assert_eq!(lease_role["rules"][0]["resources"], json!(["leases"]));
    assert_eq!(rendered_config(&docs)["events"]["enabled"], true);

    let docs = render(
        "policyReports: {enabled: false}\nevents: {enabled: false}\nnativePolicies: {enabled: false}\n",
        NEWER,
    );
    let role = find(&docs, "ClusterRole", FULLNAME);
    assert!(!granted(role).contains_key(&events));
    assert!(try_find(&docs, "Role", &format!("{FULLNAME}-leader")).is_none());
    assert_eq!(rendered_config(&docs)["events"]["enabled"], false);

    let err = render_error("events: {maxPerMinute: 0}");
    assert!(err.contains("/events/maxPerMinute"), "{err}");
}

/// `nativePolicies.enabled`: off by default (no rights on admission
/// policies); on, serve is told, may write the four kinds and take its
/// Lease, and the workloads webhook alone can fail open.
#[test]
fn native_policies_get_their_rights_and_the_workloads_webhook_its_failure_policy() {
    let native_rule = |docs: &[Value]| {
        find(docs, "ClusterRole", FULLNAME)["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resources"].to_string().contains("admissionpolicies"))
            .cloned()
    };
    let env = |docs: &[Value]| {
        deployment(docs)["spec"]["template"]["spec"]["containers"][0]["env"].to_string()
    };
    let docs = render("nativePolicies: {enabled: false}", NEWER);
    assert_eq!(native_rule(&docs), None);
    assert!(env(&docs).contains(r#"{"name":"MESHGATE_NATIVE_POLICIES","value":"false"}"#));

    // On by default.
    let values = "policyReports: {enabled: false}\n\
                  events: {enabled: false}\nwebhook: {validating: {workloadsFailurePolicy: Ignore}}\n";
    let docs = render(values, NEWER);
    assert_eq!(
        native_rule(&docs),
        Some(json!({
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings",
                          "mutatingadmissionpolicies", "mutatingadmissionpolicybindings"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"],
        }))
    );
    assert!(env(&docs).contains(r#"{"name":"MESHGATE_NATIVE_POLICIES","value":"true"}"#));
    // The Lease meshgate-native-policies, even with reports and events off.
    assert!(kinds(&docs).contains("Role"));
    assert_eq!(webhook(&docs, WORKLOADS)["failurePolicy"], "Ignore");
    assert_eq!(webhook(&docs, POLICIES)["failurePolicy"], "Fail");

    // The webhook-only selectors are refused with native policies on.
    for knob in [
        "webhook: {excludeNamespaces: [legacy]}",
        "webhook: {objectSelector: {matchLabels: {a: b}}}",
    ] {
        let out = helm_template(knob, NEWER);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{knob}");
        assert!(
            stderr.contains("nativePolicies.enabled does not honour webhook.excludeNamespaces"),
            "{stderr}"
        );
    }
}
