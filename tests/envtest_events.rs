//! Kubernetes Events from `meshgate serve` on a real kube-apiserver: the API
//! server calls meshgate's /validate (a `url:` webhook, audit mode), so an
//! admitted Deployment with a finding gets an Event at once; the background
//! audit then finds it newly failing (Warning) and, once fixed, newly
//! passing (Normal).

mod common;
mod envtest;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use common::{eventually, Options, Server};

/// The background audit settles within a second or two; the leader is
/// elected within the 15 s lease. A loaded machine gets room.
const EVENT_BOUND: Duration = Duration::from_secs(60);

/// Only `no-host-network` runs, in audit mode: a finding is admitted.
const CONFIG: &str = "mode: off\nrules: {no-host-network: audit}\n";

fn deployment(host_network: bool) -> Deployment {
    named_deployment("web", host_network)
}

fn named_deployment(name: &str, host_network: bool) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"hostNetwork": host_network, "serviceAccountName": "web",
                         "containers": [{"name": "app", "image": "shop/web:1"}]},
            },
        },
    }))
    .unwrap()
}

/// meshgate's /validate for Deployments in `shop`, as the chart registers
/// it but reached by URL.
fn webhook(meshgate: &Server) -> ValidatingWebhookConfiguration {
    serde_json::from_value(json!({
        "metadata": {"name": "meshgate-events-test"},
        "webhooks": [{
            "name": "workloads.validate.meshgate.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "NoneOnDryRun",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "clientConfig": {
                "url": meshgate.url("/validate"),
                "caBundle": BASE64.encode(&meshgate.ca_pem),
            },
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
            "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                       "resources": ["deployments"], "operations": ["CREATE", "UPDATE"]}],
        }],
    }))
    .unwrap()
}

/// meshgate's Events about shop/web: (type, reason, action, regarding uid, note).
async fn events_on_web(client: &Client) -> Vec<(String, String, String, String, String)> {
    let events = Api::<Event>::namespaced(client.clone(), "shop");
    let list = events.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("meshgate"))
        .filter_map(|e| {
            let regarding = e.regarding?;
            (regarding.kind.as_deref() == Some("Deployment")
                && regarding.name.as_deref() == Some("web"))
            .then(|| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.action.unwrap_or_default(),
                    regarding.uid.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
        })
        .collect()
}

async fn wait_for_event(
    client: &Client,
    what: &str,
    matches: impl Fn(&str, &str, &str) -> bool,
) -> (String, String) {
    eventually(what, EVENT_BOUND, || async {
        events_on_web(client)
            .await
            .into_iter()
            .find(|(t, reason, action, _, _)| matches(t, reason, action))
            .map(|(_, _, _, uid, note)| (uid, note))
    })
    .await
}

/// A control plane with meshgate serving `config` (its /validate
/// registered for Deployments in `shop`), once it holds the events Lease and
/// its background audit has completed a first pass.
async fn setup(test: &str, config: &str) -> Option<(envtest::Envtest, Client, Server)> {
    let env = envtest::start(test)?;
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    envtest::create_namespace(&client, "meshgate", json!({})).await;
    envtest::create_namespace(&client, "shop", json!({"istio-injection": "enabled"})).await;

    let meshgate = Server::start(
        Options::default()
            .kubeconfig(env.kubeconfig())
            .config(config),
    );
    // This replica tells the background audit's transitions once it holds
    // the Lease.
    let leases = Api::<Lease>::namespaced(client.clone(), "meshgate");
    eventually("the events Lease to be held", EVENT_BOUND, || async {
        let lease = leases.get_opt("meshgate-events").await.ok()??;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    })
    .await;
    // What exists when the audit first completes is its baseline: only
    // changes after it are told.
    eventually("the background audit's first pass", EVENT_BOUND, || async {
        let metrics = meshgate.metrics().await;
        (metrics.value("meshgate_background_audit_complete", &[]) == 1.0).then_some(())
    })
    .await;
    let webhooks = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    webhooks
        .create(&PostParams::default(), &webhook(&meshgate))
        .await
        .unwrap();
    Some((env, client, meshgate))
}

/// Creates `deployment` once the webhook answers (the API server may take a
/// moment to use a new configuration).
async fn create(client: &Client, deployment: &Deployment) -> Deployment {
    let deployments = Api::<Deployment>::namespaced(client.clone(), "shop");
    eventually(
        "the webhook to admit the Deployment",
        EVENT_BOUND,
        || async {
            deployments
                .create(&PostParams::default(), deployment)
                .await
                .ok()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_become_events_on_the_object() {
    let Some((_env, client, meshgate)) = setup("envtest_events", CONFIG).await else {
        return;
    };

    // Admitted in audit mode with a finding: an Event on the Deployment,
    // named by the uid the API server stored it under.
    let deployments = Api::<Deployment>::namespaced(client.clone(), "shop");
    let created = create(&client, &deployment(true)).await;
    let uid = created.uid().unwrap();
    let (admitted_uid, note) =
        wait_for_event(&client, "the admission Event", |t, reason, action| {
            t == "Warning" && reason == "PolicyViolation" && action == "Admit"
        })
        .await;
    assert_eq!(admitted_uid, uid);
    assert!(note.contains("no-host-network"), "{note}");

    // The background audit: newly failing.
    let (failing_uid, note) =
        wait_for_event(&client, "the background Warning", |t, reason, action| {
            t == "Warning" && reason == "PolicyViolation" && action == "Audit"
        })
        .await;
    assert_eq!(failing_uid, uid);
    assert!(note.contains("no-host-network (audit)"), "{note}");

    // Fixed: newly passing.
    let fix = json!({"spec": {"template": {"spec": {"hostNetwork": false}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap();
    let (passing_uid, note) =
        wait_for_event(&client, "the background Normal", |t, reason, action| {
            t == "Normal" && reason == "PolicyViolationResolved" && action == "Audit"
        })
        .await;
    assert_eq!(passing_uid, uid);
    assert!(note.contains("was: no-host-network"), "{note}");

    // Transitions only: judged again (a label change re-judges it), no new
    // background Event.
    let relabel = json!({"metadata": {"labels": {"tier": "front"}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let told: Vec<_> = events_on_web(&client)
        .await
        .into_iter()
        .filter(|(_, _, action, _, _)| action == "Audit")
        .collect();
    assert_eq!(told.len(), 2, "{told:?}");

    let metrics = meshgate.metrics().await;
    let emitted = |source: &str, kind: &str| {
        metrics.value(
            "meshgate_events_emitted_total",
            &[("source", source), ("type", kind)],
        )
    };
    assert_eq!(emitted("admission", "Warning"), 1.0);
    assert_eq!(emitted("background", "Warning"), 1.0);
    assert_eq!(emitted("background", "Normal"), 1.0);
    assert_eq!(
        metrics.value("meshgate_events_dropped_total", &[]),
        0.0,
        "{}",
        meshgate.stderr()
    );
}

/// A flood of findings: the token bucket (here 3 at once, then 1 a minute)
/// lets a few Events through, drops the rest and counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_findings_is_rate_limited() {
    let config = format!("{CONFIG}events: {{maxPerMinute: 1, burst: 3}}\n");
    let Some((_env, client, meshgate)) = setup("envtest_events_flood", &config).await else {
        return;
    };
    const FLOOD: usize = 12;
    for i in 0..FLOOD {
        create(&client, &named_deployment(&format!("web-{i}"), true)).await;
    }
    // Every admission and every background transition is either written or
    // dropped as over the limit.
    let metrics = eventually("every Event to be decided", EVENT_BOUND, || async {
        let metrics = meshgate.metrics().await;
        let emitted = metrics.value("meshgate_events_emitted_total", &[]);
        let limited = metrics.value(
            "meshgate_events_dropped_total",
            &[("reason", "rate_limited")],
        );
        (emitted + limited >= (2 * FLOOD) as f64).then_some(metrics)
    })
    .await;
    let emitted = metrics.value("meshgate_events_emitted_total", &[]);
    assert!((3.0..=4.0).contains(&emitted), "emitted {emitted}");
    let stored = Api::<Event>::namespaced(client.clone(), "shop")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("meshgate"))
        .count();
    assert_eq!(stored as f64, emitted);
    assert_eq!(
        metrics.value("meshgate_events_dropped_total", &[("reason", "queue_full")]),
        0.0
    );
}
