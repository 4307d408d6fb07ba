//! Issue 22's outage: with the native policies in the cluster and
//! meshgate's process stopped, the API server itself still mounts the
//! workload certificates (and, once the validating policies are compiled,
//! refuses what the stateless rules refuse).
//!
//! `meshgate serve --native-policies true` writes the policies as the
//! elected replica; the test stops it before creating any pod, so every
//! answer below comes from the API server alone. `remove-webhooks` takes
//! them away again.

mod common;
mod envtest;

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Client;
use serde_json::{json, Value};

use common::{eventually, Options, Server};
use meshgate::config::Config;

/// The election and the first pass take a few seconds; the API server
/// starts enforcing a new policy within about a second more.
const SYNC_BOUND: Duration = Duration::from_secs(60);
const ENROLLED: &str = "shop";

fn native_api(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

async fn native_objects(client: &Client) -> Vec<String> {
    let mut names = Vec::new();
    for (kind, plural) in meshgate::native::sync::KINDS {
        let list = native_api(client, kind, plural)
            .list_metadata(&ListParams::default().labels("meshgate.io/native-policy=true"))
            .await
            .unwrap();
        names.extend(
            list.items
                .into_iter()
                .map(|o| format!("{kind}/{}", o.metadata.name.unwrap())),
        );
    }
    names
}

fn pod(name: &str, spec: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ENROLLED, "annotations": annotations,
                     "labels": {"app": name}},
        "spec": spec,
    })
}

/// An injected pod: the injector's mark, istio-init and istio-proxy.
fn injected(name: &str) -> Value {
    pod(
        name,
        json!({
            "initContainers": [{"name": "istio-init", "image": "proxyv2"}],
            "containers": [
                {"name": "app", "image": "shop:1"},
                {"name": "istio-proxy", "image": "proxyv2", "args": ["proxy", "sidecar"]},
            ],
        }),
        json!({"sidecar.istio.io/status": "{}"}),
    )
}

/// What the API server stores for `object` (`--dry-run=server`), or its
/// refusal.
fn dry_run(env: &envtest::Envtest, object: &Value) -> Result<Value, String> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args([
            "--request-timeout=20s",
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(object.to_string().as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn mounts(pod: &Value, container: usize) -> Vec<(String, String, bool)> {
    pod["spec"]["containers"][container]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["mountPath"].as_str().unwrap().to_owned(),
                m["readOnly"] == true,
            )
        })
        .collect()
}

/// Namespaces: enrolled, not enrolled, enrolled but capped at audit, and
/// meshgate's own (its Lease).
async fn namespaces(client: &Client) {
    envtest::create_namespace(client, "meshgate", json!({})).await;
    envtest::create_namespace(client, ENROLLED, json!({"istio-injection": "enabled"})).await;
    envtest::create_namespace(client, "plain", json!({})).await;
    envtest::create_namespace(
        client,
        "audited",
        json!({"istio-injection": "enabled", "meshgate.io/mode": "audit"}),
    )
    .await;
}

/// serve writes the policies, then stops: they stay.
async fn sync_then_stop(env: &envtest::Envtest, client: &Client) {
    let mut meshgate = Server::start(
        Options::default()
            .kubeconfig(env.kubeconfig())
            .args(&["--native-policies", "true"]),
    );
    let wanted = meshgate::native::compile(&Config::default())
        .unwrap()
        .objects
        .len();
    eventually("serve applies the native policies", SYNC_BOUND, || async {
        (native_objects(client).await.len() == wanted).then_some(())
    })
    .await;
    meshgate.terminate();
    let status = meshgate.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", meshgate.stderr());
    // The API server takes a moment to load a new policy.
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_mounts_the_workload_certificates_while_meshgate_is_down() {
    let Some(env) = envtest::start("envtest_native_outage") else {
        return;
    };
    let client = env.client().await;
    namespaces(&client).await;
    sync_then_stop(&env, &client).await;

    // An injected pod: the volume, a read-only mount in the application
    // only, OUTPUT_CERTS and a writable mount on the proxy, the marker.
    let stored = dry_run(&env, &injected("web")).unwrap();
    let volumes = stored["spec"]["volumes"].as_array().unwrap();
    let ours: Vec<&Value> = volumes
        .iter()
        .filter(|v| v["name"] == "istio-certs")
        .collect();
    assert_eq!(ours.len(), 1, "{volumes:?}");
    assert_eq!(ours[0]["emptyDir"]["medium"], "Memory");
    let path = "/etc/istio-certs".to_owned();
    assert_eq!(
        mounts(&stored, 0),
        vec![("istio-certs".into(), path.clone(), true)]
    );
    assert_eq!(
        mounts(&stored, 1),
        vec![("istio-certs".into(), path.clone(), false)]
    );
    let env_vars = &stored["spec"]["containers"][1]["env"];
    assert_eq!(env_vars, &json!([{"name": "OUTPUT_CERTS", "value": path}]));
    assert_eq!(
        stored["metadata"]["annotations"]["meshgate.io/cert-mount"],
        path
    );
    // The init container is not an application container.
    assert!(stored["spec"]["initContainers"][0]["volumeMounts"].is_null());

    // Idempotent: what it stored goes through unchanged.
    let mut again = stored.clone();
    for field in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "managedFields",
    ] {
        again["metadata"].as_object_mut().unwrap().remove(field);
    }
    let twice = dry_run(&env, &again).unwrap();
    assert_eq!(twice["spec"], stored["spec"]);
    assert_eq!(
        twice["metadata"]["annotations"],
        stored["metadata"]["annotations"]
    );

    // Before injection: Istio's own annotations tell the injector.
    let plain = pod(
        "api",
        json!({"containers": [{"name": "app", "image": "shop:1"}]}),
        json!({}),
    );
    let stored = dry_run(&env, &plain).unwrap();
    let annotations = &stored["metadata"]["annotations"];
    assert_eq!(
        annotations["proxy.istio.io/config"],
        r#"{"proxyMetadata":{"OUTPUT_CERTS":"/etc/istio-certs"}}"#
    );
    assert_eq!(
        annotations["sidecar.istio.io/userVolumeMount"],
        r#"{"istio-certs":{"mountPath":"/etc/istio-certs"}}"#
    );
    assert_eq!(
        mounts(&stored, 0),
        vec![("istio-certs".into(), path.clone(), true)]
    );

    // Not patched: a pod that opts out of injection, one in a namespace
    // outside the mesh, one in a namespace capped at audit, and one whose
    // volume name is taken by something else.
    let opted_out = pod(
        "batch",
        json!({"containers": [{"name": "app", "image": "shop:1"}]}),
        json!({"sidecar.istio.io/inject": "false"}),
    );
    let mut elsewhere = injected("web");
    elsewhere["metadata"]["namespace"] = json!("plain");
    let mut audited = injected("web");
    audited["metadata"]["namespace"] = json!("audited");
    let mut taken = injected("taken");
    taken["spec"]["volumes"] = json!([{"name": "istio-certs", "hostPath": {"path": "/x"}}]);
    for untouched in [opted_out, elsewhere, audited, taken] {
        let stored = dry_run(&env, &untouched).unwrap();
        assert_eq!(mounts(&stored, 0), vec![], "{}", untouched["metadata"]);
        assert!(stored["metadata"]["annotations"]["meshgate.io/cert-mount"].is_null());
    }

    // Uninstall takes them away.
    let out = tokio::task::spawn_blocking({
        let kubeconfig = env.kubeconfig();
        move || {
            common::run_cli_with_input(
                &["remove-webhooks", "--name", "meshgate"],
                &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
                b"",
                Duration::from_secs(60),
            )
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(native_objects(&client).await, Vec::<String>::new());
}

/// The issue's refusals and admissions, from the API server alone. On the
/// branch without the validating policies (i22-sync) this fails: the lead
/// runs it once i22-cel's `native::compile` is merged.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_refuses_what_the_stateless_rules_refuse_while_meshgate_is_down() {
    let Some(env) = envtest::start("envtest_native_outage refusals") else {
        return;
    };
    let client = env.client().await;
    namespaces(&client).await;
    envtest::install_istio_crds(&client).await;
    sync_then_stop(&env, &client).await;

    let app = json!({"containers": [{"name": "app", "image": "shop:1"}]});
    let mut host_network = injected("agent");
    host_network["spec"]["hostNetwork"] = json!(true);
    let excluding = {
        let mut p = injected("excluding");
        p["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"] =
            json!("8080");
        p
    };
    let permissive = json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "loose", "namespace": ENROLLED},
        "spec": {"mtls": {"mode": "PERMISSIVE"}},
    });
    let sidecarless = pod("bare", app, json!({"sidecar.istio.io/inject": "false"}));
    for refused in [sidecarless, host_network, excluding, permissive] {
        let answer = dry_run(&env, &refused);
        assert!(answer.is_err(), "admitted: {}", refused["metadata"]);
        let message = answer.unwrap_err();
        assert!(message.contains("meshgate"), "{message}");
    }

    let waypoint = pod(
        "waypoint",
        json!({"containers": [{"name": "istio-proxy", "image": "proxyv2",
                               "args": ["proxy", "waypoint", "--domain", "shop.svc.cluster.local"]}]}),
        json!({}),
    );
    for admitted in [injected("web"), waypoint] {
        let answer = dry_run(&env, &admitted);
        assert!(answer.is_ok(), "{}: {answer:?}", admitted["metadata"]);
    }
}

// ------------------------------------------------------------ differential

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
fn outcome(env: &envtest::Envtest, pod: &Value) -> Result<Value, ()> {
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

/// The certificate mount of the webhook and of the native policy, pod by
/// pod, in every kind of namespace: the same stored pod, or a listed
/// reason.
#[tokio::test(flavor = "multi_thread")]
async fn the_native_mount_equals_the_webhook_mount_on_the_fixture_corpus() {
    let Some(env) = envtest::start("envtest_native_outage differential") else {
        return;
    };
    let client = env.client().await;
    envtest::create_namespace(&client, "meshgate", json!({})).await;
    for (name, key, value) in DIFF_NAMESPACES {
        envtest::create_namespace(&client, name, json!({ key: value })).await;
    }
    let corpus = corpus();
    assert!(corpus.len() >= 40, "{} pods", corpus.len());
    let in_namespace = |pod: &Value, ns: &str| {
        let mut pod = pod.clone();
        pod["metadata"]["namespace"] = json!(ns);
        pod
    };

    // The webhook's answers.
    let meshgate = Server::start(Options::default().kubeconfig(env.kubeconfig()));
    eventually("meshgate ready", SYNC_BOUND, || async {
        meshgate.get("/readyz").await.0.is_success().then_some(())
    })
    .await;
    env.kubectl(
        &["apply", "-f", "-"],
        &mutating_webhook(&meshgate).to_string(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut webhook = Vec::new();
    for (_, pod) in &corpus {
        for (ns, _, _) in DIFF_NAMESPACES {
            webhook.push(outcome(&env, &in_namespace(pod, ns)));
        }
    }
    env.kubectl(
        &["delete", "mutatingwebhookconfiguration", "meshgate-diff"],
        "",
    );
    drop(meshgate);

    // The native policy's, with meshgate gone.
    let policies =
        meshgate::native::compile(&Config::default().with_own_namespace("meshgate")).unwrap();
    meshgate::native::sync::apply(&client, &policies)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut same, mut patched, mut left, mut refused) = (0, 0, Vec::new(), 0);
    let mut disagreements = Vec::new();
    let mut answers = webhook.into_iter();
    for (name, pod) in &corpus {
        for (ns, _, _) in DIFF_NAMESPACES {
            let pod = in_namespace(pod, ns);
            let (by_webhook, by_native) = (answers.next().unwrap(), outcome(&env, &pod));
            if by_webhook == by_native {
                same += 1;
                refused += usize::from(by_webhook.is_err());
                patched += usize::from(
                    by_webhook
                        .as_ref()
                        .is_ok_and(|p| !p["annotations"]["meshgate.io/cert-mount"].is_null()),
                );
            } else if left_to_the_webhook(&pod) && by_native == outcome_unpatched(&env, &pod) {
                left.push(format!("{name} in {ns}"));
            } else {
                disagreements.push(format!(
                    "{name} in {ns}:\n  webhook {by_webhook:?}\n  native  {by_native:?}"
                ));
            }
        }
    }
    eprintln!(
        "differential: {} pods x {} namespaces: {same} identical ({patched} patched, {refused} refused by the API server), {} left to the webhook {left:?}, {} disagreements",
        corpus.len(),
        DIFF_NAMESPACES.len(),
        left.len(),
        disagreements.len()
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(patched > 0);
}

/// The pod as stored with no mutation at all (the policy removed for it).
fn outcome_unpatched(env: &envtest::Envtest, pod: &Value) -> Result<Value, ()> {
    let mut elsewhere = pod.clone();
    // meshgate's own namespace is exempt: nothing mutates there.
    elsewhere["metadata"]["namespace"] = json!("meshgate");
    outcome(env, &elsewhere)
}
