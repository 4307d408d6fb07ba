//! The native policies against the webhook's rules, on a real API server
//! (envtest) with only the compiled ValidatingAdmissionPolicies installed:
//! every object of the corpus (the rules' unit-test shapes, the captured
//! admission fixtures, Istio's injector test data, istiod's gateway and
//! waypoint Deployments, the example manifests) is created with
//! `dryRun=All` in namespaces of every enrolment kind, and the rule ids the
//! API server names must be exactly those `policy::judge` finds among the
//! rules with a native form.
//!
//! The policies are compiled at audit level, so every failing check comes
//! back as a warning (a Deny stops at the first policy) and the API server
//! returns the object as a webhook would receive it (defaults applied),
//! which is what the Rust rules judge.

mod envtest;
mod native_corpus;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use meshgate::config::Config;
use meshgate::kinds::Kind;
use meshgate::posture::PostureIndex;
use meshgate::rules::{Context, Operation, RuleId};
use native_corpus::{corpus, judged_kind, placed};
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Namespaces of every enrolment kind the injector model distinguishes.
fn namespaces() -> Vec<(&'static str, Value)> {
    vec![
        ("n-sidecar", json!({"istio-injection": "enabled"})),
        ("n-rev", json!({"istio.io/rev": "canary"})),
        ("n-ambient", json!({"istio.io/dataplane-mode": "ambient"})),
        ("n-disabled", json!({"istio-injection": "disabled"})),
        ("n-unrecognised", json!({"istio-injection": "yes"})),
        ("n-bare", json!({})),
    ]
}

fn native_rules() -> Vec<RuleId> {
    RuleId::ALL
        .iter()
        .copied()
        .filter(|r| r.row().native.is_some())
        .collect()
}

/// A dry-run create's HTTP status, returned object (or Status) and warnings.
type Answer = (u16, Value, Vec<String>);

/// A dry-run create.
async fn dry_run(client: &Client, kind: Kind, value: &Value, ns: &str) -> Answer {
    let row = kind.row();
    let api_version = value["apiVersion"].as_str().unwrap();
    let prefix = if row.group.is_empty() {
        "/api".to_owned()
    } else {
        "/apis".to_owned()
    };
    let url = format!(
        "{prefix}/{api_version}/namespaces/{ns}/{}?dryRun=All",
        row.plural
    );
    let request = axum::http::Request::post(url)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(value).unwrap()))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        warnings,
    )
}

fn named_rules(warnings: &[String]) -> BTreeSet<RuleId> {
    native_rules()
        .into_iter()
        .filter(|r| warnings.iter().any(|w| w.contains(&format!("[{r}]"))))
        .collect()
}

fn judged_rules(
    kind: Kind,
    object: &Value,
    ns: &str,
    posture: &PostureIndex,
    config: &Config,
) -> BTreeSet<RuleId> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let subject = meshgate::subject::decode(kind, object.clone(), ns, name).unwrap();
    let ctx = Context {
        posture,
        config,
        operation: Operation::Create,
        now: k8s_openapi::jiff::Timestamp::now(),
    };
    meshgate::policy::judge(&subject, &ctx)
        .findings
        .into_iter()
        .map(|j| j.finding.rule)
        .filter(|r| r.row().native.is_some())
        .collect()
}

async fn install(env: &envtest::Envtest, config: &Config) {
    let yaml = meshgate::native::print(
        &meshgate::native::compile(config).unwrap(),
        meshgate::cli::PoliciesOutput::Yaml,
    )
    .unwrap();
    env.kubectl(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &yaml,
    );
}

/// Policies take effect a moment after they are created: waits until a
/// probe breaking every workload rule is named for each of them.
async fn wait_for(client: &Client, expect: impl Fn(u16, &BTreeSet<RuleId>) -> bool) {
    let probe = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {"hostNetwork": true, "containers": [{"name": "app", "image": "app"}]}});
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body, warnings) = dry_run(client, Kind::Pod, &probe, "n-bare").await;
        let mut named = named_rules(&warnings);
        named.extend(named_rules(&[body.to_string()]));
        if expect(status, &named) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "policies not in force: {status} {named:?} {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the corpus run counts.
#[derive(Default)]
struct Tally {
    judged: usize,
    refused: usize,
    findings: usize,
    covered: BTreeSet<RuleId>,
    disagreements: Vec<String>,
}

impl Tally {
    /// One dry-run answer against `policy::judge` on the returned object.
    fn compare(
        &mut self,
        at: String,
        answer: Answer,
        rust: impl FnOnce(&Value) -> BTreeSet<RuleId>,
    ) {
        let (status, body, warnings) = answer;
        if status >= 300 {
            // Invalid for the API server itself (schema, immutable fields):
            // no admission policy ever sees it.
            self.refused += 1;
            if std::env::var_os("NATIVE_DIFF_VERBOSE").is_some() {
                eprintln!("refused {at}: {status} {}", body["message"]);
            }
            return;
        }
        // A CEL error is a warning too, naming no rule: never a pass.
        for w in &warnings {
            if named_rules(std::slice::from_ref(w)).is_empty() {
                self.disagreements
                    .push(format!("{at}: warning from no rule: {w}"));
            }
        }
        self.judged += 1;
        let native = named_rules(&warnings);
        let rust = rust(&body);
        self.findings += rust.len();
        self.covered.extend(rust.iter().copied());
        if native != rust {
            self.disagreements.push(format!(
                "{at}: native {native:?}, webhook {rust:?}; {warnings:?}"
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_policies_agree_with_the_webhook_rules_on_the_whole_corpus() {
    let Some(env) = envtest::start("native_policies_agree_with_the_webhook_rules") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    let mut posture = PostureIndex::default();
    for (name, labels) in namespaces() {
        envtest::create_namespace(&client, name, labels.clone()).await;
        let ns = json!({"metadata": {"name": name, "labels": labels}});
        posture.apply_namespace(&serde_json::from_value(ns).unwrap());
    }
    let config = Config::from_yaml("mode: audit").unwrap();
    install(&env, &config).await;
    let workload_rules = [
        RuleId::SidecarRequired,
        RuleId::NoHostNetwork,
        RuleId::DedicatedServiceAccount,
    ];
    wait_for(&client, |_, named| {
        workload_rules.iter().all(|r| named.contains(r))
    })
    .await;

    let corpus = corpus();
    let mut tally = Tally::default();
    for (origin, value) in &corpus {
        let kind = judged_kind(value).unwrap();
        for (ns, _) in namespaces() {
            let answer = dry_run(&client, kind, &placed(value, ns), ns).await;
            tally.compare(format!("{origin} in {ns}"), answer, |body| {
                judged_rules(kind, body, ns, &posture, &config)
            });
        }
    }
    let Tally {
        judged,
        refused,
        findings,
        covered,
        disagreements,
    } = tally;
    eprintln!(
        "native differential: {} objects x {} namespaces: {judged} judged ({refused} refused by the API server's own validation), {findings} findings, rules covered {}/{} {covered:?}, disagreements {}",
        corpus.len(),
        namespaces().len(),
        covered.len(),
        native_rules().len(),
        disagreements.len()
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(judged > 200, "{judged}");
    assert_eq!(covered.len(), native_rules().len(), "{covered:?}");
}

async fn updates_refuse_only_new_problems(deployments: &Api<Deployment>) {
    let label = Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}}));
    deployments
        .patch("legacy", &PatchParams::default(), &label)
        .await
        .unwrap();
    let host = Patch::Merge(json!({"spec": {"template": {"spec": {"hostNetwork": true}}}}));
    let e = deployments
        .patch("clean", &PatchParams::default(), &host)
        .await
        .unwrap_err();
    // Two rules break; the API server names the first policy that denies.
    let e = e.to_string();
    assert!(
        e.contains("[no-host-network]") || e.contains("[sidecar-required]"),
        "{e}"
    );
}

fn pod(name: &str, injected: bool, host_network: bool) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"serviceAccountName": "web", "hostNetwork": host_network,
                 "containers": [{"name": "app", "image": "app"}]}});
    if injected {
        pod["metadata"]["annotations"] = json!({"sidecar.istio.io/status": "{}"});
        let proxy = json!({"name": "istio-proxy", "image": "proxyv2"});
        pod["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(proxy);
    }
    pod
}

fn refused((status, body, _): &Answer, rule: &str) {
    assert!(*status == 403 || *status == 422, "{status} {body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("[{rule}]")) && message.contains("fix: "),
        "{message}"
    );
}

fn admitted_silently((status, body, warnings): &Answer) {
    assert!(
        *status < 300 && warnings.is_empty(),
        "{status} {warnings:?} {body}"
    );
}

/// The default (enforce) policies with no webhook at all: what the outage
/// table promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_native_policies_refuse_alone_and_honour_modes_and_exemptions() {
    let Some(env) = envtest::start("enforced_native_policies") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    let enrolled = json!({"istio-injection": "enabled"});
    let audit = json!({"istio-injection": "enabled", "meshgate.io/mode": "audit"});
    for (name, labels) in [
        ("n-sidecar", enrolled),
        ("n-bare", json!({})),
        ("n-audit", audit),
        ("tools", json!({})),
    ] {
        envtest::create_namespace(&client, name, labels).await;
    }
    // Written before the policies: an UPDATE keeps what was there.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "n-sidecar");
    for (name, host_network) in [("legacy", true), ("clean", false)] {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
            "spec": {"serviceAccountName": "web", "hostNetwork": host_network, "containers": [{"name": "app", "image": "app"}]}}}});
        deployments
            .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
            .await
            .unwrap();
    }
    let config = Config::from_yaml(
        "exemptNamespaces: [tools]\n\
         exemptions:\n- {namespace: n-sidecar, names: [node-agent*], rules: [no-host-network], reason: node agent}\n",
    )
    .unwrap();
    install(&env, &config).await;
    wait_for(&client, |status, _| status == 403 || status == 422).await;

    let permissive = json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default"}, "spec": {"mtls": {"mode": "PERMISSIVE"}}});
    let waypoint = std::fs::read_to_string(format!(
        "{ROOT}/tests/fixtures/workloads/waypoint-deployment.yaml"
    ))
    .unwrap();
    let mut waypoint: Value = serde_yaml_ng::from_str(&waypoint).unwrap();
    waypoint["metadata"]["namespace"] = json!("n-bare");
    let pod_in = |ns: &'static str, pod: Value| {
        let client = client.clone();
        async move { dry_run(&client, Kind::Pod, &pod, ns).await }
    };
    refused(
        &pod_in("n-sidecar", pod("no-sidecar", false, false)).await,
        "sidecar-required",
    );
    refused(
        &pod_in("n-sidecar", pod("host", true, true)).await,
        "no-host-network",
    );
    refused(
        &dry_run(&client, Kind::PeerAuthentication, &permissive, "n-sidecar").await,
        "peer-authentication-strict",
    );
    admitted_silently(&pod_in("n-sidecar", pod("injected", true, false)).await);
    // no-interception-bypass is webhook-only (docs/src/concepts/
    // native-policies.md): with meshgate down, an exclusion gets through.
    let mut bypass = pod("bypass", true, false);
    bypass["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"] =
        json!("8080");
    admitted_silently(&pod_in("n-sidecar", bypass).await);
    admitted_silently(&dry_run(&client, Kind::Deployment, &waypoint, "n-bare").await);
    // The namespace label lowers enforce to audit: a warning naming the rule.
    let (status, _, warned) = pod_in("n-audit", pod("no-sidecar", false, false)).await;
    assert_eq!(
        (status, named_rules(&warned)),
        (201, BTreeSet::from([RuleId::SidecarRequired])),
        "{warned:?}"
    );
    // Exempt namespaces and config exemptions: nothing said.
    admitted_silently(&pod_in("tools", pod("host", false, true)).await);
    admitted_silently(&pod_in("n-sidecar", pod("node-agent-1", true, true)).await);
    updates_refuse_only_new_problems(&deployments).await;
    // The exemption lifts only its namespace: elsewhere the same pod is refused.
    refused(
        &pod_in("n-bare", pod("node-agent-1", true, true)).await,
        "no-host-network",
    );
}
