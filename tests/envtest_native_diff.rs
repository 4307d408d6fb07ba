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

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::Client;
use meshgate::config::Config;
use meshgate::kinds::Kind;
use meshgate::posture::PostureIndex;
use meshgate::rules::RuleId;
use native_corpus::verdicts::{dry_run, named_rules, namespaces, native_rules, Answer, Tally};
use native_corpus::{corpus, judged_kind};
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

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

/// Waits until the Certificate policy compiled for the second config
/// (`mesh-ca` issues workload certificates) is in force, or for the first.
async fn wait_for_certificates(client: &Client, second: bool) {
    let probe = json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": "probe"},
        "spec": {"secretName": "probe", "duration": "8760h", "issuerRef": {"name": "mesh-ca", "kind": "ClusterIssuer"},
                 "uris": [if second { "spiffe://elsewhere/" } else { "spiffe://cluster.local/probe" }]}});
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, warnings) = dry_run(client, Kind::Certificate, &probe, "n-bare").await;
        // Both policies: the duration (enforced) and the renewBefore advice.
        let named = warnings
            .iter()
            .filter(|w| w.contains("[short-lived-certificates]"))
            .count();
        if named == 2 {
            return;
        }
        assert!(Instant::now() < deadline, "certificate policy not in force");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The Certificates again with the configured issuers, the mounted Secret
/// and the maximum changed: the config values compiled into the CEL.
async fn certificates_under_another_config(
    env: &envtest::Envtest,
    client: &Client,
    posture: &PostureIndex,
) -> Tally {
    let config = Config::from_yaml(concat!(
        "mode: audit\n",
        "workloadCertificates: {secretName: app-mtls}\n",
        "certificates: {maxDuration: 2160h, issuerRefs: [{name: mesh-ca, kind: ClusterIssuer}]}\n",
    ))
    .unwrap();
    install(env, &config).await;
    wait_for_certificates(client, true).await;
    let certificates: Vec<_> = corpus()
        .into_iter()
        .filter(|(_, v)| judged_kind(v) == Some(Kind::Certificate))
        .collect();
    let mut tally = Tally::default();
    tally.run(client, &certificates, posture, &config).await;
    tally
}

/// The CRDs of the kinds the native policies judge: Istio's and
/// cert-manager's Certificate.
async fn install_served_crds(client: &kube::Client) {
    envtest::install_istio_crds(client).await;
    envtest::install_crds(
        client,
        &format!("{ROOT}/tests/fixtures/cert-manager-crds.yaml"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_policies_agree_with_the_webhook_rules_on_the_whole_corpus() {
    let Some(env) = envtest::start("native_policies_agree_with_the_webhook_rules") else {
        return;
    };
    let client = env.client().await;
    install_served_crds(&client).await;
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

    wait_for_certificates(&client, false).await;

    let corpus = corpus();
    let mut tally = Tally::default();
    tally.run(&client, &corpus, &posture, &config).await;
    let certificates_pass = certificates_under_another_config(&env, &client, &posture).await;
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
    let pass = certificates_pass;
    eprintln!(
        "native differential, Certificates under a second config (issuerRefs, mounted Secret, 2160h maximum): {} judged, {} findings, disagreements {}",
        pass.judged,
        pass.findings,
        pass.disagreements.len()
    );
    assert!(
        pass.disagreements.is_empty(),
        "{}",
        pass.disagreements.join("\n")
    );
    assert!(pass.findings > 0 && pass.judged > 100, "{}", pass.judged);
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
    install_served_crds(&client).await;
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
    let certificates = certificates_api(&client);
    certificates
        .create(
            &PostParams::default(),
            &serde_json::from_value(year_long()).unwrap(),
        )
        .await
        .unwrap();
    let config = Config::from_yaml(
        "exemptNamespaces: [tools]\n\
         exemptions:\n- {namespace: n-sidecar, names: [node-agent*], rules: [no-host-network], reason: node agent}\n",
    )
    .unwrap();
    install(&env, &config).await;
    wait_for(&client, |status, _| status == 403 || status == 422).await;
    wait_for_refused_certificate(&client).await;

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
    // A pod excluding ports from interception.
    let mut bypass = pod("bypass", true, false);
    bypass["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"] =
        json!("8080");
    refused(&pod_in("n-sidecar", bypass).await, "no-interception-bypass");
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
    // A year-long workload certificate, with the configuration compiled in.
    let cert = |duration: &str| {
        json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "web"},
            "spec": {"secretName": "web-tls", "duration": duration, "renewBefore": "8h",
                     "issuerRef": {"name": "istio-ca", "kind": "ClusterIssuer"}}})
    };
    let long = dry_run(&client, Kind::Certificate, &cert("8760h"), "n-sidecar").await;
    refused(&long, "short-lived-certificates");
    admitted_silently(&dry_run(&client, Kind::Certificate, &cert("24h0m0s"), "n-sidecar").await);
    certificate_updates_refuse_only_new_findings(&certificates).await;
}

/// The API server loads each policy on its own: the pods' being in force
/// says nothing of the Certificates'.
async fn wait_for_refused_certificate(client: &Client) {
    let mut probe = year_long();
    probe["metadata"]["name"] = json!("probe");
    let deadline = Instant::now() + Duration::from_secs(60);
    while dry_run(client, Kind::Certificate, &probe, "n-bare").await.0 < 300 {
        assert!(Instant::now() < deadline, "certificate policy not in force");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn certificates_api(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "certificates");
    Api::namespaced_with(client.clone(), "n-sidecar", &resource)
}

/// Written before the policies.
fn year_long() -> Value {
    json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "legacy"},
        "spec": {"secretName": "legacy-tls", "duration": "8760h", "renewBefore": "1h",
                 "issuerRef": {"name": "istio-ca", "kind": "ClusterIssuer"}}})
}

/// As in the webhook, a finding is pre-existing only with the same
/// message: relabelling the year-long certificate is fine, shortening it
/// to a half-year is still refused.
async fn certificate_updates_refuse_only_new_findings(certificates: &Api<DynamicObject>) {
    let label = Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}}));
    certificates
        .patch("legacy", &PatchParams::default(), &label)
        .await
        .unwrap();
    let shorter = Patch::Merge(json!({"spec": {"duration": "4380h"}}));
    let e = certificates
        .patch("legacy", &PatchParams::default(), &shorter)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[short-lived-certificates] is valid for 4380h"),
        "{e}"
    );
}
