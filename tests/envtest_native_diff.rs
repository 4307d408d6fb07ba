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

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use kube::Client;
use meshgate::config::Config;
use meshgate::kinds::Kind;
use meshgate::posture::PostureIndex;
use meshgate::rules::{Context, Operation, RuleId};
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

/// The corpus: every object of a kind some native rule reads.
fn corpus() -> Vec<(String, Value)> {
    let mut files = vec![format!("{ROOT}/tests/fixtures/native/corpus.yaml")];
    for dir in [
        "tests/fixtures/workloads",
        "tests/fixtures/istio/gateway-deployments",
        "tests/fixtures/istio/injector",
        "tests/fixtures/admission",
        "examples/manifests",
    ] {
        let mut names: Vec<_> = std::fs::read_dir(format!("{ROOT}/{dir}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && !p.ends_with("README.md"))
            .collect();
        names.sort();
        files.extend(names.iter().map(|p| p.display().to_string()));
    }
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let Ok(manifests) = meshgate::manifest::parse_text(&file, &text) else {
            continue;
        };
        for (i, m) in manifests.into_iter().enumerate() {
            // Captured AdmissionReviews carry the object in the request.
            let value = match m.value.pointer("/request/object") {
                Some(o) if m.kind == "AdmissionReview" => o.clone(),
                _ => m.value,
            };
            if judged_kind(&value).is_some() {
                out.push((format!("{}#{i}", file.trim_start_matches(ROOT)), value));
            }
        }
    }
    out
}

fn judged_kind(value: &Value) -> Option<Kind> {
    let kind = Kind::from_api_version(value["apiVersion"].as_str()?, value["kind"].as_str()?)?;
    let targets = [
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::Sidecar,
    ];
    (kind.row().pod_spec.is_some() || targets.contains(&kind)).then_some(kind)
}

/// The object as it would be created in `ns`: server-set fields dropped.
fn placed(value: &Value, ns: &str) -> Value {
    let mut v = value.clone();
    let meta = v["metadata"].as_object_mut().unwrap();
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
        "ownerReferences",
        "generation",
    ] {
        meta.remove(field);
    }
    // Istio's injector test data names some Deployments in camel case,
    // which the API server refuses before admission.
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("generated");
    let name = if name.is_empty() {
        "generated".to_owned()
    } else {
        name.to_ascii_lowercase()
    };
    meta.insert("name".into(), json!(name));
    meta.remove("generateName");
    meta.insert("namespace".into(), json!(ns));
    v.as_object_mut().unwrap().remove("status");
    v
}

/// A dry-run create: the HTTP status, the returned object and the
/// warnings.
async fn dry_run(
    client: &Client,
    kind: Kind,
    value: &Value,
    ns: &str,
) -> (u16, Value, Vec<String>) {
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
        posture.apply_namespace(
            &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap(),
        );
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
    let (mut judged, mut refused, mut findings) = (0, 0, 0);
    let mut covered = BTreeSet::new();
    let mut disagreements = Vec::new();
    for (origin, value) in &corpus {
        let kind = judged_kind(value).unwrap();
        for (ns, _) in namespaces() {
            let (status, body, warnings) = dry_run(&client, kind, &placed(value, ns), ns).await;
            if status >= 300 {
                // Invalid for the API server itself (schema, immutable
                // fields): no admission policy ever sees it.
                refused += 1;
                if std::env::var_os("NATIVE_DIFF_VERBOSE").is_some() {
                    eprintln!("refused {origin} in {ns}: {status} {}", body["message"]);
                }
                continue;
            }
            // A CEL error is a warning too, naming no rule: never a pass.
            for w in &warnings {
                if named_rules(std::slice::from_ref(w)).is_empty() {
                    disagreements.push(format!("{origin} in {ns}: warning from no rule: {w}"));
                }
            }
            judged += 1;
            let native = named_rules(&warnings);
            let rust = judged_rules(kind, &body, ns, &posture, &config);
            findings += rust.len();
            covered.extend(rust.iter().copied());
            if native != rust {
                disagreements.push(format!(
                    "{origin} in {ns}: native {native:?}, webhook {rust:?}; {warnings:?}"
                ));
            }
        }
    }
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

/// The default (enforce) policies with the webhook stopped — never
/// installed: what the outage table promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_native_policies_refuse_alone_and_honour_modes_and_exemptions() {
    let Some(env) = envtest::start("enforced_native_policies") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    for (name, labels) in [
        ("n-sidecar", json!({"istio-injection": "enabled"})),
        ("n-bare", json!({})),
        (
            "n-audit",
            json!({"istio-injection": "enabled", "meshgate.io/mode": "audit"}),
        ),
        ("kube-system-like", json!({})),
    ] {
        envtest::create_namespace(&client, name, labels).await;
    }
    let config = Config::from_yaml(
        "exemptNamespaces: [kube-system-like]\n\
         exemptions:\n- {namespace: n-sidecar, names: [node-agent*], rules: [no-host-network], reason: node agent}\n",
    )
    .unwrap();
    install(&env, &config).await;
    wait_for(&client, |status, _| status == 403 || status == 422).await;

    let plain = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "app"}]}})
    };
    let mut host = plain("host");
    host["spec"]["hostNetwork"] = json!(true);
    host["metadata"]["annotations"] = json!({"sidecar.istio.io/status": "{}"});
    host["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "istio-proxy", "image": "proxyv2"}));
    let mut injected = plain("injected");
    injected["metadata"]["annotations"] = json!({"sidecar.istio.io/status": "{}"});
    injected["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "istio-proxy", "image": "proxyv2"}));
    let permissive = json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default"}, "spec": {"mtls": {"mode": "PERMISSIVE"}}});
    let waypoint: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!(
            "{ROOT}/tests/fixtures/workloads/waypoint-deployment.yaml"
        ))
        .unwrap(),
    )
    .unwrap();

    let refused = |(status, body, _): &(u16, Value, Vec<String>), rule: &str| {
        assert!(*status == 403 || *status == 422, "{status} {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("[{rule}]")) && message.contains("fix: "),
            "{message}"
        );
    };
    let admitted = |(status, body, warnings): &(u16, Value, Vec<String>)| {
        assert!(*status < 300, "{status} {body}");
        warnings.clone()
    };
    refused(
        &dry_run(&client, Kind::Pod, &plain("no-sidecar"), "n-sidecar").await,
        "sidecar-required",
    );
    refused(
        &dry_run(&client, Kind::Pod, &host, "n-sidecar").await,
        "no-host-network",
    );
    refused(
        &dry_run(&client, Kind::PeerAuthentication, &permissive, "n-sidecar").await,
        "peer-authentication-strict",
    );
    assert!(admitted(&dry_run(&client, Kind::Pod, &injected, "n-sidecar").await).is_empty());
    let mut waypoint_here = waypoint.clone();
    waypoint_here["metadata"]["namespace"] = json!("n-bare");
    assert!(
        admitted(&dry_run(&client, Kind::Deployment, &waypoint_here, "n-bare").await).is_empty()
    );
    // The namespace label lowers enforce to audit: a warning naming the rule.
    let warned = admitted(&dry_run(&client, Kind::Pod, &plain("no-sidecar"), "n-audit").await);
    assert_eq!(
        named_rules(&warned),
        BTreeSet::from([RuleId::SidecarRequired]),
        "{warned:?}"
    );
    // Exempt namespaces and config exemptions: nothing said.
    assert!(admitted(&dry_run(&client, Kind::Pod, &host, "kube-system-like").await).is_empty());
    let mut agent = host.clone();
    agent["metadata"]["name"] = json!("node-agent-1");
    assert!(admitted(&dry_run(&client, Kind::Pod, &agent, "n-sidecar").await).is_empty());
    // The exemption lifts only its rule: elsewhere the same pod is refused.
    refused(
        &dry_run(&client, Kind::Pod, &agent, "n-bare").await,
        "no-host-network",
    );
}
