//! The certificate mount of `/mutate` and of the native
//! MutatingAdmissionPolicy, side by side on a real kube-apiserver: every Pod
//! of the fixture corpus (Istio's injector test data, istiod's gateway and
//! waypoint Deployments, the workload fixtures), in every kind of namespace,
//! must be stored the same, or be one the policy leaves to the webhook on
//! purpose.

mod common;
mod envtest;
mod native_common;

use std::time::Duration;

use serde_json::{json, Value};

use common::{eventually, Options, Server};
use native_common::{dry_run, mount_only, MOUNT_ONLY, SYNC_BOUND};

/// Namespaces of every enrolment the proxy model knows.
const DIFF_NAMESPACES: [(&str, &str, &str); 5] = [
    ("shop", "istio-injection", "enabled"),
    ("canary", "istio.io/rev", "canary"),
    ("mesh-ambient", "istio.io/dataplane-mode", "ambient"),
    ("off", "istio-injection", "disabled"),
    ("plain", "team", "shop"),
];

/// Every Pod the fixtures hold or make (a controller's template becomes
/// its Pod), named after the file: Istio's injector inputs and outputs,
/// istiod's gateway and waypoint Deployments, the workload fixtures.
fn corpus() -> Vec<(String, Value)> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut pods = Vec::new();
    for dir in ["workloads", "istio/injector", "istio/gateway-deployments"] {
        let mut files: Vec<_> = std::fs::read_dir(format!("{root}/{dir}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
                let Ok(object) = <Value as serde::Deserialize>::deserialize(doc) else {
                    continue;
                };
                let name = format!("{}#{i}", file.file_name().unwrap().to_string_lossy());
                if let Some(pod) = as_pod(&object) {
                    pods.push((name, pod));
                }
            }
        }
    }
    pods
}

fn as_pod(object: &Value) -> Option<Value> {
    let template = match object["kind"].as_str()? {
        "Pod" => object.clone(),
        "CronJob" => object["spec"]["jobTemplate"]["spec"]["template"].clone(),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            object["spec"]["template"].clone()
        }
        _ => return None,
    };
    let mut metadata = template["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["name"] = json!("diff");
    for field in ["namespace", "creationTimestamp", "generateName"] {
        metadata.as_object_mut().unwrap().remove(field);
    }
    let mut spec = template["spec"].clone();
    // What the ServiceAccount admission plugin (off in envtest) sets: a
    // projected token is refused without it.
    if spec["serviceAccountName"].is_null() {
        spec["serviceAccountName"] = json!("default");
    }
    Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}))
}

/// What the API server stores (spec and annotations), or that it refused.
fn outcome(env: &envtest::Envtest, pod: &Value) -> Outcome {
    dry_run(env, pod)
        .map(|stored| json!({"spec": stored["spec"], "annotations": stored["metadata"]["annotations"]}))
        .map_err(|_| ())
}

/// meshgate's /mutate for pods, reached by URL, as the chart registers it.
fn mutating_webhook(meshgate: &Server) -> Value {
    use base64::Engine;
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "meshgate-diff"},
        "webhooks": [{
            "name": "mutate.meshgate.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 10,
            "clientConfig": {
                "url": meshgate.url("/mutate"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&meshgate.ca_pem),
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "operations": ["CREATE"]}],
        }],
    })
}

/// A pod the native policy leaves to the webhook on purpose: it brings its
/// own Istio annotation before injection (CEL cannot merge into its YAML).
fn left_to_the_webhook(pod: &Value) -> bool {
    let annotations = &pod["metadata"]["annotations"];
    let own = ["proxy.istio.io/config", "sidecar.istio.io/userVolumeMount"]
        .iter()
        .any(|k| {
            annotations[k]
                .as_str()
                .is_some_and(|v| !v.trim().is_empty())
        });
    let proxy = |list: &str| {
        pod["spec"][list]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == "istio-proxy"))
    };
    own && !proxy("containers") && !proxy("initContainers")
}

fn in_namespace(pod: &Value, ns: &str) -> Value {
    let mut pod = pod.clone();
    pod["metadata"]["namespace"] = json!(ns);
    pod
}

/// Every pod of `corpus` in every namespace, through meshgate's `/mutate`
/// only (serve running, its webhook registered by URL).
async fn through_the_webhook(env: &envtest::Envtest, corpus: &[(String, Value)]) -> Vec<Outcome> {
    let meshgate = Server::start(
        Options::default()
            .kubeconfig(env.kubeconfig())
            .config(MOUNT_ONLY),
    );
    eventually("meshgate ready", SYNC_BOUND, || async {
        meshgate.get("/readyz").await.0.is_success().then_some(())
    })
    .await;
    env.kubectl(
        &["apply", "-f", "-"],
        &mutating_webhook(&meshgate).to_string(),
    );
    // The API server takes a moment to call a new webhook.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut answers = Vec::new();
    for (_, pod) in corpus {
        for (ns, _, _) in DIFF_NAMESPACES {
            answers.push(outcome(env, &in_namespace(pod, ns)));
        }
    }
    env.kubectl(
        &["delete", "mutatingwebhookconfiguration", "meshgate-diff"],
        "",
    );
    answers
}

type Outcome = Result<Value, ()>;

#[derive(Default)]
struct Tally {
    same: usize,
    patched: usize,
    refused: usize,
    left: Vec<String>,
    disagreements: Vec<String>,
}

impl Tally {
    fn count(
        &mut self,
        env: &envtest::Envtest,
        what: String,
        pod: &Value,
        webhook: Outcome,
        native: Outcome,
    ) {
        if webhook == native {
            self.same += 1;
            self.refused += usize::from(webhook.is_err());
            self.patched += usize::from(
                webhook.is_ok_and(|p| !p["annotations"]["meshgate.io/cert-mount"].is_null()),
            );
        } else if left_to_the_webhook(pod) && native == outcome_unpatched(env, pod) {
            self.left.push(what);
        } else {
            self.disagreements.push(format!(
                "{what}:\n  webhook {webhook:?}\n  native  {native:?}"
            ));
        }
    }
}

/// The certificate mount of the webhook and of the native policy, pod by
/// pod, in every kind of namespace: the same stored pod, or a listed
/// reason.
#[tokio::test(flavor = "multi_thread")]
async fn the_native_mount_equals_the_webhook_mount_on_the_fixture_corpus() {
    let Some(env) = envtest::start("envtest_native_mount_diff") else {
        return;
    };
    let client = env.client().await;
    envtest::create_namespace(&client, "meshgate", json!({})).await;
    for (name, key, value) in DIFF_NAMESPACES {
        envtest::create_namespace(&client, name, json!({ key: value })).await;
    }
    let corpus = corpus();
    assert!(corpus.len() >= 40, "{} pods", corpus.len());
    let webhook = through_the_webhook(&env, &corpus).await;

    // The native policy's, with meshgate gone.
    let policies = meshgate::native::compile(&mount_only()).unwrap();
    meshgate::native::sync::apply(&client, &policies)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut tally = Tally::default();
    let mut webhook = webhook.into_iter();
    for (name, pod) in &corpus {
        for (ns, _, _) in DIFF_NAMESPACES {
            let pod = in_namespace(pod, ns);
            let native = outcome(&env, &pod);
            tally.count(
                &env,
                format!("{name} in {ns}"),
                &pod,
                webhook.next().unwrap(),
                native,
            );
        }
    }
    eprintln!(
        "differential: {} pods x {} namespaces: {} identical ({} patched, {} refused by the API server), {} left to the webhook {:?}, {} disagreements",
        corpus.len(),
        DIFF_NAMESPACES.len(),
        tally.same,
        tally.patched,
        tally.refused,
        tally.left.len(),
        tally.left,
        tally.disagreements.len()
    );
    assert!(
        tally.disagreements.is_empty(),
        "{}",
        tally.disagreements.join("\n")
    );
    assert!(tally.patched > 0);
}

/// The pod as stored with no mutation at all (the policy removed for it).
fn outcome_unpatched(env: &envtest::Envtest, pod: &Value) -> Outcome {
    let mut elsewhere = pod.clone();
    // meshgate's own namespace is exempt: nothing mutates there.
    elsewhere["metadata"]["namespace"] = json!("meshgate");
    outcome(env, &elsewhere)
}
